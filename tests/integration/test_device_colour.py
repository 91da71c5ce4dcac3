"""The torch colour path on CPU tensors: the siting rank 0 infers, and PlanesStylizer's
pictures against the swscale path's (the GPU runs the same code on CUDA tensors)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

import clips
from stylempi.colour import matrices as colours
from stylempi.network.planes import PlanesStylizer, chroma_location
from stylempi.media import to_planes, to_rgb, to_yuv
from stylempi.network.stylize import NetworkStylizer

BT709 = colours.Colour(colours.BT709, colours.RANGE_LIMITED, colours.BT709, colours.BT709)


def _psnr(a: np.ndarray, b: np.ndarray, top: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(top ** 2 / mse)


def _bars(width: int = 96, height: int = 54) -> np.ndarray:
    """Sharp vertical and horizontal colour edges: chroma siting shows on them."""
    rgb = np.zeros((height, width, 3), np.uint8)
    palette = np.array([[235, 30, 30], [30, 200, 40], [40, 40, 220], [240, 240, 30], [20, 220, 220]], np.uint8)
    for i in range(width):
        rgb[:, i] = palette[(i // 7) % len(palette)]
    rgb[height // 2:] = rgb[height // 2:, ::-1]
    return rgb


def _yuv(rgb: np.ndarray, pix_fmt: str = "yuv420p") -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")


def test_the_siting_is_the_one_swscale_applies():
    """PyAV cannot say where a frame's chroma sits; swscale's own conversion tells. A frame from
    the encoder side (untagged: centred) and a decoded H.264 frame (left) are told apart."""
    untagged = _yuv(_bars())
    assert chroma_location(untagged, BT709) == "center"
    clip = clips.make_clip("/tmp/stylempi-siting.mp4", frames=1, size=(96, 54))
    with av.open(str(clip)) as container:
        decoded = next(container.decode(video=0))
    assert chroma_location(decoded, BT709) == "left"


def test_planes_stylizer_gives_the_swscale_paths_picture():
    """The same network through the torch conversions (planes in, planes out) and through
    swscale (RGB in, RGB out, then the encoder's YUV): the encoder gets planes within 45 dB,
    the rounding of the two conversions apart."""
    network = clips.test_network()
    frames = [_yuv(clips.picture(i, 96, 54)) for i in range(3)]
    cpu = torch.device("cpu")
    plain = NetworkStylizer(network, cpu, "fp32", 2)
    torch_path = PlanesStylizer(NetworkStylizer(network, cpu, "fp32", 2), BT709, BT709, "center")
    expected = plain([to_rgb(f, BT709) for f in frames])
    planes = torch_path([to_planes(f, BT709) for f in frames])
    assert len(planes) == 3 and all(p[0].shape == (54, 96) and p[1].shape == (27, 48) for p in planes)
    settings = SimpleNamespace(colour=BT709, pix_fmt="yuv420p")
    for want, got in zip(expected, planes):
        for a, b in zip(to_planes(to_yuv(want, settings), BT709), got):
            assert _psnr(a, b) >= 45


@pytest.mark.parametrize("depth, chroma", [(10, "420"), (8, "444")])
def test_planes_stylizer_keeps_depth_and_subsampling(depth, chroma):
    colour = colours.Colour(colours.BT709, colours.RANGE_LIMITED, colours.BT709, colours.BT709,
                            depth=depth, chroma=chroma)
    frame = _yuv(clips.picture(1, 64, 48), colour.pix_fmt())
    stylizer = PlanesStylizer(NetworkStylizer(clips.test_network(), torch.device("cpu"), "fp32", 2),
                              colour, colour)
    (y, u, v), = stylizer([to_planes(frame, colour)])
    assert y.dtype == (np.uint16 if depth > 8 else np.uint8)
    assert u.shape == ((24, 32) if chroma == "420" else (48, 64))
    assert int(y.max()) > 255 if depth > 8 else True
