"""stylempi.colour.tensors against FFmpeg's conversions (stylempi.media.pixels), both ways.

The bar is 45 dB PSNR against swscale, on 8-bit RGB or planes (16-bit RGB for deep inputs),
on a noisy gradient picture (tests/clips.py) and on colour bars with 1-pixel strokes whose
edges fall on odd columns: smooth pictures hide chroma siting and filter errors, bars do not
(docs/benchmarks.md, "YUV ↔ RGB in torch against swscale", has the figures). swscale places chroma by
the frame's chroma location: frames from to_yuv are untagged (centred chroma), frames decoded
from H.264 say "left" (an in-memory lossless encode makes such frames of the same planes).
Every test runs on CUDA too where a GPU is present.
"""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import clips
from conftest import need_shared
from stylempi.colour.matrices import BT709, BT2020_NCL, RANGE_FULL, RANGE_LIMITED, SMPTE170M, Colour
from stylempi.media.encoding import EncodeSettings
from stylempi.media.pixels import TO_YUV, _flags, frame_colour, to_rgb, to_yuv
from stylempi.colour.tensors import planes_to_rgb, rgb_to_nv12, rgb_to_planes, split_nv12

BAR = 45.0
W, H = 100, 66

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.gpu)] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def colour(matrix: int, range_: int = RANGE_LIMITED, depth: int = 8, chroma: str = "420") -> Colour:
    return Colour(matrix=matrix, range=range_, primaries=matrix, transfer=BT709, depth=depth, chroma=chroma)


CASES = {"bt601": colour(SMPTE170M), "bt709": colour(BT709), "bt709-full": colour(BT709, RANGE_FULL),
         "bt2020-10bit": colour(BT2020_NCL, depth=10), "bt709-422": colour(BT709, chroma="422"),
         "bt709-444": colour(BT709, chroma="444")}


def bars(width: int, height: int) -> np.ndarray:
    """Colour bars whose edges fall on odd and even columns, with thin text-like strokes below."""
    levels = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
                       [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]], np.uint8)
    img = levels[np.arange(width) * 8 // width][None].repeat(height, 0)
    yy, xx = np.mgrid[0:height, 0:width]
    strokes = ((xx // 3 + yy // 5) % 7 == 0) & (yy > height // 2)
    img[strokes] = 255 - img[strokes]
    img[height // 3] = (200, 20, 60)
    return img


PICTURES = {"picture": lambda w, h: clips.picture(3, w, h), "bars": bars}


def left_tagged(frame: av.VideoFrame) -> av.VideoFrame:
    """The same planes as an H.264 decoder returns them: tagged with chroma location "left"."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, frame.format.name
    encoder.time_base, encoder.options = Fraction(1, 25), {"qp": "0", "preset": "ultrafast"}
    frame.pts = 0
    decoder = av.CodecContext.create("h264", "r")
    out = [f for packet in encoder.encode(frame) + encoder.encode(None) for f in decoder.decode(packet)]
    out += decoder.decode(None)
    assert [np.array_equal(a, b) for a, b in zip(planes(out[0]), planes(frame))] == [True] * 3
    return out[0]


def settings(c: Colour, width: int, height: int) -> EncodeSettings:
    return EncodeSettings(codec="libx264", pix_fmt=c.pix_fmt(), options=(), width=width, height=height,
                          time_base=Fraction(1, 25), sample_aspect_ratio=None, colour=c)


def deep(img: np.ndarray, c: Colour) -> np.ndarray:
    """The picture as the RGB that pixels.py hands over: 16-bit for deep colours."""
    return img.astype(np.uint16) * 257 if c.depth > 8 else img


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """A frame's planes without their row padding (an interleaved plane is as wide as its samples)."""
    dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
    per_plane = [sum(c.plane == i for c in frame.format.components) for i in range(len(frame.planes))]
    return [np.frombuffer(p, dtype).reshape(p.height, -1)[:, :p.width * n]
            for p, n in zip(frame.planes, per_plane)]


def tensors(arrays, device) -> list[torch.Tensor]:
    """(1,H,W) tensors; 16-bit samples as int32 (torch has no arithmetic on uint16)."""
    return [torch.from_numpy(a.astype(np.int32) if a.dtype == np.uint16 else a.copy())[None].to(device)
            for a in arrays]


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def rgb_psnr(out: torch.Tensor, ref: np.ndarray) -> float:
    """Our (1,3,H,W) 0..255 float against FFmpeg's HxWx3 RGB, on 8 or 16 bits as FFmpeg gave."""
    out = out[0].permute(1, 2, 0).cpu().numpy()
    if ref.dtype == np.uint16:
        return psnr(out * (65535 / 255), ref, 65535)
    return psnr(np.round(out), ref, 255)


def planes_psnr(ours, theirs, depth: int) -> float:
    """The worst plane's PSNR (a perfect luma must not hide a chroma error)."""
    return min(psnr(a.cpu().numpy(), b, 2 ** depth - 1) for a, b in zip(ours, theirs))


def rgb_tensor(rgb: np.ndarray, device) -> torch.Tensor:
    """HxWx3 uint8/uint16 RGB as the network's (1,3,H,W) float 0..255."""
    scale = 255 / 65535 if rgb.dtype == np.uint16 else 1.0
    return torch.from_numpy(rgb.astype(np.float32) * np.float32(scale)).permute(2, 0, 1)[None].to(device)


@pytest.mark.parametrize("siting", ["unspecified", "left"])
@pytest.mark.parametrize("picture", PICTURES)
@pytest.mark.parametrize("case", CASES)
def test_to_rgb_matches_ffmpeg(case, picture, siting, device):
    c = CASES[case]
    frame = to_yuv(deep(PICTURES[picture](W, H), c), settings(c, W, H))
    frame = left_tagged(frame) if siting == "left" else frame
    out = planes_to_rgb(*tensors(planes(frame), device), c, chroma_location=siting)
    assert out.shape == (1, 3, H, W) and out.dtype == torch.float32 and out.device.type == device.type
    assert rgb_psnr(out, to_rgb(frame, c)) >= BAR


@pytest.mark.parametrize("picture", PICTURES)
def test_p010_is_the_planar_frame(picture, device):
    """The 10-bit frame as NVDEC hands it over (P010: UV interleaved, values in the high bits)."""
    c = CASES["bt2020-10bit"]
    frame = to_yuv(deep(PICTURES[picture](W, H), c), settings(c, W, H))
    y, u, v = tensors(planes(frame), device)
    uv = (torch.stack((u, v), -1).flatten(-2) << 6).to(torch.uint16)
    out = planes_to_rgb((y << 6).to(torch.uint16), *split_nv12(uv), c, msb_aligned=True,
                        chroma_location="unspecified")
    planar = planes_to_rgb(y, u, v, c, chroma_location="unspecified")
    torch.testing.assert_close(out, planar, rtol=0, atol=1e-4)
    assert rgb_psnr(out, to_rgb(frame, c)) >= BAR


@pytest.mark.parametrize("picture", PICTURES)
@pytest.mark.parametrize("case", CASES)
def test_to_yuv_matches_ffmpeg(case, picture, device):
    c = CASES[case]
    rgb = deep(PICTURES[picture](W, H), c)
    ours = rgb_to_planes(rgb_tensor(rgb, device), c)
    assert [p.dtype for p in ours] == [torch.uint8 if c.depth == 8 else torch.int16] * 3
    assert planes_psnr([p[0] for p in ours], planes(to_yuv(rgb, settings(c, W, H))), c.depth) >= BAR


@pytest.mark.parametrize("chroma", ["420", "422"])
def test_odd_sizes(chroma, device):
    """Decoding stretches chroma over an odd picture as swscale does; encoding refuses."""
    c = colour(BT709, chroma=chroma)
    frame = to_yuv(bars(W - 1, H - 1), settings(c, W - 1, H - 1))
    y, u, v = tensors(planes(frame), device)
    assert rgb_psnr(planes_to_rgb(y, u, v, c, chroma_location="unspecified"), to_rgb(frame, c)) >= BAR
    with pytest.raises(ValueError, match="do not fit"):
        planes_to_rgb(y, u[:, :-1], v[:, :-1], c)
    with pytest.raises(ValueError, match="99x65"):
        rgb_to_planes(torch.zeros(1, 3, H - 1, W - 1, device=device), c)


@pytest.mark.parametrize("depth", [8, 10])
def test_nv12_matches_ffmpeg(depth, device):
    """rgb_to_nv12 against swscale's own NV12 / P010 (the layout NVENC takes)."""
    c = colour(BT709, depth=depth)
    rgb = deep(bars(W, H), c)
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24" if depth == 8 else "rgb48le").reformat(
        format="nv12" if depth == 8 else "p010le", dst_colorspace=c.sws_matrix,
        dst_color_range=c.sws_range, interpolation=_flags(TO_YUV))
    y, uv = rgb_to_nv12(rgb_tensor(rgb, device), c)
    assert y.dtype == uv.dtype == (torch.uint8 if depth == 8 else torch.uint16)
    assert y.shape == (1, H, W) and uv.shape == (1, H // 2, W)
    assert planes_psnr([y[0], uv[0]], planes(ref), 16 if depth > 8 else 8) >= BAR
    torch.testing.assert_close(planes_to_rgb(y, *split_nv12(uv), c, msb_aligned=depth > 8),
                               planes_to_rgb(*rgb_to_planes(rgb_tensor(rgb, device), c), c))


KNOWN = {  # (range, depth): black, white, grey 128 as (Y, Cb, Cr), and BT.709 red
    (RANGE_LIMITED, 8): [(16, 128, 128), (235, 128, 128), (126, 128, 128), (63, 102, 240)],
    (RANGE_FULL, 8): [(0, 128, 128), (255, 128, 128), (128, 128, 128), (54, 99, 255)],
    (RANGE_LIMITED, 10): [(64, 512, 512), (940, 512, 512), (504, 512, 512), (250, 409, 960)],
    (RANGE_FULL, 10): [(0, 512, 512), (1023, 512, 512), (514, 512, 512), (217, 395, 1023)],
}


@pytest.mark.parametrize("range_, depth", KNOWN)
def test_known_colours_exact(range_, depth, device):
    c = colour(BT709, range_, depth, chroma="444")
    rgb = torch.tensor([[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0]],
                       dtype=torch.float32, device=device).T.reshape(1, 3, 1, 4)
    ours = rgb_to_planes(rgb, c)
    assert torch.stack(ours, -1)[0, 0].tolist() == [list(k) for k in KNOWN[range_, depth]]
    back = planes_to_rgb(*ours, c)[0, :, 0].T
    torch.testing.assert_close(back[:2], rgb[0, :, 0, :2].T, rtol=0, atol=1e-3)  # black, white exact
    assert (back[2] - 128).abs().max() < 256 / 2 ** depth  # grey within a code value
    assert (back[3] - rgb[0, :, 0, 3]).abs().max() < 1.6


@pytest.mark.parametrize("range_", [RANGE_LIMITED, RANGE_FULL])
@pytest.mark.parametrize("depth", [8, 10])
def test_round_trip_close_to_identity(depth, range_, device):
    """4:4:4 (subsampling aside): RGB -> planes -> RGB is off by no more than rounding the planes
    can explain: half a luma step plus half a chroma step times B's Cb coefficient (1.86)."""
    c = colour(BT709, range_, depth, chroma="444")
    ys, cs = (219, 224) if range_ == RANGE_LIMITED else (255, 255)
    worst = (255 / ys + 1.86 * 255 / cs) / 2 / 2 ** (depth - 8) + 1e-3
    for img in (clips.picture(5, W, H), bars(W, H)):
        rgb = rgb_tensor(img, device)
        error = planes_to_rgb(*rgb_to_planes(rgb, c), c) - rgb
        assert error.abs().max() <= worst and error.abs().mean() <= worst / 3


@pytest.mark.parametrize("wrong", ["bt601 for bt709", "full for limited", "centred for left"])
def test_a_wrong_matrix_range_or_siting_fails_the_bar(wrong, device):
    """The comparisons can fail: the wrong matrix, range or chroma siting falls below 45 dB."""
    right = CASES["bt709"]
    bad = {"bt601 for bt709": colour(SMPTE170M),
           "full for limited": colour(BT709, RANGE_FULL)}.get(wrong, right)
    img = bars(W, H)
    frame = left_tagged(to_yuv(img, settings(right, W, H)))
    siting = "unspecified" if wrong.startswith("centred") else "left"
    ours = planes_to_rgb(*tensors(planes(frame), device), bad, chroma_location=siting)
    assert rgb_psnr(ours, to_rgb(frame, right)) < BAR
    if bad is not right:
        ours = rgb_to_planes(rgb_tensor(img, device), bad)
        assert planes_psnr([p[0] for p in ours], planes(frame), 8) < BAR


@pytest.mark.parametrize("clip", ["flower.mp4", "cityCC0.mpg", "cockatoo.mp4"])
def test_real_clip_frame(clip, device):
    """A real decoded frame, both ways, with the colour a job would decide for it (ffprobe
    says chroma_location=left for the 4:2:0 clips, the default)."""
    path = need_shared("media", clip)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    c, _ = frame_colour(frame, frame.width, frame.height, frame.format.name, clip)
    ref = to_rgb(frame, c)
    assert rgb_psnr(planes_to_rgb(*tensors(planes(frame), device), c), ref) >= BAR
    if frame.width % 2 == 0 and frame.height % 2 == 0 or c.chroma == "444":
        rgb = rgb_tensor(ref, device)
        theirs = planes(to_yuv(ref, settings(c, frame.width, frame.height)))
        assert planes_psnr([p[0] for p in rgb_to_planes(rgb, c)], theirs, c.depth) >= BAR
