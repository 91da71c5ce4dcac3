"""The planes the torch colour path takes from the decoder and gives the encoder.

``to_planes`` must hand over a decoded frame's samples untouched (the torch
conversion is judged against FFmpeg's on the same samples), whatever layout the
decoder gave; ``planes_frame`` must put planes back exactly.
"""
from __future__ import annotations

import av
import numpy as np
import pytest

import clips
from stylempi.colour import matrices as colours
from stylempi.media import planes_frame, to_planes


def _colour(chroma: str, depth: int) -> colours.Colour:
    return colours.Colour(colours.BT709, colours.RANGE_LIMITED, colours.BT709, colours.BT709, depth=depth,
                          chroma=chroma)


def _yuv_frame(pix_fmt: str, width: int = 66, height: int = 38) -> av.VideoFrame:
    rgb = av.VideoFrame.from_ndarray(clips.picture(3, width, height), format="rgb24")
    return rgb.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")


@pytest.mark.parametrize("pix_fmt, chroma, depth", [("yuv420p", "420", 8), ("yuv422p", "422", 8),
                                                    ("yuv444p", "444", 8), ("yuv420p10le", "420", 10)])
def test_planes_are_the_decoded_samples_and_go_back_exactly(pix_fmt, chroma, depth):
    frame = _yuv_frame(pix_fmt)
    y, u, v = to_planes(frame, _colour(chroma, depth))
    assert y.shape == (38, 66)
    assert u.shape == v.shape == {"420": (19, 33), "422": (38, 33), "444": (38, 66)}[chroma]
    assert y.dtype == (np.uint8 if depth == 8 else np.uint16)
    if depth == 8:  # to_ndarray's own layout for planar 8-bit formats: the planes one after another
        flat = frame.to_ndarray().reshape(-1)
        assert np.array_equal(np.concatenate([y.ravel(), u.ravel(), v.ravel()]), flat)
    back = planes_frame([y, u, v], pix_fmt)
    assert [p.tolist() for p in to_planes(back, _colour(chroma, depth))] == [y.tolist(), u.tolist(), v.tolist()]


def test_other_layouts_are_repacked_without_changing_a_sample():
    """NV12 (what a hardware decoder hands to system memory) and the full-range ``yuvj``
    name give the same planes as the planar frame they hold."""
    planar = _yuv_frame("yuv420p")
    colour = _colour("420", 8)
    expected = [p.tolist() for p in to_planes(planar, colour)]
    nv12 = planar.reformat(format="nv12")
    assert [p.tolist() for p in to_planes(nv12, colour)] == expected
    full = colours.Colour(colours.BT709, colours.RANGE_FULL, colours.BT709, colours.BT709)
    yuvj = av.VideoFrame(66, 38, "yuvj420p")
    for plane, data in zip(yuvj.planes, to_planes(planar, colour)):
        padded = np.zeros((data.shape[0], plane.line_size), np.uint8)
        padded[:, :data.shape[1]] = data
        plane.update(padded.tobytes())
    assert [p.tolist() for p in to_planes(yuvj, full)] == expected
