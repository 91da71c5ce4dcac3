"""Local files written whole or not at all, and their checksums (torch-free, PyAV-free).

A job is killed at any moment (preemption, ``MPI_Abort``, a full disk), and a
later run trusts what it finds: so a file another run may read appears only
complete, and a finished file is recognised by its SHA-256, never by its size.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

#: Bytes read at a time while hashing.
_READ_SIZE = 1 << 20


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f:`` write PATH so that a reader sees the old file or the whole new one.

    ``f`` is a new temp file beside PATH (same filesystem, hidden name, the
    permissions the umask gives any new file); a clean exit from the block
    renames it onto PATH, any exception removes it and leaves PATH as it was.
    OSError propagates: each caller words its own message.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name[:100]}.{uuid.uuid4().hex[:8]}.tmp")  # within NAME_MAX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (any size, flat memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_READ_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()
