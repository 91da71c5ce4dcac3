"""Talking to FFmpeg's C code: its error words, and what it prints to file descriptor 2."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

import av
import av.logging


@contextlib.contextmanager
def stderr_captured() -> Iterator[list[str]]:
    """Hold what C libraries write to file descriptor 2 meanwhile; yields its lines afterwards.

    Only for short single-threaded steps on rank 0 (the encoder check): the error
    must stay one line, and the library's own words make that line useful.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines.extend(held.read(64 * 1024).decode("utf-8", "replace").splitlines())


@contextlib.contextmanager
def ffmpeg_log() -> Iterator[list[tuple[int, str, str]]]:
    """Hold FFmpeg's error messages meanwhile: (level, who, message) each.

    An encoder or muxer that refuses to open says why only in its log ("Non full-range
    YUV is non-standard"); its error code alone says "Invalid argument". PyAV logs
    nothing unless a level is set, so one is, for the length of this step (rank 0,
    before any work).
    """
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logged:
            yield logged
    finally:
        av.logging.set_level(level)


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words, without the file name it likes to repeat."""
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
