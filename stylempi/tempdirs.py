"""Temp dirs that disappear with their process, however it ends.

A rank of an MPI job can end without running any cleanup: ``MPI_Abort`` has
the launcher SIGKILL the other ranks, a preempted node kills everything. A
temp dir holding a downloaded input (gigabytes) must not outlive that. Each dir
made here is watched by a tiny helper process in its own session (so a kill of
the rank's process group misses it) that blocks reading a pipe whose only write
end this process holds. The kernel closes that end when this process dies, by
any signal, and the helper then removes the dir. No polling, no pid reuse race.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Blocks until the owner's end of stdin closes (its exit, by any means), then removes the dir.
_REAPER = "import shutil, sys\nsys.stdin.buffer.read()\nshutil.rmtree(sys.argv[1], ignore_errors=True)\n"

#: Helpers by dir; holding them keeps the pipes' write ends open for this process's life.
_reapers: dict[str, subprocess.Popen] = {}


def reaped_temp_dir(prefix: str) -> Path:
    """A new dir under ``$TMPDIR`` that is removed when this process ends (or on :func:`remove`)."""
    path = Path(os.path.realpath(tempfile.mkdtemp(prefix=prefix)))
    try:
        _reapers[str(path)] = subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(path)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except OSError:
        pass  # no helper: the dir is still removed on every orderly exit (remove())
    return path


def remove(path: str | Path) -> None:
    """Remove PATH now and let its helper exit."""
    shutil.rmtree(path, ignore_errors=True)
    helper = _reapers.pop(os.path.realpath(path), None)
    if helper is not None:
        try:
            helper.stdin.close()  # EOF: the helper removes nothing more and exits
            helper.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
