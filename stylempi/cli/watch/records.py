"""The watcher's records in Blob storage: claims, done markers, attempt counts, reports.

Everything a watcher writes carries ``ROLE_KEY`` metadata, so no watcher ever
takes it up as an input. Control records live under ``SOURCE/.stylempi/``
(``done/NAME``, ``attempts/NAME``); inputs that failed ``--attempts`` times
move to ``SOURCE/failed/NAME`` with ``NAME.error.json`` beside them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
import threading
from pathlib import Path

from ... import storage
from ...errors import StorageFailure

CONTROL = ".stylempi/"
FAILED = "failed/"
ROLE_KEY = "stylempi_role"  # metadata on everything the watcher writes
#: Output metadata naming the input (a digest of its name) and the ETag it was made from.
INPUT_KEY, INPUT_ETAG_KEY = "stylempi_input", "stylempi_input_etag"
LEASE_SECONDS = 60
#: Errors of earlier attempts kept in the attempts record (the newest ones).
KEPT_ERRORS = 10


def say(message: str) -> None:
    print(f"stylempi watch: {storage.redact(message)}", file=sys.stderr, flush=True)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def safe_relative_name(name: str) -> str:
    """A blob-relative name with no empty, ``.`` or ``..`` segments and no backslashes."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def name_digest(rel: str) -> str:
    """A metadata-safe (ASCII) identity for a blob name of any characters."""
    return hashlib.sha256(rel.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def etag_key(etag: str | None) -> str:
    return (etag or "").strip('"')


def dump(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


def read_json(loc: storage.BlobLocation):
    try:
        return json.loads(storage.read_bytes(loc, limit=1 << 20))
    except StorageFailure as e:
        if storage.failure_reason(e) == "blob-not-found":
            return None
        raise
    except ValueError:
        return None


def _upload_json(obj, loc: storage.BlobLocation, role: str, **metadata: str) -> None:
    storage.upload_bytes(dump(obj), loc, metadata={ROLE_KEY: role, **metadata},
                         content_type="application/json")


def report_location(out_loc: storage.BlobLocation) -> storage.BlobLocation:
    return out_loc.with_blob(out_loc.blob + ".report.json")


class Claim:
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
                say(f"lost the claim on {self.lease.loc}: {e}")
                self.lost = True
                return

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def release(self) -> None:
        self.stop_renewing()
        self.lease.release()


class Ledger:
    """SOURCE's records, as one watcher (named ``watcher`` in what it writes) keeps them."""

    def __init__(self, source: storage.BlobLocation, watcher: str):
        self.source, self.watcher = source, watcher

    def control(self, kind: str, rel: str) -> storage.BlobLocation:
        return self.source.child(f"{CONTROL}{kind}/{safe_relative_name(rel)}")

    def done_etags(self) -> dict[str, str | None]:
        """Every done marker's blob name and the input ETag it records (one listing)."""
        return {b.name: b.metadata.get("etag")
                for b in storage.list_blobs(self.source.child(CONTROL + "done/"), metadata=True)}

    def is_done(self, rel: str, etag: str | None) -> bool:
        """Whether the done marker of ``rel`` records this very upload (``etag``)."""
        try:
            return storage.properties(self.control("done", rel)).metadata.get("etag") == etag_key(etag)
        except StorageFailure as e:
            if storage.failure_reason(e) != "blob-not-found":
                raise
            return False

    def attempts(self, rel: str) -> dict:
        """The attempts record of ``rel``: ``{"count": N, "errors": [...]}``, or {} before any."""
        return read_json(self.control("attempts", rel)) or {}

    @staticmethod
    def output_metadata(rel: str, props: storage.BlobInfo) -> dict:
        return {ROLE_KEY: "output", INPUT_KEY: name_digest(rel), INPUT_ETAG_KEY: etag_key(props.etag)}

    def already_published(self, loc: storage.BlobLocation, rel: str, props: storage.BlobInfo,
                          out_loc: storage.BlobLocation) -> bool:
        """Finish the bookkeeping of an earlier claim that uploaded this very output but died
        before its done marker; True when it did (nothing is run or uploaded again)."""
        try:
            output = storage.properties(out_loc)
        except StorageFailure as e:
            if storage.failure_reason(e) == "blob-not-found":
                return False
            raise
        wanted = self.output_metadata(rel, props)
        if any(output.metadata.get(k) != wanted[k] for k in (INPUT_KEY, INPUT_ETAG_KEY)):
            return False  # an output of another input, or of an older upload of this one
        if not storage.exists(report_location(out_loc)):
            _upload_json({"input": str(loc), "input_etag": props.etag, "output": str(out_loc),
                          "watcher": self.watcher, "status": "ok", "finished": now(),
                          "note": "published by an earlier claim that stopped before "
                                  "recording it; not run again"},
                         report_location(out_loc), "report")
        self.mark_done(loc, rel, out_loc, props, now())
        say(f"done {rel} -> {out_loc} (already published by an earlier claim; not run again)")
        return True

    def publish(self, local_out: Path, loc: storage.BlobLocation, rel: str, props: storage.BlobInfo,
                out_loc: storage.BlobLocation, report: dict) -> None:
        """Upload a finished job's output, then its report, then the done marker."""
        # The output's commit is the point of no return: its metadata records what it
        # was made from, so a crash after it never leads to a second run (already_published).
        storage.upload(local_out, out_loc, metadata=self.output_metadata(rel, props))
        _upload_json(report, report_location(out_loc), "report")
        self.mark_done(loc, rel, out_loc, props, report["finished"])

    def mark_done(self, loc: storage.BlobLocation, rel: str, out_loc: storage.BlobLocation,
                  props: storage.BlobInfo, finished: str) -> None:
        _upload_json({"input": str(loc), "output": str(out_loc), "finished": finished},
                     self.control("done", rel), "marker", etag=etag_key(props.etag))
        storage.delete(self.control("attempts", rel))

    def record_failure(self, loc: storage.BlobLocation, rel: str, report: dict, previous: dict,
                       local_in: Path, claim: Claim) -> None:
        """Count a failed attempt; the last allowed one moves the input to ``SOURCE/failed/``."""
        attempt, allowed = report["attempt"], report["attempts_allowed"]
        report["status"] = "failed"
        history = list(previous.get("errors", []))[-(KEPT_ERRORS - 1):] + [
            {"attempt": attempt, "watcher": self.watcher, "error": report["error"],
             "finished": report.get("finished")}]
        if attempt < allowed:
            _upload_json({"count": attempt, "errors": history}, self.control("attempts", rel), "marker")
            say(f"failed {rel} (attempt {attempt}/{allowed}): {report['error']}; will retry")
            return
        report["errors"] = history
        failed_loc = self.source.child(FAILED + safe_relative_name(rel))
        storage.upload(local_in, failed_loc, metadata={ROLE_KEY: "failed"})
        report["moved_to"] = str(failed_loc)
        _upload_json(report, failed_loc.with_blob(failed_loc.blob + ".error.json"), "report")
        claim.stop_renewing()
        storage.delete(loc, lease=claim.lease.id)
        storage.delete(self.control("attempts", rel))
        say(f"failed {rel} {attempt} times: moved to {failed_loc}")
