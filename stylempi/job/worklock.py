"""One job per OUTPUT: advisory locks on OUTPUT and on the work dir, held by rank 0 for the job's life.

Two jobs writing the same OUTPUT both write ``.OUTPUT.partial.EXT`` beside it,
whatever their work dirs: so rank 0 first locks ``.OUTPUT.lock`` beside OUTPUT
(:meth:`WorkLock.for_output`); with one work dir each, a lock in the work dir
alone let both run, and the job that exited 0 could leave the other's frames in
OUTPUT. Two jobs can also share a work root (``.OUTPUT.stylempi/``: OUTPUTs of
one name in two folders, one ``--work-dir``): without a lock there the second
one deletes the first one's chunks as stale (another model) or writes the same
chunk files at once (the same settings). So rank 0 then locks
``.OUTPUT.stylempi/lock`` too, before it touches anything there. Both are
POSIX record locks (``fcntl.lockf``) on files opened without following a link
(stylempi.storage.safefiles). POSIX locks work across the hosts of an NFS or Lustre
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
from ..storage.safefiles import open_lock_file

LOCK_NAME = "lock"
#: errno values meaning "this filesystem cannot lock", as opposed to "someone holds it".
_CANNOT_LOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class WorkLock:
    """A held lock; :meth:`release` (or the process's end) frees it."""

    def __init__(self, path: Path, fd: int | None, always_remove: bool = False):
        self.path = path
        self._fd = fd
        self._always_remove = always_remove

    @classmethod
    def acquire(cls, root: Path, output: str) -> "WorkLock":
        """Lock work root ``root`` for a job writing ``output``, or raise :class:`OutputFailure`."""
        return cls._acquire(Path(root) / LOCK_NAME, output, "the work dir's lock file", False)

    @classmethod
    def for_output(cls, output_path: Path, output: str) -> "WorkLock":
        """Lock OUTPUT itself (``.OUTPUT.lock`` beside it), whatever the work dir. The file
        holds no state, so it goes whenever the lock is released."""
        return cls._acquire(output_lock_path(output_path), output, "OUTPUT's lock file", True)

    @classmethod
    def _acquire(cls, path: Path, output: str, what: str, always_remove: bool) -> "WorkLock":
        while True:
            fd = open_lock_file(path, what)
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
        lock = cls(path, fd, always_remove)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, holder_text())
        except OSError as exc:  # a full disk: the file was made, its few bytes do not fit
            lock.release(remove=True)
            raise OutputFailure(f"cannot write {what} {path}: {exc.strerror or exc}") from None
        return lock

    def release(self, remove: bool = False) -> None:
        """Free the lock; ``remove`` also deletes the file (the work root is being removed)."""
        if self._fd is None:
            return
        if remove or self._always_remove:  # deleted while still held: see _same_file
            try:
                self.path.unlink()
            except OSError:
                pass
        os.close(self._fd)  # closing drops the POSIX lock
        self._fd = None


def output_lock_path(output_path: str | os.PathLike) -> Path:
    """``.NAME.lock`` beside OUTPUT NAME: the lock two jobs on one OUTPUT both take."""
    output_path = Path(output_path)
    return output_path.with_name(f".{output_path.name}.lock")


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
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
