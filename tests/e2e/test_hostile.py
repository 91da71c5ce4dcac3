"""Hostile input and misuse: never a wrong output with exit 0, never an internal error for a
user's mistake.

Every case runs the real CLI under real ``mpirun`` (2 ranks) on tiny generated clips, with
checkpoints made here, and checks the documented exit code, one ``stylempi: error:`` line, no
OUTPUT and no work dir left where resuming cannot help.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

import clips
from conftest import stylempi, stylempi_cli, stylempi_lines

pytestmark = pytest.mark.slow
TIMEOUT = 240


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return clips.make_clip(work / "in.mp4", frames=10, size=(64, 48), gop=5, audio_tracks=1)


@pytest.fixture(scope="module")
def good_state() -> dict[str, torch.Tensor]:
    return clips.test_network().state_dict()


def digest(path: Path) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else None


def error_lines(res: subprocess.CompletedProcess) -> list[str]:
    return stylempi_lines(res.stderr, "stylempi: error")


def leftovers(output: Path) -> list[str]:
    """Work dirs or partial files a failed job left beside OUTPUT."""
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}"))


def save_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(state, path)
    return path


def run_mpi(inp: Path, out: Path, model: Path, *extra: str, ranks: int = 2) -> subprocess.CompletedProcess:
    return stylempi("run", inp, out, "--model", model, "--device", "cpu", "--quiet", *extra,
                    ranks=ranks, timeout=TIMEOUT)


def assert_refused(res: subprocess.CompletedProcess, out: Path, code: int, *mention: str,
                   one_line: bool = True) -> str:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    assert res.returncode == code, f"exit {res.returncode}, expected {code}: {res.stderr[-2000:]}"
    lines = error_lines(res)
    assert lines, res.stderr[-2000:]
    if one_line:  # mpirun adds a notice of its own; stylempi says it once, from rank 0
        assert len([l for l in res.stderr.splitlines() if l.startswith("stylempi:")]) == 1, res.stderr[-2000:]
    assert not out.exists(), "a failed job left OUTPUT behind"
    for word in mention:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------
# Non-finite, sparse and complex weights
# ---------------------------------------------------------------------------

def _damaged(state: dict[str, torch.Tensor], key: str, how: str) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in state.items()}
    value = state[key]
    if how == "nan":
        value.view(-1)[0] = float("nan")
    elif how == "inf":
        value.view(-1)[-1] = float("inf")
    elif how == "sparse":
        value = value.to_sparse()
    elif how == "complex":
        value = value.to(torch.complex64)
    state[key] = value
    return state


@pytest.mark.parametrize("key,how,words", [
    ("conv1.conv2d.weight", "nan", ("conv1.conv2d.weight", "NaN")),
    ("deconv3.conv2d.bias", "inf", ("deconv3.conv2d.bias", "Inf")),
    ("res2.conv1.conv2d.weight", "sparse", ("res2.conv1.conv2d.weight", "sparse")),
    ("in1.weight", "complex", ("in1.weight", "complex")),
])
def test_unusable_weights_are_refused_at_load(work, clip, good_state, key, how, words):
    model = save_checkpoint(work / f"{how}.pth", _damaged(good_state, key, how))
    out = work / f"out-{how}.mp4"
    before = digest(model), digest(clip)
    res = run_mpi(clip, out, model)
    assert_refused(res, out, 4, *words)
    assert "UserWarning" not in res.stderr
    assert (digest(model), digest(clip)) == before
    assert leftovers(out) == []


def test_weights_that_overflow_fail_the_batch(work, clip, good_state):
    """Finite weights whose products overflow: the network computes Inf/NaN, which would clamp
    to a blank frame; the batch fails instead (exit 4 from the rank that saw it)."""
    state = {k: v.clone() for k, v in good_state.items()}
    state["deconv3.conv2d.weight"].fill_(3e38)
    model = save_checkpoint(work / "overflow.pth", state)
    out = work / "out-overflow.mp4"
    res = run_mpi(clip, out, model)
    assert_refused(res, out, 4, "non-finite", one_line=False)


def test_weights_that_overflow_fail_the_compiled_batch_too(work, good_state):
    """The same on the compiled path, whose graph cannot branch: it returns a finite flag beside
    the frames, and the batch fails as the eager one does. One rank, a tiny clip: one compile."""
    state = {k: v.clone() for k, v in good_state.items()}
    state["deconv3.conv2d.weight"].fill_(3e38)
    model = save_checkpoint(work / "overflow-compiled.pth", state)
    clip = clips.make_clip(work / "in-compiled.mp4", frames=4, size=(32, 24), gop=4)
    out = work / "out-overflow-compiled.mp4"
    res = stylempi("run", clip, out, "--model", model, "--device", "cpu", "--quiet", "--compile", "on",
                   ranks=1, timeout=TIMEOUT, env={"STYLEMPI_COMPILE_CACHE": str(work / "compile-cache")})
    assert_refused(res, out, 4, "non-finite")


# ---------------------------------------------------------------------------
# Encoder options: checked once on rank 0, before any work
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra,words", [
    (("--preset", "warp9"), ("libx264", "preset=warp9")),
    (("--crf", "-5"), ("--crf -5", "0 to 51")),
    (("--crf", "99"), ("--crf 99", "0 to 51")),
    (("--codec", "libvpx-vp9", "--crf", "64"), ("--crf 64", "0 to 63")),
])
def test_bad_encoder_options_are_usage_errors(work, clip, good_state, extra, words):
    model = save_checkpoint(work / "good.pth", good_state)
    out = work / "out-enc.mkv"
    res = run_mpi(clip, out, model, *extra)
    line = assert_refused(res, out, 2, *words)
    assert "rerun" not in line and "internal" not in line
    assert not any(l.startswith("x264") for l in res.stderr.splitlines()), res.stderr  # folded into the line
    assert leftovers(out) == []


# ---------------------------------------------------------------------------
# Two jobs, one OUTPUT: the work dir's lock
# ---------------------------------------------------------------------------

def _start(inp: Path, out: Path, model: Path, ranks: int = 2) -> subprocess.Popen:
    from conftest import mpirun_path
    cmd = [mpirun_path(), "-n", str(ranks), *stylempi_cli(), "run", str(inp), str(out), "--model", str(model),
           "--device", "cpu", "--quiet", "--chunk-frames", "8"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lock_holder(out: Path, deadline_s: float = 120) -> int:
    """The pid written in OUTPUT's work-dir lock (rank 0 of the running job), once it is there."""
    lock = out.parent / f".{out.name}.stylempi" / "lock"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            words = lock.read_text().split()
        except OSError:
            words = []
        if len(words) == 2:
            return int(words[1])
        time.sleep(0.01)
    raise AssertionError("the job never took its work-dir lock")


@pytest.fixture(scope="module")
def long_clip(work) -> Path:
    return clips.make_clip(work / "long.mp4", frames=40, size=(128, 96), gop=8, audio_tracks=1)


@pytest.mark.parametrize("second_model", ["same", "other"])
def test_second_job_on_the_same_output_is_refused(work, long_clip, good_state, second_model):
    model_a = save_checkpoint(work / "a.pth", good_state)
    model_b = model_a if second_model == "same" else save_checkpoint(
        work / "b.pth", {k: v * 0.5 if k.endswith("bias") else v for k, v in good_state.items()})
    out = work / f"two-{second_model}.mp4"
    first = _start(long_clip, out, model_a)
    try:
        holder = _lock_holder(out)
        os.kill(holder, signal.SIGSTOP)  # job A stays mid-job, its lock held, for as long as B needs
        try:
            kept = sorted(p.name for p in (out.parent / f".{out.name}.stylempi").rglob("*"))
            second = run_mpi(long_clip, out, model_b)
            line = assert_refused(second, out, 5, "another stylempi job", f"pid {holder}", out.name)
            assert "finished chunks are kept" not in line
            still = sorted(p.name for p in (out.parent / f".{out.name}.stylempi").rglob("*"))
            assert set(kept) <= set(still), "the second job deleted the first one's work"
        finally:
            os.kill(holder, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=TIMEOUT)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-2000:]
    assert leftovers(out) == []
    ver = stylempi("verify", long_clip, out, timeout=TIMEOUT)
    assert ver.returncode == 0, ver.stdout[-1500:]


def test_lock_of_a_killed_job_is_taken_over(work, long_clip, good_state):
    model = save_checkpoint(work / "a.pth", good_state)
    out = work / "killed.mp4"
    job_root = out.parent / f".{out.name}.stylempi"
    first = _start(long_clip, out, model)
    try:
        holder = _lock_holder(out)
        end = time.monotonic() + TIMEOUT
        while not list(job_root.glob("*/chunk-*.json")) and time.monotonic() < end and first.poll() is None:
            time.sleep(0.01)
        os.kill(holder, signal.SIGKILL)  # rank 0 dies holding the lock; mpirun ends the job
        first.communicate(timeout=TIMEOUT)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0
    assert (job_root / "lock").read_text().split()[1] == str(holder)  # the dead job's lock is still there
    res = stylempi("run", long_clip, out, "--model", model, "--device", "cpu", "--chunk-frames", "8",
                   ranks=2, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert " 0 reused" not in res.stdout, res.stdout  # it resumed from the killed job's chunks
    assert leftovers(out) == []
    assert stylempi("verify", long_clip, out, timeout=TIMEOUT).returncode == 0


# ---------------------------------------------------------------------------
# A frame size that changes mid-stream
# ---------------------------------------------------------------------------

def test_size_change_mid_stream_is_refused_while_planning(work, good_state):
    """Two MPEG-TS pieces of different sizes, joined byte for byte (as `cat a.ts b.ts`)."""
    first = clips.make_clip(work / "piece-a.ts", frames=10, size=(64, 48), gop=5)
    second = clips.make_clip(work / "piece-b.ts", frames=10, size=(80, 48), gop=5, start=Fraction(1, 2))
    joined = work / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with av.open(str(second)) as c:  # where the second piece starts, in the joined file's clock
        change_s = float(next(iter(c.demux(video=0))).pts * c.streams.video[0].time_base)
    model = save_checkpoint(work / "good.pth", good_state)
    out = work / "out-joined.mp4"
    before = digest(joined)
    res = run_mpi(joined, out, model)
    line = assert_refused(res, out, 3, "64x48 to 80x48", f"{change_s:.3f}s")
    assert "rerun" not in line
    assert digest(joined) == before
    assert leftovers(out) == []


# ---------------------------------------------------------------------------
# verify: the input's clock decides, and the report says what it cannot see
# ---------------------------------------------------------------------------

def _remux(src: Path, dst: Path, video_time_base: Fraction) -> None:
    """Copy every packet; only the video's time base changes (timestamps rounded to it)."""
    ticks = {"video_track_timescale": str(video_time_base.denominator)}  # else MP4 refines it (x512)
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=ticks) as out:
        pairs = {}
        for s in inp.streams:
            o = out.add_stream_from_template(s)
            if s.type == "video":
                o.time_base = video_time_base
            pairs[s.index] = o
        for packet in inp.demux():
            if packet.dts is None:
                continue
            s, o = packet.stream, pairs[packet.stream.index]
            if s.type == "video":
                scale = s.time_base / video_time_base
                packet.pts, packet.dts = round(packet.pts * scale), round(packet.dts * scale)
                packet.duration = max(1, round((packet.duration or 0) * scale))
                packet.time_base = video_time_base
            packet.stream = o
            out.mux(packet)


def test_verify_judges_timestamps_by_the_input_clock(work, clip, good_state):
    model = save_checkpoint(work / "good.pth", good_state)
    out = work / "out-verify.mp4"
    res = run_mpi(clip, out, model)
    assert res.returncode == 0, res.stderr[-2000:]
    ok = stylempi("verify", clip, out, timeout=TIMEOUT)
    assert ok.returncode == 0, ok.stdout[-2000:]
    report = __import__("json").loads(ok.stdout)
    assert any("swapped or duplicated" in item for item in report["not_checked"])

    moved = work / "out-1-26.mp4"
    _remux(out, moved, Fraction(1, 26))  # every frame moved by up to 19 ms
    bad = stylempi("verify", clip, moved, timeout=TIMEOUT)
    assert bad.returncode == 1, bad.stdout[-2000:]
    checks = __import__("json").loads(bad.stdout)["checks"]
    assert not checks["timestamps"]["ok"] and checks["timestamps"]["tolerance_s"] < 0.001
    assert all(v["ok"] for k, v in checks.items() if k != "timestamps"), checks
    assert "timestamps" in bad.stderr

    mkv = work / "out-verify.mkv"  # Matroska's own 1 ms ticks still pass
    res = run_mpi(clip, mkv, model)
    assert res.returncode == 0, res.stderr[-2000:]
    assert stylempi("verify", clip, mkv, timeout=TIMEOUT).returncode == 0


# ---------------------------------------------------------------------------
# Smaller: termination, cleanup after input errors, printable names
# ---------------------------------------------------------------------------

def test_terminated_rank_exits_130(work, long_clip, good_state):
    """SIGTERM (Slurm's scancel, a preempting scheduler, mpirun's teardown) reaches the ranks."""
    model = save_checkpoint(work / "a.pth", good_state)
    out = work / "terminated.mp4"
    job = _start(long_clip, out, model)
    try:
        os.kill(_lock_holder(out), signal.SIGTERM)
        _, stderr = job.communicate(timeout=TIMEOUT)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert not out.exists()
    assert (out.parent / f".{out.name}.stylempi" / "lock").exists()  # the work dir stays, for resume


def _undecodable(src: Path, dst: Path) -> Path:
    """400 random bytes mid-file: FFmpeg's decoder gives up there (integration/test_damaged_and_audio.py)."""
    import random
    data = bytearray(src.read_bytes())
    rng = random.Random(1)
    middle = len(data) // 2
    for i in range(middle, middle + 400):
        data[i] = rng.randrange(256)
    dst.write_bytes(bytes(data))
    return dst


def test_input_error_found_by_a_rank_leaves_no_work_dir(work, good_state):
    clip = clips.make_clip(work / "to-damage.mp4", frames=40, size=(96, 64), gop=8)
    bad = _undecodable(clip, work / "undecodable.mp4")
    model = save_checkpoint(work / "good.pth", good_state)
    out = work / "out-undecodable.mp4"
    before = digest(bad)
    res = run_mpi(bad, out, model)
    line = assert_refused(res, out, 3, "damaged", one_line=False)
    assert "rerun" not in line
    assert digest(bad) == before
    assert leftovers(out) == [], "resume cannot fix the input: its work dir must go"


def test_summary_line_prints_output_name_plainly(work, clip, good_state):
    model = save_checkpoint(work / "good.pth", good_state)
    out = work / "evil\n\x1b[31mname.mp4"
    res = stylempi("run", clip, out, "--model", model, "--device", "cpu", ranks=2, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = [l for l in res.stdout.splitlines() if l.startswith("stylempi:")]
    assert len(summary) == 1 and "\x1b" not in res.stdout and "name.mp4" in summary[0], repr(res.stdout)
    out.unlink()


def test_output_parent_that_is_a_file(work, clip, good_state):
    model = save_checkpoint(work / "good.pth", good_state)
    out = clip / "o.mp4"
    res = run_mpi(clip, out, model)
    assert_refused(res, out, 5, "is a file")
