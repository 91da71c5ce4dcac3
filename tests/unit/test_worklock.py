"""One job per OUTPUT on a filesystem (stylempi.job.worklock) and the holder naming it shares with
the Blob lease (stylempi.storage.holders)."""
from __future__ import annotations

import os
import socket

import pytest

from stylempi.errors import OutputFailure
from stylempi.job.worklock import LOCK_NAME, WorkLock
from stylempi.storage.holders import dead_here, describe_holder, holder_text


def test_the_lock_names_its_holder_and_is_removed_on_request(tmp_path):
    lock = WorkLock.acquire(tmp_path, "out.mp4")
    assert (tmp_path / LOCK_NAME).read_bytes() == holder_text()
    lock.release(remove=True)
    assert not (tmp_path / LOCK_NAME).exists()
    lock.release()  # twice is harmless


def test_a_second_process_is_refused_while_the_first_holds_it(tmp_path):
    lock = WorkLock.acquire(tmp_path, "out.mp4")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: POSIX locks are per process, so it sees the parent's lock
        try:
            WorkLock.acquire(tmp_path, "out.mp4")
            message = "acquired"
        except OutputFailure as exc:
            message = str(exc)
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    message = os.read(read, 4096).decode()
    lock.release()
    assert message.startswith(f"another stylempi job ({socket.gethostname()[:100]}, pid {os.getpid()}) is writing "
                              "out.mp4"), message
    WorkLock.acquire(tmp_path, "out.mp4").release()  # free again once released


def test_holders_are_named_plainly_and_never_with_control_characters():
    assert describe_holder(["node7", "1234"]) == "node7, pid 1234"
    assert describe_holder(["evil\x1b[2Jhost", "1"]) == "evil[2Jhost, pid 1"
    assert describe_holder([]) == describe_holder(["only-one-word"]) == "host and pid unknown"


@pytest.mark.parametrize("words, dead", [
    ([socket.gethostname(), str(os.getpid())], False),  # alive: this very process
    (["another-host", "1"], False),                     # elsewhere: cannot tell, so not dead
    (["garbage"], False),
])
def test_only_a_holder_gone_from_this_host_is_dead(words, dead):
    assert dead_here(words) is dead


def test_a_holder_whose_process_ended_here_is_dead():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # reaped: the pid is free
    assert dead_here([socket.gethostname(), str(pid)])
