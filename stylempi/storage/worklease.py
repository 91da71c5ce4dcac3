"""One job per OUTPUT when the work dir is in remote storage: a renewed lease on its ``lock`` object.

The same rule as stylempi.job.worklock's file lock (both name the holder with stylempi.storage.holders),
for a work root with no shared filesystem to lock, in any backend (stylempi.storage.backend).
"""
from __future__ import annotations

import threading

from ..errors import OutputFailure, StorageFailure
from .backend import Missing, Place
from .holders import dead_here, describe_holder, holder_text


class WorkLease:
    """The same rule for a work dir in remote storage: a lease on its ``lock`` object.

    Leases last :attr:`SECONDS` unless renewed; a thread renews this one every
    5 s, so a job that dies loses it within :attr:`SECONDS`. A rerun on the host
    of a dead holder (its pid is gone) breaks the lease at once instead of
    waiting; ``lost`` turns True if renewing fails, and the job then refuses to
    publish.
    """

    SECONDS = 15

    def __init__(self, lock: Place, lease):
        self.lock, self._lease, self.lost = lock, lease, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="stylempi-work-lease", daemon=True)
        self._thread.start()

    @property
    def loc(self):
        """The lock object's location (its URL when printed)."""
        return self.lock.loc

    @classmethod
    def acquire(cls, lock: Place, output: str) -> "WorkLease":
        for _ in range(5):
            lock.write(b"", create_only=True)  # False when it exists (or is leased): that is fine
            try:
                lease = lock.backend.acquire_lease(lock.loc, cls.SECONDS)
            except Missing:  # removed by a finishing holder
                continue
            if lease is not None:
                lock.write(holder_text(), lease=lease)
                return cls(lock, lease)
            words = lock.read(4096).decode("utf-8", "replace").split()
            if dead_here(words):
                lock.backend.break_lease(lock.loc)
                continue
            raise OutputFailure(f"another stylempi job ({describe_holder(words)}) is writing {output}; wait for "
                                f"it to finish (a job that died frees it within {cls.SECONDS} s), or write "
                                "to another OUTPUT")
        raise OutputFailure(f"cannot take the work dir's lease {lock}: it keeps changing hands")

    def _renew(self) -> None:
        while not self._stop.wait(self.SECONDS / 3):
            try:
                self._lease.renew()
            except StorageFailure:
                self.lost = True
                return

    def release(self, delete: bool = False) -> None:
        """Stop renewing and give the lease back; ``delete`` removes the lock object too."""
        self._stop.set()
        if delete:
            try:
                self.lock.delete(lease=self._lease)
                return
            except StorageFailure:
                pass
        self._lease.release()
