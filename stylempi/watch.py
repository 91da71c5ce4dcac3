"""``stylempi watch``: stylize every video uploaded under a Blob prefix, exactly once.

::

    stylempi watch az://incoming/ --output az://styled/ --model candy.pth \\
        [--launcher "mpirun -n 4"] [--poll 30] [--attempts 3] [--once]

Each poll lists SOURCE. A blob is a candidate when its name has a video
extension and it is none of the watcher's own things: the control prefix
``SOURCE/.stylempi/``, the ``SOURCE/failed/`` prefix, anything under DEST
(DEST may lie under SOURCE), and any blob whose metadata marks it as a stylempi
output or report.

Exactly once, with any number of watchers:

1. **claim**: take a 60 s blob lease on the input (renewed in the background
   while the job runs). A blob leased by another watcher is skipped. A crashed
   watcher's lease simply runs out, so its input is picked up again.
2. **check**: with the lease held, look for the done marker
   ``SOURCE/.stylempi/done/NAME`` recording this input's ETag; present means
   another watcher finished it (between our listing and our claim): skip.
3. **run** the job on local copies in a private work dir (blob names are
   turned into flat, harmless file names: a name with ``../`` cannot write
   outside it). The job is ``stylempi run IN OUT --model M`` in a child process,
   prefixed by ``--launcher`` (e.g. ``mpirun -n 4``, ``sbatch --wait ...``;
   split with shlex, never run through a shell; ``{input}``, ``{output}`` and
   ``{model}`` in the launcher are replaced instead of appending the command);
   with ``--in-process`` it calls :func:`stylempi.job.run_job` directly.
4. **publish**: upload the output (blocks committed last) to DEST and a JSON
   report beside it (``OUTPUT.report.json``), then write the done marker, then
   release the lease. The output blob's metadata names the input and its ETag,
   so the output itself is the record that the work is done: a watcher that
   dies after the output's commit but before the marker leaves nothing to
   redo; the next claim of the input (step 2) finds the output, writes the
   missing report and marker, and never runs or writes the output twice.
5. **fail**: a failed run increments ``SOURCE/.stylempi/attempts/NAME``; after
   ``--attempts`` failures (default 3) the input moves to ``SOURCE/failed/NAME``
   with ``NAME.error.json`` beside it, instead of being retried forever.

SIGINT/SIGTERM stop the watcher cleanly: a running job is terminated (its
whole process group), its lease released (so another watcher may take it up at
once), no attempt is counted, and the exit status is 0.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import storage
from .errors import StorageFailure, StylempiError, UsageError
from .tempdirs import reaped_temp_dir, remove as remove_temp_dir

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                              ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".nut", ".3gp"})
#: Output containers kept as-is; other inputs produce .mp4 outputs.
OUTPUT_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".webm"})
CONTROL = ".stylempi/"
FAILED = "failed/"
ROLE_KEY = "stylempi_role"  # metadata on everything the watcher writes
#: Output metadata naming the input (a digest of its name) and the ETag it was made from.
INPUT_KEY, INPUT_ETAG_KEY = "stylempi_input", "stylempi_input_etag"
LEASE_SECONDS = 60
LOG_TAIL = 4000


def _say(message: str) -> None:
    print(f"stylempi watch: {storage.redact(message)}", file=sys.stderr, flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def safe_relative_name(name: str) -> str:
    """A blob-relative name with no empty, ``.`` or ``..`` segments and no backslashes."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def build_job_argv(launcher: str | None, input_path: str, output_path: str, model: str,
                   run_args: list[str] | None = None) -> list[str]:
    """The job's argv (a list; no shell ever sees it).

    Without a launcher: this Python running ``stylempi.cli run``. With one: the
    launcher's words, then that command; or, when the launcher holds any of
    ``{input}``, ``{output}``, ``{model}``, just the launcher's words with those
    replaced (for wrappers such as ``sbatch --wait slurm/stylempi.sbatch
    {input} {output} {model}``).
    """
    job = [sys.executable, "-m", "stylempi.cli", "run", input_path, output_path,
           "--model", model, *(run_args or [])]
    if not launcher:
        return job
    words = shlex.split(launcher)
    if not words:
        raise UsageError("--launcher is empty")
    values = {"input": input_path, "output": output_path, "model": model}
    if any("{" + k + "}" in w for w in words for k in values):
        out = []
        for w in words:
            for k, v in values.items():
                w = w.replace("{" + k + "}", v)
            out.append(w)
        return out + list(run_args or [])
    return words + job


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


class _Claim:
    """A held lease plus a thread renewing it; ``lost`` turns True if renewal fails."""

    def __init__(self, lease: storage.BlobLease, seconds: int):
        self.lease, self.lost = lease, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, args=(max(1.0, seconds / 3),), daemon=True)
        self._thread.start()

    def _renew(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.lease.renew()
            except StorageFailure as e:
                _say(f"lost the claim on {self.lease.loc}: {e}")
                self.lost = True
                return

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def release(self) -> None:
        self.stop_renewing()
        self.lease.release()


class Watcher:
    """One watcher process. ``run()`` returns the exit status."""

    def __init__(self, config: WatchConfig):
        self.cfg = config
        self.source = config.source.as_prefix()
        self.dest = config.dest.as_prefix()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()
        self._own_work_dir = config.work_dir is None
        # A watcher killed mid-job leaves no downloaded input behind in its own temp dir.
        self.work_dir = Path(config.work_dir or reaped_temp_dir("stylempi-watch-")).resolve()
        self.failures = 0
        self._model_path: str | None = None
        self._warned: set[str] = set()
        self._check_layout()

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

    def rel(self, name: str) -> str:
        return name[len(self.source.blob):]

    def control(self, kind: str, rel: str) -> storage.BlobLocation:
        return self.source.child(f"{CONTROL}{kind}/{safe_relative_name(rel)}")

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
                _say(f"ignoring blob with an unsafe name {info.name!r}: rename it")
            return False
        return True

    # ------------------------------------------------------------------ one pass
    def pending(self) -> list[storage.BlobInfo]:
        done = {}
        for b in storage.list_blobs(self.source.child(CONTROL + "done/"), metadata=True):
            done[b.name] = b.metadata.get("etag")
        out = []
        for info in storage.list_blobs(self.source, metadata=True):
            if not self.is_candidate(info):
                continue
            marker = self.control("done", self.rel(info.name)).blob
            if done.get(marker) == _etag_key(info.etag):
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
                _say(f"skipping {self.rel(info.name)} for now: {e}")
        return handled

    def run(self) -> int:
        _say(f"{self.id} watching {self.source} -> {self.dest}"
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
            _say("stopped; claims released")
            return 0
        return 1 if (self.cfg.once and self.failures) else 0

    # ------------------------------------------------------------------ one input
    def handle(self, info: storage.BlobInfo) -> bool:
        """Claim, run, publish or count a failure. False when not ours to do."""
        loc = self.source.with_blob(info.name)
        lease = storage.BlobLease.acquire(loc, self.cfg.lease_seconds)
        if lease is None:
            return False
        claim = _Claim(lease, self.cfg.lease_seconds)
        try:
            props = storage.properties(loc)
            rel = self.rel(info.name)
            marker = self.control("done", rel)
            try:
                if storage.properties(marker).metadata.get("etag") == _etag_key(props.etag):
                    return False  # finished by another watcher after our listing
            except StorageFailure as e:
                if storage.failure_reason(e) != "blob-not-found":
                    raise
            if self._already_published(loc, rel, props):
                return True
            return self._process(loc, rel, props, claim)
        finally:
            claim.release()

    def _output_metadata(self, rel: str, props: storage.BlobInfo) -> dict:
        return {ROLE_KEY: "output", INPUT_KEY: _name_digest(rel), INPUT_ETAG_KEY: _etag_key(props.etag)}

    def _already_published(self, loc: storage.BlobLocation, rel: str, props: storage.BlobInfo) -> bool:
        """Finish the bookkeeping of an earlier claim that uploaded this very output but died
        before its done marker; True when it did (nothing is run or uploaded again)."""
        out_loc = self.output_location(rel)
        try:
            output = storage.properties(out_loc)
        except StorageFailure as e:
            if storage.failure_reason(e) == "blob-not-found":
                return False
            raise
        wanted = self._output_metadata(rel, props)
        if any(output.metadata.get(k) != wanted[k] for k in (INPUT_KEY, INPUT_ETAG_KEY)):
            return False  # an output of another input, or of an older upload of this one
        report_loc = out_loc.with_blob(out_loc.blob + ".report.json")
        if not storage.exists(report_loc):
            storage.upload_bytes(_dump({"input": str(loc), "input_etag": props.etag, "output": str(out_loc),
                                        "watcher": self.id, "status": "ok", "finished": _now(),
                                        "note": "published by an earlier claim that stopped before "
                                                "recording it; not run again"}),
                                 report_loc, metadata={ROLE_KEY: "report"}, content_type="application/json")
        self._mark_done(loc, rel, out_loc, props, _now())
        _say(f"done {rel} -> {out_loc} (already published by an earlier claim; not run again)")
        return True

    def _mark_done(self, loc: storage.BlobLocation, rel: str, out_loc: storage.BlobLocation,
                   props: storage.BlobInfo, finished: str) -> None:
        storage.upload_bytes(_dump({"input": str(loc), "output": str(out_loc), "finished": finished}),
                             self.control("done", rel),
                             metadata={ROLE_KEY: "marker", "etag": _etag_key(props.etag)},
                             content_type="application/json")
        storage.delete(self.control("attempts", rel))

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
                 claim: _Claim) -> bool:
        attempts_loc = self.control("attempts", rel)
        previous = _read_json(attempts_loc) or {}
        attempt = int(previous.get("count", 0)) + 1
        out_loc = self.output_location(rel)
        job_dir = self._job_dir(rel)
        started = time.time()
        report = {"input": str(loc), "input_etag": props.etag, "output": str(out_loc),
                  "watcher": self.id, "attempt": attempt, "attempts_allowed": self.cfg.attempts,
                  "started": _now()}
        _say(f"claimed {rel} (attempt {attempt}/{self.cfg.attempts})")
        try:
            local_in = self._inside(job_dir, "in-" + storage.safe_local_name(rel))
            local_out = self._inside(job_dir, "out-" + storage.safe_local_name(out_loc.name))
            storage.download(loc, local_in)
            rc, log_tail, argv = self._run_job(local_in, local_out, job_dir, claim)
            report.update(finished=_now(), seconds=round(time.time() - started, 3),
                          returncode=rc, command=[storage.redact(a) for a in argv],
                          log_tail=log_tail)
            if rc is None:  # stopped or lease lost: not an attempt
                _say(f"abandoned {rel} (stopping or claim lost); it stays pending")
                return True
            if rc == 0 and local_out.is_file() and local_out.stat().st_size > 0:
                report["status"] = "ok"
                # The output's commit is the point of no return: its metadata records what it
                # was made from, so a crash after it never leads to a second run (_already_published).
                storage.upload(local_out, out_loc, metadata=self._output_metadata(rel, props))
                report_loc = out_loc.with_blob(out_loc.blob + ".report.json")
                storage.upload_bytes(_dump(report), report_loc, metadata={ROLE_KEY: "report"},
                                     content_type="application/json")
                self._mark_done(loc, rel, out_loc, props, report["finished"])
                _say(f"done {rel} -> {out_loc} ({report['seconds']:.1f} s)")
                return True
            if rc == 0:
                report["error"] = "the job exited 0 but wrote no output"
            else:
                report["error"] = f"the job exited with status {rc}"
            self._record_failure(loc, rel, attempt, report, previous, local_in, claim)
            return True
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    def _record_failure(self, loc, rel, attempt, report, previous, local_in, claim) -> None:
        self.failures += 1
        report["status"] = "failed"
        history = list(previous.get("errors", []))[-9:] + [
            {"attempt": attempt, "watcher": self.id, "error": report["error"],
             "finished": report.get("finished")}]
        if attempt < self.cfg.attempts:
            storage.upload_bytes(_dump({"count": attempt, "errors": history}),
                                 self.control("attempts", rel), metadata={ROLE_KEY: "marker"},
                                 content_type="application/json")
            _say(f"failed {rel} (attempt {attempt}/{self.cfg.attempts}): {report['error']}; "
                 "will retry")
            return
        report["errors"] = history
        failed_loc = self.source.child(FAILED + safe_relative_name(rel))
        storage.upload(local_in, failed_loc, metadata={ROLE_KEY: "failed"})
        err_loc = failed_loc.with_blob(failed_loc.blob + ".error.json")
        report["moved_to"] = str(failed_loc)
        storage.upload_bytes(_dump(report), err_loc, metadata={ROLE_KEY: "report"},
                             content_type="application/json")
        claim.stop_renewing()
        storage.delete(loc, lease=claim.lease.id)
        storage.delete(self.control("attempts", rel))
        _say(f"failed {rel} {attempt} times: moved to {failed_loc}")

    def _run_job(self, local_in: Path, local_out: Path, job_dir: Path, claim: _Claim):
        """(returncode or None when interrupted, log tail, argv)."""
        model = self.model_path()
        if self.cfg.in_process:
            return self._run_in_process(local_in, local_out, model)
        argv = build_job_argv(self.cfg.launcher, str(local_in), str(local_out), model,
                              self.cfg.run_args)
        log_path = job_dir / "job.log"
        deadline = time.monotonic() + self.cfg.job_timeout if self.cfg.job_timeout else None
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=job_dir,
                                        start_new_session=True)
            except OSError as e:
                return 127, f"cannot start {argv[0]}: {e.strerror}", argv
            rc = None
            while True:
                try:
                    rc = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                timed_out = deadline is not None and time.monotonic() > deadline
                if self.stop_event.is_set() or claim.lost or timed_out:
                    _terminate(proc)
                    rc = 124 if timed_out else None
                    break
        return rc, _tail(log_path), argv

    def _run_in_process(self, local_in: Path, local_out: Path, model: str):
        from .job import RunOptions, run_job  # the core; imported only when asked for
        argv = ["<in-process>", str(local_in), str(local_out), "--model", model]
        try:
            run_job(RunOptions(input=str(local_in), output=str(local_out), model=model,
                               work_dir=str(local_out.parent / "work"), quiet=True))
            return 0, "", argv
        except StylempiError as e:
            return e.exit_code, f"stylempi: error: {storage.redact(str(e))}", argv


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the job's process group (we started it in its own session), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL))
            return storage.scrub(f.read().decode("utf-8", "replace"))
    except OSError:
        return ""


def _name_digest(rel: str) -> str:
    """A metadata-safe (ASCII) identity for a blob name of any characters."""
    return hashlib.sha256(rel.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _etag_key(etag: str | None) -> str:
    return (etag or "").strip('"')


def _dump(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


def _read_json(loc: storage.BlobLocation):
    try:
        return json.loads(storage.read_bytes(loc, limit=1 << 20))
    except StorageFailure as e:
        if storage.failure_reason(e) == "blob-not-found":
            return None
        raise
    except ValueError:
        return None


# ---------------------------------------------------------------------------- CLI

def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``stylempi watch`` options (for cli.py, or a standalone parser)."""
    parser.add_argument("source", metavar="SOURCE",
                        help="Blob prefix to watch, e.g. az://incoming/ or "
                             "https://ACCOUNT.blob.core.windows.net/incoming/uploads/")
    parser.add_argument("--output", "-o", required=True, metavar="DEST",
                        help="Blob prefix for outputs and their .report.json files (may lie under SOURCE)")
    parser.add_argument("--model", "-m", required=True,
                        help="checkpoint path, Blob URL or built-in style name, passed to `stylempi run`")
    parser.add_argument("--launcher", default=None, metavar="CMD",
                        help="command prefix for the job, e.g. 'mpirun -n 4' or "
                             "'sbatch --wait slurm/stylempi.sbatch {input} {output} {model}' "
                             "(split like a shell would, never run by one)")
    parser.add_argument("--in-process", action="store_true",
                        help="run each job inside the watcher process instead of a child process")
    parser.add_argument("--run-args", default="", metavar="ARGS",
                        help="extra `stylempi run` options, e.g. '--precision bf16'")
    parser.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between listings of SOURCE (default: 30)")
    parser.add_argument("--attempts", type=int, default=3, metavar="K",
                        help="failed runs before an input moves to SOURCE/failed/ (default: 3)")
    parser.add_argument("--once", action="store_true",
                        help="process what is pending (retrying failures up to K times), then exit; "
                             "exit status 1 if any job failed")
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="local scratch directory for downloads and outputs (default: a temp dir)")
    parser.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                        help="stop a job that runs longer than this and count it as failed")
    parser.add_argument("--account-url", default=None, metavar="URL",
                        help="storage account for az:// URLs (default: $AZURE_STORAGE_ACCOUNT_URL, "
                             "or the connection string's endpoint)")


def add_watch_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``watch`` on cli.py's subparsers (cli._PLUGINS entry)."""
    p = sub.add_parser(
        "watch", help="stylize each video uploaded under a Blob prefix, exactly once",
        description="Poll SOURCE for new video blobs; claim each with a blob lease (safe with "
                    "several watchers), run `stylempi run` on it, upload the result and a JSON "
                    "report to DEST; after K failures move the input to SOURCE/failed/. "
                    "Ctrl-C or SIGTERM stop it cleanly. See docs/storage.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  stylempi watch az://incoming/ --output az://styled/ --model candy.pth "
               "--launcher 'mpirun -n 4'")
    add_watch_arguments(p)
    p.set_defaults(func=watch_main)
    return p


def watch_main(args: argparse.Namespace) -> int:
    """Run a watcher from parsed arguments; returns the exit status."""
    for loc_arg in (args.source, args.output):
        if not storage.is_remote(loc_arg):
            raise UsageError(f"{storage.redact(loc_arg)}: SOURCE and --output must be Blob URLs "
                             "(az://CONTAINER/PREFIX or https://...)")
    config = WatchConfig(
        source=storage.locate(args.source, args.account_url),
        dest=storage.locate(args.output, args.account_url),
        model=args.model, launcher=args.launcher, run_args=shlex.split(args.run_args or ""),
        poll=args.poll, attempts=args.attempts, once=args.once, in_process=args.in_process,
        work_dir=Path(args.work_dir) if args.work_dir else None, job_timeout=args.job_timeout)
    watcher = Watcher(config)

    def on_signal(signum, _frame):
        _say(f"received {signal.Signals(signum).name}, stopping")
        watcher.stop_event.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return watcher.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m stylempi.watch ...``: the same as ``stylempi watch ...``."""
    from .cli import main as cli_main
    return cli_main(["watch", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
