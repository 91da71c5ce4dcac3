"""Temp dirs that disappear with their process, however it ends.

A rank of an MPI job can end without running any cleanup: ``MPI_Abort`` has
the launcher SIGKILL the other ranks, a preempted node kills everything. A
temp dir holding a downloaded input (gigabytes) must not outlive that. Each dir
made here is watched by a tiny helper process in its own session (so a kill of
the rank's process group misses it) that blocks reading a pipe whose only write
end this process holds. The kernel closes that end when this process dies, by
any signal, and the helper then removes the dir. No polling, no pid reuse race.
The helper detaches (forks, and its parent exits at once), so it is not a
descendant of the rank either: tools that kill a job's whole process tree
(mpirun's teardown, a test's kill of every descendant) leave it running.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Detaches, blocks until the owner's end of stdin closes (its exit, by any means), removes the dir.
_REAPER = ("import os, shutil, sys\n"
           "if os.fork():\n    os._exit(0)\n"
           "sys.stdin.buffer.read()\n"
           "shutil.rmtree(sys.argv[1], ignore_errors=True)\n")

#: The write ends of the helpers' pipes, by dir: open for as long as this process lives.
_reapers: dict[str, object] = {}


def reaped_temp_dir(prefix: str) -> Path:
    """A new dir under ``$TMPDIR`` that is removed when this process ends (or on :func:`remove`)."""
    path = Path(os.path.realpath(tempfile.mkdtemp(prefix=prefix)))
    try:
        helper = subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(path)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        helper.wait(timeout=30)  # the detaching parent exits at once; its child holds the pipe
        _reapers[str(path)] = helper.stdin
    except (OSError, subprocess.TimeoutExpired):
        pass  # no helper: the dir is still removed on every orderly exit (remove())
    return path


def remove(path: str | Path) -> None:
    """Remove PATH now and let its helper exit."""
    shutil.rmtree(path, ignore_errors=True)
    pipe = _reapers.pop(os.path.realpath(path), None)
    if pipe is not None:
        try:
            pipe.close()  # EOF: the helper finds nothing left to remove and exits
        except OSError:
            pass
