"""One job per OUTPUT when the work dir is in Blob storage: a renewed lease on its ``lock`` blob.

The same rule as stylempi.job.worklock's file lock (both name the holder with stylempi.storage.holders),
for a work root with no shared filesystem to lock.
"""
from __future__ import annotations

import threading

from ...errors import OutputFailure, StorageFailure
from ..holders import dead_here, describe_holder, holder_text
from .blobs import BlobLease, delete as delete_blob, read_bytes, upload_bytes
from .failures import failure_reason


class BlobWorkLease:
    """The same rule for a work dir in Blob storage: a lease on its ``lock`` blob.

    Blob leases last 15 to 60 s unless renewed; a thread renews this one every
    5 s, so a job that dies loses it within :attr:`SECONDS`. A rerun on the host
    of a dead holder (its pid is gone) breaks the lease at once instead of
    waiting; ``lost`` turns True if renewing fails, and the job then refuses to
    publish.
    """

    SECONDS = 15

    def __init__(self, loc, lease):
        self.loc, self._lease, self.lost = loc, lease, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="stylempi-work-lease", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, loc, output: str) -> "BlobWorkLease":
        for _ in range(5):
            try:
                upload_bytes(b"", loc, overwrite=False)
            except StorageFailure as exc:
                if failure_reason(exc) not in ("condition", "leased"):
                    raise
            try:
                lease = BlobLease.acquire(loc, cls.SECONDS)
            except StorageFailure as exc:
                if failure_reason(exc) == "blob-not-found":  # removed by a finishing holder
                    continue
                raise
            if lease is not None:
                upload_bytes(holder_text(), loc, lease=lease.id)
                return cls(loc, lease)
            words = read_bytes(loc, limit=4096).decode("utf-8", "replace").split()
            if dead_here(words):
                BlobLease.break_now(loc)
                continue
            raise OutputFailure(f"another stylempi job ({describe_holder(words)}) is writing {output}; wait for "
                                f"it to finish (a job that died frees it within {cls.SECONDS} s), or write "
                                "to another OUTPUT")
        raise OutputFailure(f"cannot take the work dir's lease {loc}: it keeps changing hands")

    def _renew(self) -> None:
        while not self._stop.wait(self.SECONDS / 3):
            try:
                self._lease.renew()
            except StorageFailure:
                self.lost = True
                return

    def release(self, delete: bool = False) -> None:
        """Stop renewing and give the lease back; ``delete`` removes the lock blob too."""
        self._stop.set()
        if delete:
            try:
                delete_blob(self.loc, lease=self._lease.id)
                return
            except StorageFailure:
                pass
        self._lease.release()
