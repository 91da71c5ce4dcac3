"""The temporal filter in real jobs: the same frames on 1, 2 and 3 ranks, and a reset at a cut.

Real mpirun, real codecs, the real (tiny) network; clips generated here.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import clips
from conftest import stylempi

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


def run(*args, ranks=None):
    r = stylempi("run", *args, "--device", "cpu", "--compile", "off", "--quiet", ranks=ranks, timeout=RUN_TIMEOUT,
                 env={"OMPI_MCA_rmaps_base_oversubscribe": "1"})
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
