"""The colour a job keeps (stylempi.colour.matrices), decided from what a first frame says."""
from __future__ import annotations

import pytest

from stylempi.colour import matrices as colours
from stylempi.colour.matrices import Colour, decide, guess_matrix

BT709, SMPTE170M = 1, 6


def _decide(pix_fmt="yuv420p", matrix=2, range_=0, primaries=2, transfer=2, depth=8, chroma="420", **kw):
    return decide(1920, 1080, pix_fmt, matrix=matrix, range_=range_, primaries=primaries, transfer=transfer,
                  depth=depth, chroma=chroma, **kw)


def test_untagged_pictures_get_what_players_assume():
    assert guess_matrix(1920, 1080) == BT709 and guess_matrix(720, 576) == SMPTE170M
    c = _decide()
    assert (c.matrix, c.primaries, c.transfer, c.range, c.guessed) == (BT709, BT709, BT709, colours.RANGE_LIMITED,
                                                                       True)


def test_tags_that_are_given_are_kept_and_yuvj_means_full_range():
    c = _decide(matrix=SMPTE170M, primaries=SMPTE170M, transfer=SMPTE170M)
    assert (c.matrix, c.primaries, c.transfer, c.guessed) == (SMPTE170M, SMPTE170M, SMPTE170M, False)
    assert _decide("yuvj420p").range == colours.RANGE_FULL


def test_rgb_inputs_become_tagged_444_and_odd_subsamplings_444():
    assert _decide("gbrp", is_rgb=True).chroma == "444"
    assert _decide(chroma="other").chroma == "444"


def test_constant_luminance_bt2020_is_refused():
    with pytest.raises(ValueError, match="constant-luminance"):
        _decide(matrix=colours.BT2020_CL)


def test_formats_and_names():
    deep = Colour(BT709, colours.RANGE_LIMITED, BT709, BT709, depth=10, chroma="422")
    assert deep.pix_fmt() == "yuv422p10le" and deep.pix_fmt("420", 8) == "yuv420p" and deep.rgb_format == "rgb48le"
    assert deep.describe()["matrix"] == "bt709" and deep.describe()["range"] == "tv"
    assert colours.chroma_of(1, 1) == "420" and colours.chroma_of(1, 0) == "422" and colours.chroma_of(2, 2) == "other"


def test_mastering_metadata_round_trips_to_x265s_syntax():
    values = [34000, 50000, 16000, 50000, 13250, 50000, 7500, 50000, 15635, 50000, 16450, 50000, 3127, 10000,
              3290, 10000, 50, 10000, 10000000, 10000, 1, 1][:22]
    text = colours.mastering_display(values)
    assert text is not None and text.startswith("G(")
    assert set(colours.parse_mastering(text)) == {"G", "B", "R", "WP", "L"}
    assert colours.mastering_display(values[:20] + [0, 1]) is None  # no primaries: nothing to say
