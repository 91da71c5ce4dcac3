"""Whole jobs on the torch colour path (``--convert torch``) on this CPU: the GPU frame path's
conversions, run where CI can see them. The same code runs on CUDA tensors on a GPU node
(tests/e2e/test_gpu.py)."""
from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest

import clips
import oracle
from conftest import stylempi

RUN_TIMEOUT = 300  # liveness deadline, not a speed check


def _run(clip, out, model, *extra, ranks=None):
    r = stylempi("run", clip, out, "--model", model, "--device", "cpu", "--precision", "fp32",
                 "--chunk-frames", "6", *extra, ranks=ranks, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return clips.save_test_model(tmp_path_factory.mktemp("model") / "m.pth")


def test_torch_colour_job_keeps_everything_for_any_n_and_matches_swscale(tmp_path, model):
    """VFR, B-frames and sound: verify passes, the summary names the path, one and two ranks
    give the same pictures, and they are the swscale path's pictures up to conversion rounding,
    which x264 turns into coding noise (the planes before encoding: docs/benchmarks.md,
    "YUV ↔ RGB in torch against swscale")."""
    clip = clips.make_clip(tmp_path / "in.mp4", frames=20, size=(96, 54), pts=clips.vfr_pts(20), audio_tracks=1,
                           gop=6)
    one = _run(clip, tmp_path / "n1.mp4", model, "--convert", "torch")
    assert "decode cpu, convert torch, encode libx264" in one.stdout, one.stdout
    _run(clip, tmp_path / "n2.mp4", model, "--convert", "torch", ranks=2)
    _run(clip, tmp_path / "swscale.mp4", model, "--temporal", "off")  # --convert torch runs without the filter
    assert oracle.compare(clip, tmp_path / "n1.mp4") == []
    assert oracle.frame_md5s(tmp_path / "n1.mp4") == oracle.frame_md5s(tmp_path / "n2.mp4")
    values = [_psnr(a, b) for a, b in zip(_frames(tmp_path / "n1.mp4"), _frames(tmp_path / "swscale.mp4"))]
    assert len(values) == 20 and sum(values) / 20 >= 32, values
    v = stylempi("verify", clip, tmp_path / "n1.mp4", timeout=RUN_TIMEOUT)
    assert v.returncode == 0 and json.loads(v.stdout)["ok"], v.stdout


@pytest.mark.parametrize("kind", ["hdr10-bit", "full-range", "odd-size"])
def test_torch_colour_job_keeps_depth_range_and_size(tmp_path, model, kind):
    """A 10-bit BT.2020 PQ input stays 10-bit and tagged; a full-range one full range; an odd
    size (written 4:4:4) keeps its size: verify checks each."""
    if kind == "hdr10-bit":
        clip = clips.colour_clip(tmp_path / "in.mkv", frames=8, size=(64, 48), codec="libx265",
                                 pix_fmt="yuv420p10le", matrix=9, range_=1, primaries=9, transfer=16)
    elif kind == "full-range":
        clip = clips.colour_clip(tmp_path / "in.mp4", frames=8, size=(64, 48), matrix=1, range_=2, primaries=1,
                                 transfer=1)
    else:
        clip = clips.make_clip(tmp_path / "in.mp4", frames=8, size=(67, 41))
    out = tmp_path / f"out{clip.suffix}"
    _run(clip, out, model, "--convert", "torch")
    v = stylempi("verify", clip, out, timeout=RUN_TIMEOUT)
    assert v.returncode == 0, v.stdout[-2000:] + v.stderr
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
        if kind == "hdr10-bit":
            assert frame.format.name == "yuv420p10le"
        if kind == "full-range":
            assert int(frame.color_range) == 2
        if kind == "odd-size":
            assert (frame.width, frame.height) == (67, 41)
