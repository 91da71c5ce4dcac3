"""What a user sees from ``mpirun`` (Open MPI 5, PRRTE) when a job fails or is interrupted.

* A planning error (every rank stops on it): the ``stylempi: error:`` line is the
  last line on stderr and ``mpirun`` exits with the error's code (stylempi.job.launcher).
* Ctrl-C on ``mpirun``: Open MPI's own handling (README, "Interrupted"): exit 1,
  every rank gone, no OUTPUT, and the same command resumes from the finished chunks.

Everything runs the real ``mpirun`` and the real CLI.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import clips
from conftest import mpirun_path, stylempi, stylempi_cli
from stylempi.job.launcher import local_peers

TIMEOUT = 240


def _open_mpi_major() -> int | None:
    try:
        text = subprocess.run([mpirun_path(), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = text.split()
    if "(Open" not in words or "MPI)" not in words or len(words) < 4:
        return None
    return int(words[3].split(".")[0]) if words[3][:1].isdigit() else None


OPEN_MPI_5 = pytest.mark.skipif(_open_mpi_major() != 5, reason="pins the behaviour of Open MPI 5's mpirun")


# ---------------------------------------------------------------------------
# The pieces, without MPI
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
def test_local_peers_are_this_jobs_unreaped_children():
    """The ranks of a job on a node are children of one launcher with the job's PMIX_NAMESPACE;
    an ended rank counts until the launcher reaps it, other children never."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(sleeper, env=dict(os.environ, PMIX_NAMESPACE="job-a@1"))
    other = subprocess.Popen(sleeper, env=dict(os.environ, PMIX_NAMESPACE="job-b@1"))
    plain = subprocess.Popen(sleeper, env={k: v for k, v in os.environ.items() if k != "PMIX_NAMESPACE"})
    try:
        deadline = time.monotonic() + 30
        while local_peers(os.getpid(), "job-a@1") != [ours.pid] and time.monotonic() < deadline:
            time.sleep(0.05)  # its environment is readable once it has exec'd
        assert local_peers(os.getpid(), "job-a@1") == [ours.pid]
        ours.kill()
        time.sleep(0.5)
        assert local_peers(os.getpid(), "job-a@1") == [ours.pid], "an unreaped rank has not ended yet"
        ours.wait()
        assert local_peers(os.getpid(), "job-a@1") == []
    finally:
        for proc in (ours, other, plain):
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# A planning error: the one line is the last line
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("launcher")


@pytest.fixture(scope="module")
def model(work) -> Path:
    path = work / "net.pth"
    torch.save(clips.test_network().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return clips.make_clip(work / "in.mp4", frames=40, size=(128, 96), gop=8, audio_tracks=1)


@pytest.fixture(scope="module")
def long_clip(work) -> Path:
    """Long enough (30 chunks) that the job is far from its join when the first chunk is done:
    a short job can finish inside mpirun's 0.5 s kill sequence and leave a complete OUTPUT."""
    return clips.make_clip(work / "long.mp4", frames=240, size=(128, 96), gop=8, audio_tracks=1)


@OPEN_MPI_5
@pytest.mark.slow
@pytest.mark.parametrize("what,code", [("input", 3), ("model", 4)])
@pytest.mark.parametrize("ranks", [2, 3])
def test_planning_error_is_the_last_line_under_mpirun(work, clip, model, what, code, ranks):
    """Open MPI 5 follows a non-zero exit with its six-line notice unless the rank is the last of
    the job to end; stylempi's rank 0 ends last, so the user's last line is the error."""
    inp = work / "missing.mp4" if what == "input" else clip
    net = work / "missing.pth" if what == "model" else model
    out = work / f"out-{what}-{ranks}.mp4"
    res = stylempi("run", inp, out, "--model", net, "--device", "cpu", ranks=ranks, timeout=TIMEOUT)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == code, res.stderr[-2000:]
    assert lines and lines[-1].startswith("stylempi: error: ") and "missing" in lines[-1], res.stderr[-2000:]
    assert [line for line in lines if line.startswith("stylempi:")] == [lines[-1]], res.stderr[-2000:]
    assert "prterun" not in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert not out.exists()


# ---------------------------------------------------------------------------
# Ctrl-C on mpirun
# ---------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if name.isdigit() and int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@OPEN_MPI_5
@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
@pytest.mark.parametrize("target", ["mpirun", "group"])
def test_ctrl_c_on_mpirun_keeps_the_work_and_resumes(work, long_clip, model, target):
    """Ctrl-C reaches the terminal's foreground process group: mpirun, but not the ranks, which
    Open MPI puts in process groups of their own. mpirun then has every rank sent SIGCONT,
    SIGTERM 0.25 s later and SIGKILL 0.25 s after that, drops what they print meanwhile and exits
    1 (README, "Interrupted"). Whatever the signal's target, nothing is left running, no OUTPUT
    appears, and the same command resumes."""
    out = work / f"interrupted-{target}.mp4"
    cmd = [*stylempi_cli(), "run", str(long_clip), str(out), "--model", str(model), "--device", "cpu",
           "--chunk-frames", "8"]
    job = subprocess.Popen([mpirun_path(), "-n", "2", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    job_root = out.parent / f".{out.name}.stylempi"
    try:
        deadline = time.monotonic() + TIMEOUT
        while not list(job_root.glob("*/chunk-*.json")) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.01)
        ranks = _children(job.pid)
        assert job.poll() is None and len(ranks) == 2, "the job ended before it could be interrupted"
        assert all(os.getpgid(rank) != job.pid for rank in ranks), "Open MPI no longer isolates the ranks"
        if target == "mpirun":
            job.send_signal(signal.SIGINT)
        else:
            os.killpg(job.pid, signal.SIGINT)
        stdout, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 5
    while any(_alive(rank) for rank in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(rank) for rank in ranks), "a rank outlived the interrupted mpirun"
    assert not out.exists(), "an interrupted job left OUTPUT behind"
    assert list(job_root.glob("*/chunk-*.json")), "the finished chunks were not kept"

    again = stylempi(*cmd[len(stylempi_cli()):], ranks=2, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert " 0 reused" not in again.stdout, again.stdout  # it resumed from the interrupted job's chunks
    assert not job_root.exists()
    assert stylempi("verify", long_clip, out, timeout=TIMEOUT).returncode == 0
