"""The temporal filter in real jobs: the same frames on 1, 2 and 3 ranks and after a killed rank
and a resume, and a reset at a cut.

Real mpirun, real codecs, the real (tiny) network; clips generated here.
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
import numpy as np
import pytest
import torch

import clips
from conftest import BIN, stylempi
from stylempi.errors import StylempiError
from test_resume import _rank_pids, _wait_for

pytest.importorskip("cv2")

RUN_TIMEOUT = 300


def shots_clip(path: Path, frames_a: int = 14, frames_b: int = 10, size: tuple[int, int] = (128, 72)) -> Path:
    """Two shots joined by a hard cut: two different textures, each panned 2 pixels a frame."""
    import cv2
    w, h = size

    def shot(seed: int, frames: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        big = cv2.GaussianBlur(rng.uniform(0, 255, (h, w + 2 * frames, 3)).astype(np.float32), (0, 0), 5.0)
        big = np.clip((big - big.mean()) / big.std() * 50 + 128, 0, 255).astype(np.uint8)
        return [np.ascontiguousarray(big[:, 2 * t:2 * t + w]) for t in range(frames)]

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        stream.options = {"crf": "0", "g": "6"}
        stream.time_base = Fraction(1, 25)
        for i, picture in enumerate(shot(1, frames_a) + shot(2, frames_b)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


FIXED = ("--device", "cpu", "--compile", "off", "--quiet")
MPI_ENV = {"OMPI_MCA_rmaps_base_oversubscribe": "1"}


def run(*args, ranks=None):
    r = stylempi("run", *args, *FIXED, ranks=ranks, timeout=RUN_TIMEOUT, env=MPI_ENV)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The tests' network whose pictures are far from black (a black picture has nothing to steady)."""
    return clips.save_test_model(tmp_path_factory.mktemp("model") / "test8.pth")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.slow
def test_the_filter_gives_the_same_frames_on_one_two_and_three_ranks(tmp_path, model):
    """Chunks of 8 frames: every chunk but the first warms the filter up on frames another
    rank owns; the output must not depend on who ran what."""
    clip = shots_clip(tmp_path / "in.mp4", frames_a=30, frames_b=10)
    outputs = {}
    for ranks in (1, 2, 3):
        out = tmp_path / f"on{ranks}.mp4"
        run(clip, out, "--model", model, "--chunk-frames", "8", ranks=ranks)
        outputs[ranks] = [f.tobytes() for f in decoded(out)]
    run(clip, tmp_path / "off.mp4", "--model", model, "--chunk-frames", "8", "--temporal", "off")
    off = [f.tobytes() for f in decoded(tmp_path / "off.mp4")]
    assert len(outputs[1]) == 40
    assert outputs[2] == outputs[1] and outputs[3] == outputs[1]
    assert sum(a != b for a, b in zip(outputs[1], off)) > 20  # the filter did change frames


@pytest.mark.slow
def test_the_first_frame_after_a_hard_cut_is_the_unfiltered_frame(tmp_path, model):
    clip = shots_clip(tmp_path / "in.mp4")
    for mode in ("on", "off"):
        run(clip, tmp_path / f"{mode}.mp4", "--model", model, "--crf", "0", "--temporal", mode,
            "--chunk-frames", "100")
    on, off = decoded(tmp_path / "on.mp4"), decoded(tmp_path / "off.mp4")
    assert psnr(on[14], off[14]) >= 45.0, psnr(on[14], off[14])
    assert psnr(on[13], off[13]) < 45.0  # before the cut (and after it) the filter is at work
    assert psnr(on[16], off[16]) < 45.0


@pytest.mark.slow
def test_a_killed_rank_and_a_resume_give_the_frames_of_an_uninterrupted_run(tmp_path, model):
    """Rank 1 is SIGKILLed once two chunks are on disk; the rerun on 3 ranks reuses those and
    warms the filter up again for the chunks it makes, some on frames of reused chunks: every
    frame must equal a 1-rank run's, with the filter at work."""
    clip = shots_clip(tmp_path / "in.mp4", frames_a=40, frames_b=20, size=(160, 96))
    args = [clip, "--model", model, "--chunk-frames", "6", "--batch-size", "1"]
    run(args[0], tmp_path / "one.mkv", *args[1:], ranks=1)
    run(args[0], tmp_path / "off.mkv", *args[1:], "--temporal", "off", ranks=1)

    out, work_root = tmp_path / "out.mkv", tmp_path / ".out.mkv.stylempi"
    argv = [str(BIN / "mpirun"), "-n", "2", str(BIN / "stylempi"), "run", args[0], out, *args[1:], *FIXED]
    proc = subprocess.Popen(list(map(str, argv)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **MPI_ENV})
    try:
        assert _wait_for(lambda: len(list(work_root.glob("*/chunk-*.json"))) >= 2, 240, proc), \
            "the job never finished a chunk"
        os.kill(_rank_pids(proc.pid)[1], signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and not out.exists()
    records = sorted(p.name for p in work_root.glob("*/chunk-*.json"))
    kept = len(records)
    assert 2 <= kept < 10, f"{kept} of 10 chunks were done at the kill: it proves nothing"

    rerun = stylempi("run", *args[:1], out, *args[1:], *FIXED[:-1], ranks=3, timeout=RUN_TIMEOUT, env=MPI_ENV)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{kept} reused" in rerun.stdout, rerun.stdout
    one, resumed, off = decoded(tmp_path / "one.mkv"), decoded(out), decoded(tmp_path / "off.mkv")
    assert len(resumed) == len(one) == 60
    differ = [i for i, (a, b) in enumerate(zip(one, resumed)) if not np.array_equal(a, b)]
    assert not differ, f"the resumed output differs at frames {differ} (kept {records}; mean differences " \
        f"{[round(float(np.abs(one[i].astype(float) - resumed[i]).mean()), 3) for i in differ]})"
    assert sum(not np.array_equal(a, b) for a, b in zip(one, off)) > 40  # the filter did change frames


class _Shimmer:
    """A stand-in network, in process: each frame's negative plus noise drawn from the frame's own
    bytes (the same frame always gets the same picture, on any run). It counts the frames it is
    given; ``stop_at`` frames in, it waits for the chunk before to be recorded, then fails."""

    device = torch.device("cpu")
    precision = "shimmer"
    compiled = False
    compile_seconds = 0.0
    input_kind = "rgb"
    batch_size = 3

    def __init__(self, stop_at: int | None = None, record: Path | None = None):
        self.seen = 0
        self.stop_at, self.record = stop_at, record

    def __call__(self, frames: list) -> list:
        if self.stop_at is not None and self.seen + len(frames) > self.stop_at:
            assert _wait_for(lambda: any(self.record.parent.glob(f"*/*/{self.record.name}")), 60), "never recorded"
            raise StylempiError("stopped by the test")
        self.seen += len(frames)
        out = []
        for f in frames:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha1(f.tobytes()).digest()[:8], "little"))
            out.append(np.clip(255.0 - f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8))
        return out


@pytest.mark.parametrize("first_pending, stylized", [(6, 24), (7, 6 + 18)])
def test_a_warm_up_stylizes_nothing_before_a_cut_and_gives_the_same_frames(tmp_path, model, first_pending,
                                                                          stylized):
    """Chunks of 6 frames, a cut at frame 36 (chunk 6's first). A run stopped before chunk
    FIRST_PENDING resumes there, warming the filter up on the 24 frames before it: the network
    paints none of those before the cut (all of them for chunk 6, frames 36-41 for chunk 7), and
    every frame equals an uninterrupted run's. Lossless (CRF 0), so that any difference in the
    filter's frames shows, not only one that survives x264's quantizer."""
    from stylempi.job.run import run_job
    from stylempi.job.workfiles import record_name
    from stylempi.media.encoding import EncoderRequest
    from stylempi.options import RunOptions

    clip = shots_clip(tmp_path / "in.mp4", frames_a=36, frames_b=24, size=(96, 64))

    def job(out: Path, work: Path, stylizer: _Shimmer):
        options = RunOptions(input=str(clip), output=str(out), model=str(model), device="cpu", quiet=True,
                             chunk_frames=6, work_dir=str(work), encoder=EncoderRequest(crf=0))
        return run_job(options, stylizer_factory=lambda prepared, comm: stylizer)

    whole = _Shimmer()
    summary = job(tmp_path / "whole.mkv", tmp_path / "w1", whole)
    assert summary.chunks == 10 and whole.seen == 60  # one rank: every later warm-up reuses frames

    work = tmp_path / "w2"
    with pytest.raises(StylempiError, match="stopped by the test"):
        job(tmp_path / "resumed.mkv", work, _Shimmer(stop_at=6 * first_pending,
                                                      record=work / record_name(first_pending - 1)))
    rest = _Shimmer()
    summary = job(tmp_path / "resumed.mkv", work, rest)
    assert summary.reused_chunks == first_pending
    assert rest.seen == stylized, rest.seen  # the whole warm-up painted: 48 and 42
    warm = stylized - 6 * (10 - first_pending)  # painted only to warm the filter up: 0 and 6
    assert summary.warmup_frames == warm and summary.filter_s > 0
    assert f"; temporal filter {summary.filter_s:.1f} s and {warm} warm-up frame" in summary.line()
    whole_frames, resumed = decoded(tmp_path / "whole.mkv"), decoded(tmp_path / "resumed.mkv")
    assert len(resumed) == 60 and all(np.array_equal(a, b) for a, b in zip(whole_frames, resumed))
