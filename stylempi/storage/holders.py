"""Who holds a work root: the host and pid written into a lock (a file, or a lock blob), and
named in the error a second job gets. Shared by stylempi.job.worklock and
stylempi.storage.worklease; imports nothing of stylempi.
"""
from __future__ import annotations

import os
import socket


def holder_text() -> bytes:
    return f"{socket.gethostname()} {os.getpid()}\n".encode()


def dead_here(words: list[str]) -> bool:
    """True when the holder ran on this host and its process is gone."""
    if len(words) != 2 or not words[1].isdigit() or words[0] != socket.gethostname():
        return False
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def describe_holder(words: list[str]) -> str:
    if len(words) == 2 and words[1].isdigit():
        return f"{''.join(c for c in words[0] if c.isprintable())[:100]}, pid {words[1]}"
    return "host and pid unknown"
