"""The polling loop and one input's way through it: candidates, claim, run, publish or fail."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ... import storage
from ...errors import StorageFailure, UsageError
from ...media.containers import VIDEO_EXTENSIONS
from ...storage.tempdirs import reaped_temp_dir, remove as remove_temp_dir
from .jobs import build_job_argv, check_run_args, run_child, run_in_process
from .records import CONTROL, FAILED, LEASE_SECONDS, ROLE_KEY, Claim, Ledger, etag_key, now, safe_relative_name, say

#: Output containers kept as-is; other inputs produce .mp4 outputs.
OUTPUT_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".webm"})


@dataclass
class WatchConfig:
    source: storage.BlobLocation
    dest: storage.BlobLocation
    model: str
    launcher: str | None = None
    run_args: list[str] = field(default_factory=list)
    poll: float = 30.0
    attempts: int = 3
    once: bool = False
    in_process: bool = False
    work_dir: Path | None = None
    lease_seconds: int = LEASE_SECONDS
    job_timeout: float | None = None


class Watcher:
    """One watcher process. ``run()`` returns the exit status."""

    def __init__(self, config: WatchConfig):
        self.cfg = config
        self.source = config.source.as_prefix()
        self.dest = config.dest.as_prefix()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.ledger = Ledger(self.source, self.id)
        self.stop_event = threading.Event()
        self.failures = 0
        self._model_path: str | None = None
        self._warned: set[str] = set()
        self._check_layout()
        self._own_work_dir = config.work_dir is None
        # A watcher killed mid-job leaves no downloaded input behind in its own temp dir.
        self.work_dir = Path(config.work_dir or reaped_temp_dir("stylempi-watch-")).resolve()

    # ------------------------------------------------------------------ layout
    def _same_container(self) -> bool:
        return (self.source.account_url, self.source.container) == (self.dest.account_url, self.dest.container)

    def _check_layout(self) -> None:
        if self.cfg.attempts < 1:
            raise UsageError("--attempts must be at least 1")
        if self.cfg.poll <= 0:
            raise UsageError("--poll must be positive")
        if self._same_container() and self.source.blob.startswith(self.dest.blob):
            raise UsageError(f"--output {self.dest} contains SOURCE {self.source}: outputs would "
                             "overwrite inputs; pick a DEST prefix that is not above SOURCE")
        if self.cfg.run_args:
            check_run_args(self.cfg.model, self.cfg.run_args)

    def rel(self, name: str) -> str:
        return name[len(self.source.blob):]

    def control(self, kind: str, rel: str) -> storage.BlobLocation:
        return self.ledger.control(kind, rel)

    def output_location(self, rel: str) -> storage.BlobLocation:
        safe = safe_relative_name(rel)
        stem, ext = os.path.splitext(safe)
        if ext.lower() not in OUTPUT_EXTENSIONS:
            safe = stem + ".mp4"
        return self.dest.child(safe)

    def is_candidate(self, info: storage.BlobInfo) -> bool:
        if not info.name.startswith(self.source.blob):
            return False
        rel = self.rel(info.name)
        if rel.startswith((CONTROL, FAILED)):
            return False
        if self._same_container() and self.dest.blob and info.name.startswith(self.dest.blob):
            return False
        if info.metadata.get(ROLE_KEY):
            return False
        if os.path.splitext(rel)[1].lower() not in VIDEO_EXTENSIONS:
            return False
        if safe_relative_name(rel) != rel:
            # '.' or '..' segments, backslashes, empty segments: such a name cannot be
            # addressed reliably by URL and is never turned into a path. Ignore it.
            if info.name not in self._warned:
                self._warned.add(info.name)
                say(f"ignoring blob with an unsafe name {info.name!r}: rename it")
            return False
        return True

    # ------------------------------------------------------------------ one pass
    def pending(self) -> list[storage.BlobInfo]:
        done = self.ledger.done_etags()
        out = []
        for info in storage.list_blobs(self.source, metadata=True):
            if not self.is_candidate(info):
                continue
            marker = self.control("done", self.rel(info.name)).blob
            if done.get(marker) == etag_key(info.etag):
                continue
            out.append(info)
        return out

    def run_pass(self) -> int:
        """Try every pending input once; returns how many this watcher handled."""
        handled = 0
        for info in self.pending():
            if self.stop_event.is_set():
                break
            try:
                if self.handle(info):
                    handled += 1
            except StorageFailure as e:
                say(f"skipping {self.rel(info.name)} for now: {e}")
        return handled

    def run(self) -> int:
        say(f"{self.id} watching {self.source} -> {self.dest}"
            + (" (once)" if self.cfg.once else f" every {self.cfg.poll:g} s"))
        try:
            while not self.stop_event.is_set():
                handled = self.run_pass()
                if self.cfg.once and handled == 0:
                    break
                if not self.cfg.once:
                    self.stop_event.wait(self.cfg.poll)
        finally:
            if self._own_work_dir:
                remove_temp_dir(self.work_dir)
        if self.stop_event.is_set():
            say("stopped; claims released")
            return 0
        return 1 if (self.cfg.once and self.failures) else 0

    # ------------------------------------------------------------------ one input
    def handle(self, info: storage.BlobInfo) -> bool:
        """Claim, run, publish or count a failure. False when not ours to do."""
        loc = self.source.with_blob(info.name)
        lease = storage.BlobLease.acquire(loc, self.cfg.lease_seconds)
        if lease is None:
            return False
        claim = Claim(lease, self.cfg.lease_seconds)
        try:
            props = storage.properties(loc)
            rel = self.rel(info.name)
            if self.ledger.is_done(rel, props.etag):
                return False  # finished by another watcher after our listing
            if self.ledger.already_published(loc, rel, props, self.output_location(rel)):
                return True
            return self._process(loc, rel, props, claim)
        finally:
            claim.release()

    def _job_dir(self, rel: str) -> Path:
        digest = hashlib.sha256(rel.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        path = (self.work_dir / f"job-{digest}-{uuid.uuid4().hex[:6]}").resolve()
        if path.parent != self.work_dir:  # cannot happen: the name is hex; belt and braces
            raise UsageError(f"refusing a job directory outside {self.work_dir}")
        path.mkdir(parents=True)
        return path

    def _inside(self, job_dir: Path, name: str) -> Path:
        path = (job_dir / name).resolve()
        if path.parent != job_dir:
            raise UsageError(f"blob name {name!r} would write outside the work dir")
        return path

    def model_path(self) -> str:
        if self._model_path is None:
            if storage.is_remote(self.cfg.model):
                dest = self.work_dir / "models"
                self._model_path = str(storage.fetch_to_local(self.cfg.model, dest))
            else:
                self._model_path = self.cfg.model
        return self._model_path

    def _process(self, loc: storage.BlobLocation, rel: str, props: storage.BlobInfo,
                 claim: Claim) -> bool:
        previous = self.ledger.attempts(rel)
        attempt = int(previous.get("count", 0)) + 1
        out_loc = self.output_location(rel)
        job_dir = self._job_dir(rel)
        started = time.time()
        report = {"input": str(loc), "input_etag": props.etag, "output": str(out_loc),
                  "watcher": self.id, "attempt": attempt, "attempts_allowed": self.cfg.attempts,
                  "started": now()}
        say(f"claimed {rel} (attempt {attempt}/{self.cfg.attempts})")
        try:
            local_in = self._inside(job_dir, "in-" + storage.safe_local_name(rel))
            local_out = self._inside(job_dir, "out-" + storage.safe_local_name(out_loc.name))
            storage.download(loc, local_in)
            rc, log_tail, argv = self._run_job(local_in, local_out, job_dir, claim)
            report.update(finished=now(), seconds=round(time.time() - started, 3),
                          returncode=rc, command=[storage.redact(a) for a in argv],
                          log_tail=log_tail)
            if rc is None:  # stopped or lease lost: not an attempt
                say(f"abandoned {rel} (stopping or claim lost); it stays pending")
            elif rc == 0 and local_out.is_file() and local_out.stat().st_size > 0:
                report["status"] = "ok"
                self.ledger.publish(local_out, loc, rel, props, out_loc, report)
                say(f"done {rel} -> {out_loc} ({report['seconds']:.1f} s)")
            else:
                report["error"] = ("the job exited 0 but wrote no output" if rc == 0
                                   else f"the job exited with status {rc}")
                self.failures += 1
                self.ledger.record_failure(loc, rel, report, previous, local_in, claim)
            return True
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    def _run_job(self, local_in: Path, local_out: Path, job_dir: Path, claim: Claim):
        """(returncode or None when interrupted, log tail, argv)."""
        model = self.model_path()
        if self.cfg.in_process:
            return run_in_process(local_in, local_out, model, self.cfg.run_args)
        argv = build_job_argv(self.cfg.launcher, str(local_in), str(local_out), model,
                              self.cfg.run_args)
        rc, tail = run_child(argv, job_dir, lambda: self.stop_event.is_set() or claim.lost,
                             self.cfg.job_timeout)
        return rc, tail, argv
