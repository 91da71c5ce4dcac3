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


def test_matrix_names_forgive_spelling_and_refuse_unknown_ones():
    assert luma_coefficients("BT.709") == luma_coefficients("bt709") == luma_coefficients(None)
    assert luma_coefficients((0.3, 0.1)) == (0.3, 0.1)
    with pytest.raises(UsageError, match="unknown colour matrix"):
        luma_coefficients("bt9999")


def test_kept_colours_take_the_styled_luma_and_keep_the_original_chroma():
    rng = np.random.default_rng(1)
    original = rng.integers(100, 141, (6, 5, 3), dtype=np.uint8)  # luma moves by < 60: nothing clips
    styled = rng.integers(60, 181, (6, 5, 3), dtype=np.uint8)
    kept = keep_colors(original, styled, "bt709")
    kr, kb = luma_coefficients("bt709")
    chroma = lambda rgb: rgb.astype(np.float32) - luma(rgb, kr, kb)[..., None]  # noqa: E731
    assert np.abs(luma(kept, kr, kb) - luma(styled, kr, kb)).max() <= 1
    assert np.abs(chroma(kept) - chroma(original)).max() <= 1
    bright = keep_colors(np.full((1, 1, 3), (250, 10, 10), np.uint8), np.full((1, 1, 3), 255, np.uint8))
    assert bright.max() == 255 and bright[0, 0, 1] == bright[0, 0, 2]  # cut short at 255: hue kept
    assert keep_colors(original.astype(np.uint16) * 257, styled.astype(np.uint16) * 257).dtype == np.uint16


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
