"""The temporal-stability figure (E_warp) on motion where the answer is known.

A smooth random texture seen through a window that moves by whole pixels is a
video whose true flow is known; warping each frame onto the next then
reproduces it exactly wherever the content was visible in both, so E_warp
must be ~0, and independent noise of standard deviation s must raise it by
2 s^2 (the noise of the frame plus that of the warped previous frame).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import stylempi

cv2 = pytest.importorskip("cv2", reason="the stability figure needs opencv-python-headless (the [test] extra)")

from stylempi.tools.stability import analysis_size, valid_mask, warping_error  # noqa: E402


def panning_frames(count: int = 6, step: tuple[int, int] = (2, 1), size: tuple[int, int] = (128, 96),
                   seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w, h = size
    big = cv2.GaussianBlur(rng.random((h + 40, w + 60, 3)).astype(np.float32), (0, 0), 3)
    big = ((big - big.min()) / (big.max() - big.min()) * 255).round().astype(np.uint8)
    dx, dy = step
    return [big[5 + t * dy:5 + t * dy + h, 5 + t * dx:5 + t * dx + w].copy() for t in range(count)]


def test_whole_pixel_motion_warps_exactly():
    frames = panning_frames()
    result = warping_error(frames)
    assert result.input < 1e-5 and result.output == result.input
    assert result.coverage > 0.9  # the mask keeps nearly everything on a clean pan


def test_noise_raises_it_by_twice_the_noise_power():
    frames = panning_frames()
    rng = np.random.default_rng(1)
    sigma = 0.02
    noisy = [np.clip(f + rng.normal(0, sigma * 255, f.shape), 0, 255).round().astype(np.uint8) for f in frames]
    result = warping_error(frames, noisy)
    assert result.output == pytest.approx(2 * sigma ** 2, rel=0.1)
    assert result.ratio > 100


def test_strokes_that_do_not_follow_the_motion_are_caught():
    frames = panning_frames()
    still = [frames[0]] * len(frames)  # an "output" frozen while the scene moves
    assert warping_error(frames, still).output > 50 * warping_error(frames).input


def test_input_against_itself_has_ratio_one():
    frames = panning_frames(step=(-1, 3), seed=2)
    copies = [f.copy() for f in frames]
    result = warping_error(frames, copies)
    assert result.ratio == pytest.approx(1.0)


def test_mask_drops_pixels_the_backward_flow_cannot_explain():
    h, w = 40, 50
    backward = np.zeros((h, w, 2), np.float32)
    backward[..., 0] = 3.0
    forward = -backward.copy()
    mask = valid_mask(forward, backward)
    assert not mask[:, w - 3:].any()  # they come from outside frame t-1
    assert mask[:, :w - 3].all()
    forward[10:20, 10:20] = 0.0  # the forward flow does not undo the backward one: occluded
    mask = valid_mask(forward, backward)
    assert not mask[10:20, 7:17].any() and mask[30:, :40].all()  # sampled at x + 3


def test_analysis_size_keeps_aspect_and_even_sizes():
    assert analysis_size(1280, 720, 360) == (640, 360)
    assert analysis_size(720, 405, 360) == (640, 360)
    assert analysis_size(320, 180, 360) == (320, 180)
    assert analysis_size(1280, 720, None) == (1280, 720)


@pytest.mark.slow
def test_verify_stability_reports_the_figure(tmp_path):
    from clips import make_clip
    clip = make_clip(tmp_path / "in.mp4", frames=12, size=(96, 64))
    proc = stylempi("verify", clip, clip, "--stability", "--stability-frames", "8")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["stability"]
    assert report["frames"] == 8 and report["ratio"] == pytest.approx(1.0)
    assert report["farneback"]["ratio"] == pytest.approx(1.0) and report["style_strength"] == 0
    proc = stylempi("verify", clip, clip, "--stability", "--stability-frames", "8", "--stability-reference", clip)
    relative = json.loads(proc.stdout)["stability"]["relative_to_reference"]
    assert relative["sharpness"] == pytest.approx(1.0) and relative["e_warp"] == pytest.approx(1.0)
    bad = stylempi("verify", clip, clip, "--stability", "--stability-frames", "1")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("stylempi: error: --stability-frames")
