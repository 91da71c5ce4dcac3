"""The remote work dir's lease (stylempi.storage.worklease) through the backend protocol alone,
on the tests' directory backend (tests/dirbucket.py): one job per OUTPUT, a dead holder's lease
broken at once, the lock gone after a finished job."""
from __future__ import annotations

import socket
import time

import pytest

import dirbucket
from stylempi.errors import OutputFailure
from stylempi.storage.backend import Place
from stylempi.storage.worklease import WorkLease


@pytest.fixture
def lock(tmp_path, monkeypatch):
    monkeypatch.setenv(dirbucket.ENV_ROOT, str(tmp_path))
    bucket = dirbucket.DirBucket()
    return Place(bucket, bucket.locate("dirbucket://media/work/.out.mkv.stylempi/lock"))


def test_one_holder_at_a_time_and_the_second_is_told_who(lock):
    first = WorkLease.acquire(lock, "dirbucket://media/out.mkv")
    try:
        with pytest.raises(OutputFailure, match=r"another stylempi job \(.*, pid \d+\) is writing "
                                                r"dirbucket://media/out.mkv"):
            WorkLease.acquire(lock, "dirbucket://media/out.mkv")
        assert not first.lost
    finally:
        first.release(delete=True)
    assert lock.list() == [], "the lock object outlived a finished job"
    WorkLease.acquire(lock, "x").release()  # free again
    assert lock.list() == [lock.key], "a failed job's lock object stays (its work does too)"


def test_a_dead_holders_lease_is_broken_at_once(lock):
    taken = lock.backend.acquire_lease(lock.loc, 15) if lock.write(b"") else None
    assert taken is not None
    lock.write(f"{socket.gethostname()} {2 ** 22 + 1}\n".encode(), lease=taken)  # no such pid
    again = WorkLease.acquire(lock, "out")
    try:
        assert lock.read(100).split()[1].decode().isdigit() and again.lock == lock
    finally:
        again.release(delete=True)


def test_a_lost_lease_is_noticed_by_the_renewing_thread(lock, monkeypatch):
    monkeypatch.setattr(WorkLease, "SECONDS", 0.6)  # renewed every 0.2 s
    held = WorkLease.acquire(lock, "out")
    try:
        time.sleep(0.8)
        assert not held.lost, "renewing kept the lease past its first term"
        lock.backend.break_lease(lock.loc)  # another job took it over
        deadline = time.monotonic() + 5
        while not held.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.lost
    finally:
        held.release()
