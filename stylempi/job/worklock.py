"""One job per OUTPUT: an advisory lock on the work dir, held by rank 0 for the job's life.

Two jobs writing the same OUTPUT share its work root (``.OUTPUT.stylempi/``):
without a lock the second one deletes the first one's chunks as stale (another
model) or writes the same chunk files at once (the same settings). Rank 0 takes
a POSIX record lock (``fcntl.lockf``) on ``.OUTPUT.stylempi/lock`` before it
touches anything there. POSIX locks work across the hosts of an NFS or Lustre
mount (the shared filesystem every rank already needs) and the kernel drops
them when their process dies, however it dies: a lock left by a killed job is
simply free, and the next job takes it over. The file holds the holder's host
and pid, only to name it in the error.

Filesystems that cannot lock (some FUSE mounts) are used unlocked: refusing
every job there would be worse than the race the lock prevents.

A work dir in Blob storage has no shared filesystem to lock: there rank 0
holds a renewed lease on its ``lock`` blob instead
(:class:`stylempi.storage.worklease.WorkLease`, which names its holder as this
module does).
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ..errors import OutputFailure
from ..storage.holders import describe_holder, holder_text

LOCK_NAME = "lock"
#: errno values meaning "this filesystem cannot lock", as opposed to "someone holds it".
_CANNOT_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class WorkLock:
    """A held lock; :meth:`release` (or the process's end) frees it."""

    def __init__(self, path: Path, fd: int | None):
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, root: Path, output: str) -> "WorkLock":
        """Lock work root ``root`` for a job writing ``output``, or raise :class:`OutputFailure`."""
        path = Path(root) / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in _CANNOT_LOCK:
                    return cls(path, None)
                raise OutputFailure(f"another stylempi job ({holder}) is writing {output}; wait for it "
                                    "to finish, or write to another OUTPUT") from None
            if _same_file(fd, path):
                break
            # The holder removed the file as it finished, after we opened it: lock the new one.
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, holder_text())
        return cls(path, fd)

    def release(self, remove: bool = False) -> None:
        """Free the lock; ``remove`` also deletes the file (the work root is being removed)."""
        if self._fd is None:
            return
        if remove:
            try:
                self.path.unlink()
            except OSError:
                pass
        os.close(self._fd)  # closing drops the POSIX lock
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> str:
    """"host, pid N" from the lock file, or a plain phrase when it says nothing usable."""
    try:
        words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        words = []
    return describe_holder(words)
