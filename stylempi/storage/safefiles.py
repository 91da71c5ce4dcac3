"""Paths a job names itself, created, written and removed without following a planted link.

A job writes beside OUTPUT (``.OUTPUT.stylempi/``, ``.OUTPUT.partial.EXT``, a lock)
and often in a directory other users can write to (``/tmp``, cluster scratch). A
symbolic link planted at one of those names, by anyone, would otherwise aim the
job at the planter's choice of the victim's files: a work dir emptied as stale,
a config file overwritten with MP4 bytes. So every such path is made here:

* a directory is made with ``mkdir`` (which never follows a link); one that is
  already there is used only when ``lstat`` shows a real directory of this user;
* a file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a leftover plain file
  of an earlier run is removed first: unlinking never follows a link), and
  libraries that open by name (FFmpeg) are given ``/proc/self/fd/N``, which
  names the file just created whatever is done to its name meanwhile;
* a lock file that may exist is opened with ``O_NOFOLLOW``;
* a tree is removed only after ``lstat`` shows a real directory (``shutil.rmtree``
  also refuses links inside it).

A link found at such a path is refused in one line (:class:`OutputFailure`,
exit 5) before anything is touched. The user's own OUTPUT (and ``--out``) is
different: it is replaced by a rename, which replaces a link there and leaves
its target as it was, as ``mv`` does. Torch-free and PyAV-free.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import OutputFailure

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def link_refusal(path: str | os.PathLike, what: str) -> OutputFailure:
    return OutputFailure(f"{what} {path} is a symbolic link, which stylempi never writes or deletes "
                         "through (anyone who can write to that folder can plant one): remove it, or "
                         "write somewhere else")


def refuse_link(path: str | os.PathLike, what: str) -> None:
    """Raise :func:`link_refusal` when PATH is a symbolic link (a missing PATH is fine)."""
    try:
        st = os.lstat(path)
    except OSError:  # missing, or its folder is not one: whatever makes it words that
        return
    if stat.S_ISLNK(st.st_mode):
        raise link_refusal(path, what)


def _existing(path: Path, what: str, is_kind, not_kind: str) -> os.stat_result:
    """PATH's own status (never its link target's) when it is of the kind IS_KIND accepts;
    a link, or anything else, is refused (NOT_KIND says why)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise link_refusal(path, what)
    if not is_kind(st.st_mode):
        raise OutputFailure(f"{what} {path} {not_kind}")
    return st


def make_dir(path: str | os.PathLike, what: str, mode: int = 0o777) -> Path:
    """Make directory PATH (its parent must exist), or accept it when it already is a real
    directory of this user; a link, a file or another user's directory is refused."""
    path = Path(path)
    try:
        os.mkdir(path, mode)
        return path
    except FileExistsError:
        pass
    except OSError as exc:
        raise OutputFailure(f"cannot make {what} {path}: {exc.strerror or exc}") from None
    st = _existing(path, what, stat.S_ISDIR, "is a file, not a directory: remove it, or write somewhere else")
    if st.st_uid != os.geteuid():
        raise OutputFailure(f"{what} {path} belongs to another user (uid {st.st_uid}), who could plant "
                            "links in it: remove it, or write somewhere else")
    return path


def create_file(path: str | os.PathLike, what: str) -> int:
    """A new, empty file at PATH, open for writing (the fd): a leftover plain file there is
    replaced, a link (or anything but a plain file) is refused."""
    path = Path(path)
    for _ in range(3):
        try:
            return os.open(path, _NEW_FILE, 0o666)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise link_refusal(path, what) from None
            raise OutputFailure(f"cannot write {what} {path}: {exc.strerror or exc}") from None
        _existing(path, what, stat.S_ISREG, "is in the way (not a plain file): remove it")
        try:
            os.unlink(path)  # an earlier run's leftover; unlink removes a name, never follows it
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutputFailure(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    raise OutputFailure(f"cannot write {what} {path}: something keeps recreating it")


def open_lock_file(path: str | os.PathLike, what: str) -> int:
    """Open (creating it if needed) the lock file PATH for reading and writing; never a link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refusal(path, what) from None
        raise OutputFailure(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device planted there
        os.close(fd)
        raise OutputFailure(f"{what} {path} is not a plain file: remove it")
    return fd


def fd_name(fd: int, path: str | os.PathLike) -> str:
    """A name that opens exactly the file FD holds, for libraries that open files by name:
    ``/proc/self/fd/N`` where there is one, else PATH."""
    name = f"/proc/self/fd/{fd}"
    return name if os.path.exists(name) else os.fspath(path)


def remove_tree(path: str | os.PathLike, what: str) -> None:
    """Remove directory PATH and everything in it; a link there is refused, a file removed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise link_refusal(path, what)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)  # never follows links below PATH
    else:
        os.unlink(path)


def probe_writable(directory: str | os.PathLike) -> None:
    """Create and remove a file of a fresh name in DIRECTORY (OSError when it cannot)."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".stylempi-probe-")  # O_EXCL: never a planted name
    os.close(fd)
    os.unlink(name)


@contextmanager
def replacing(path: str | os.PathLike, what: str) -> Iterator[str]:
    """``with replacing(path, what) as tmp:`` write the file named TMP (a fresh name in a new
    private directory beside PATH, for writers that open by name); a clean exit renames it
    onto PATH (a link at PATH is replaced, its target untouched), an exception removes it."""
    path = Path(path)
    try:
        private = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name[:100]}.")
    except OSError as exc:
        raise OutputFailure(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    tmp = os.path.join(private, "new" + path.suffix)
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputFailure(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(private, ignore_errors=True)

