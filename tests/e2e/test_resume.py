"""Never hang, never lose work: a killed rank, a failing rank, resume.

These launch real ``mpirun`` jobs and really kill a rank with SIGKILL. The
deadlines are liveness limits (a hang fails the test), not speed checks.
"""
from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import clips
from conftest import BIN, stylempi, stylempi_lines, without_stages
from stylempi.network.model import TransformerNet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    clip = clips.make_clip(d / "in.mp4", frames=48, size=(160, 96), gop=6, audio_tracks=1)
    model = d / "w8.pth"
    torch.manual_seed(1)
    torch.save(TransformerNet(8).state_dict(), model)
    return d, clip, model


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _rank_pids(mpirun_pid: int) -> list[int]:
    """PIDs of the `stylempi run` processes started by this mpirun (its descendants)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [mpirun_pid]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            try:
                cmd = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"stylempi") for part in cmd) and b"run" in cmd:
                found.append(child)
    return sorted(found)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _common(clip, out, model, *extra):
    return [str(BIN / "mpirun"), "-n", "2", str(BIN / "stylempi"), "run", str(clip), str(out),
            "--model", str(model), "--precision", "fp32", "--chunk-frames", "6", "--batch-size", "1",
            *extra]


def _wait_for(predicate, deadline: float, proc: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_killed_rank_ends_job_and_rerun_resumes(job):
    d, clip, model = job
    reference = d / "reference.mkv"
    done = stylempi("run", clip, reference, "--model", model, "--precision", "fp32", "--chunk-frames", "6",
                    "--batch-size", "1", "-q", ranks=2)
    assert done.returncode == 0, done.stderr

    out = d / "out.mkv"
    work_root = d / ".out.mkv.stylempi"
    proc = subprocess.Popen(_common(clip, out, model), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        # Kill rank 1 once the job has finished at least one chunk but not all of them.
        assert _wait_for(lambda: len(list(work_root.glob("*/chunk-*.json"))) >= 2, 240, proc), \
            "the job never finished a chunk"
        ranks = _rank_pids(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        assert time.monotonic() - killed_at < 30, "the job did not end within 30 s of a rank's death"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "signal 9" in stderr or "killed" in stderr.lower(), stderr
    assert not out.exists(), "a half-written OUTPUT appeared"
    finished = len(list(work_root.glob("*/chunk-*.json")))
    assert finished >= 2

    rerun = stylempi(*_common(clip, out, model)[4:], ranks=2)
    assert rerun.returncode == 0, rerun.stderr
    reused = int(rerun.stdout.split(" reused")[0].rsplit(" ", 1)[1])
    assert reused >= 2, rerun.stdout
    assert reused < 8, "every chunk was reused: the kill came too late to prove anything"
    a, b = _frames(reference), _frames(out)
    assert len(a) == len(b) == 48
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "resumed output differs from an uninterrupted run"
    assert not work_root.exists(), "work dir not cleaned after success"


def test_error_on_one_rank_names_it_and_does_not_hang(job, tmp_path):
    """A chunk path only one rank writes is made read-only by a real mount."""
    d, clip, model = job
    out = tmp_path / "out.mkv"
    # The job dir (named by the job's key) as the command below will find it, made by the
    # library's own planning step: a first run stopped with SIGKILL would race the test (its
    # ranks go on for up to a moment and can finish chunks after they are cleared).
    from stylempi.job.run import RunOptions, prepare, release_work_lock
    job_dir = Path(prepare(RunOptions(input=str(clip), output=str(out), model=str(model), precision="fp32",
                                      chunk_frames=6, batch_size=1)).job_dir)
    release_work_lock()  # planning took OUTPUT's lock, as the job's rank 0 would: the job below needs it
    plan = json.loads((job_dir / "plan.json").read_text())
    last = plan["chunks"][-1]["index"]  # the last chunk is rank 1's (contiguous assignment)
    for stale in job_dir.glob("chunk-*"):
        stale.unlink()
    blocker = job_dir / f"chunk-{last:05d}.partial.nut"
    blocker.write_bytes(b"")
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(blocker), str(blocker)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr.decode().strip()}")
    try:
        started = time.monotonic()
        result = stylempi(*_common(clip, out, model)[4:], ranks=2, timeout=120)
        assert time.monotonic() - started < 120
    finally:
        subprocess.run(["umount", str(blocker)], check=False)
    assert result.returncode != 0
    lines = without_stages(stylempi_lines(result.stderr))
    assert len(lines) == 1, result.stderr
    assert re.search(r"error on rank 1 \(", lines[0]) and "cannot write" in lines[0], lines[0]
    assert "rerun the same command to resume" in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_ranks_stop_when_mpirun_is_killed():
    """Open MPI gives each rank its own process group: SIGKILL to mpirun's group leaves the
    ranks running (a sleeping MPI process outlived it by 20 s here) unless they notice
    that their launcher is gone. The ranks here hold a communicator and sleep, as ranks
    deep in a long network call do."""
    code = ("import os, sys, time; from stylempi.job.comm import get_comm; c = get_comm(); "
            "print(os.getpid(), c.size, flush=True); time.sleep(60)")
    proc = subprocess.Popen([str(BIN / "mpirun"), "-n", "2", sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ranks: list[int] = []
    try:
        for _ in range(2):
            line = proc.stdout.readline().split()
            assert line and line[1] == "2", proc.stderr.read() if proc.poll() is not None else line
            ranks.append(int(line[0]))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # A killed mpirun leaves its PMIx session dir (TMPDIR/ompi.PID) behind; a later mpirun
        # that gets the same PID (pid_max is 32768 here) then failed with "The PMIx server's
        # listener thread failed to start" (seen once, with 64 such dirs left on this machine).
        shutil.rmtree(Path(tempfile.gettempdir()) / f"ompi.{proc.pid}", ignore_errors=True)
    try:
        assert _wait_for(lambda: not any(_running(pid) for pid in ranks), 5), \
            "ranks still running 5 s after mpirun was killed"
    finally:
        for pid in ranks:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_other_options_never_reuse_chunks(job, tmp_path):
    d, _, model = job
    clip = clips.make_clip(tmp_path / "small.mp4", frames=12, size=(64, 48), gop=4)
    out = tmp_path / "o.mkv"
    first = stylempi("run", clip, out, "--model", model, "--chunk-frames", "6", "--precision", "fp32")
    assert first.returncode == 0, first.stderr
    # The same command again: nothing to reuse (work dir removed on success) and same result.
    again = stylempi("run", clip, out, "--model", model, "--chunk-frames", "6", "--precision", "fp32", "--crf", "30")
    assert again.returncode == 0 and " 0 reused" in again.stdout, again.stdout


def test_a_changed_option_gets_a_new_job_dir_and_drops_the_old(job, tmp_path):
    """Chunks are keyed by everything that changes pixels: stale ones are never reused."""
    from stylempi.job.run import prepare
    from stylempi.media import EncoderRequest
    from stylempi.options import RunOptions

    _, _, model = job
    clip = clips.make_clip(tmp_path / "small.mp4", frames=12, size=(64, 48), gop=4)
    base = dict(input=str(clip), output=str(tmp_path / "o.mp4"), model=str(model), precision="fp32",
                chunk_frames=6)
    first = prepare(RunOptions(**base))
    (Path(first.job_dir) / "chunk-00000.json").write_text("{}")
    assert prepare(RunOptions(**base)).job_dir == first.job_dir  # same job: same place
    for change in ({"encoder": EncoderRequest(crf=30)}, {"precision": "bf16"}, {"chunk_frames": 4}, {"codec": "libx265"}):
        other = prepare(RunOptions(**{**base, **change}))
        assert other.job_dir != first.job_dir, change
        assert not Path(first.job_dir).exists(), f"stale chunks kept after {change}"
        assert other.pending == list(range(len(other.chunks)))
        first = prepare(RunOptions(**base))
    torch.save(TransformerNet(8).state_dict(), tmp_path / "other.pth")
    assert prepare(RunOptions(**{**base, "model": str(tmp_path / "other.pth")})).job_dir != first.job_dir
