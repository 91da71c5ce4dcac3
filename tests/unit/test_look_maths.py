"""The look of a job (stylempi.colour.look): stroke scale and kept colours, as pure arithmetic."""
from __future__ import annotations

import numpy as np
import pytest

from stylempi.colour.look import (MAX_SCALE, MIN_SCALE, Look, check_scale, keep_colors, luma, luma_coefficients,
                                  resize, scaled_size)
from stylempi.errors import UsageError


def test_the_scale_is_checked_at_both_ends():
    assert check_scale(MIN_SCALE) == MIN_SCALE and check_scale(MAX_SCALE) == MAX_SCALE
    for bad in (0, MIN_SCALE / 2, MAX_SCALE * 1.01, -1):
        with pytest.raises(UsageError, match="--style-scale"):
            check_scale(bad)


def test_scaled_sizes_round_and_never_vanish():
    assert scaled_size(1920, 1080, 0.5) == (960, 540)
    assert scaled_size(3, 3, 0.1) == (1, 1)


def test_a_plain_look_has_no_key_entry_and_no_description():
    assert Look().plain and Look().describe() == ""
    assert Look().as_dict() == {"style_scale": 1.0, "preserve_colors": None}
    kept = Look(scale=0.5, preserve_colors=True, matrix="bt601")
    assert not kept.plain and kept.describe() == "scale 0.5 colours kept (bt601)"
    assert tuple(kept.as_dict()["preserve_colors"]) == luma_coefficients("bt601")


def test_resize_keeps_flat_pictures_flat_and_depth():
    flat = [np.full((40, 60, 3), 77, np.uint8)]
    assert (resize(flat, (30, 20))[0] == 77).all() and resize(flat, (30, 20))[0].shape == (20, 30, 3)
    assert resize(flat, (60, 40))[0] is flat[0]
    assert resize([np.full((4, 4, 3), 60000, np.uint16)], (8, 8))[0].dtype == np.uint16


def chroma(rgb: np.ndarray, kr: float, kb: float) -> tuple[np.ndarray, np.ndarray]:
    y = luma(rgb, kr, kb)
    return (rgb[..., 2] - y) / (2 * (1 - kb)), (rgb[..., 0] - y) / (2 * (1 - kr))


def random_frames(count: int = 3, size: tuple[int, int] = (37, 23), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
def test_keep_colors_keeps_chroma_and_takes_luma(matrix):
    rng = np.random.default_rng(3)
    original = rng.integers(40, 216, (32, 48, 3), dtype=np.uint8)  # room for luma changes
    styled = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    kr, kb = luma_coefficients(matrix)
    out = keep_colors(original, styled, matrix).astype(np.float32)
    for a, b in zip(chroma(out, kr, kb), chroma(original.astype(np.float32), kr, kb)):
        assert np.abs(a - b).max() <= 0.51  # rounding to integers only
    base = original.astype(np.float32)
    want = np.clip(luma(styled, kr, kb) - luma(base, kr, kb), -base.min(axis=-1), 255 - base.max(axis=-1)) \
        + luma(base, kr, kb)
    assert np.abs(luma(out, kr, kb) - want).max() <= 0.51
    assert np.abs(luma(out, kr, kb) - luma(styled, kr, kb)).mean() < 15  # mostly the stylized luma


def test_keep_colors_never_changes_a_saturated_pixels_colour():
    original = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    styled = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    assert (keep_colors(original, styled) == original).all()


def test_matrix_names():
    assert luma_coefficients(None) == luma_coefficients("BT.709") == (0.2126, 0.0722)
    assert luma_coefficients("smpte170m") == (0.299, 0.114)
    with pytest.raises(UsageError):
        luma_coefficients("nonsense")


def test_scale_changes_what_the_network_sees_never_the_size_out():
    frames = random_frames(size=(101, 57))
    seen = []

    def network(batch):
        seen.extend(f.shape for f in batch)
        return [255 - f for f in batch]

    out = Look(scale=0.5).apply(network, frames)
    assert seen == [(28, 50, 3)] * 3 and scaled_size(101, 57, 0.5) == (50, 28)
    assert [f.shape for f in out] == [(57, 101, 3)] * 3 and all(f.dtype == np.uint8 for f in out)
    assert Look(scale=2.0).apply(lambda b: b, frames)[0].shape == (57, 101, 3)
    assert Look().apply(network, frames)[1].tolist() == (255 - frames[1]).tolist()  # scale 1: untouched
    flat = [np.full((40, 60, 3), 77, np.uint8)]
    assert (resize(flat, (30, 20))[0] == 77).all() and (resize(flat, (120, 80))[0] == 77).all()
