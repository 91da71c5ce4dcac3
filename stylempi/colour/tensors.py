"""YUV <-> RGB in torch, for frames that stay on the GPU (NVDEC in, NVENC out).

The same conversions as :func:`stylempi.media.pixels.to_rgb` and ``to_yuv`` (swscale on the
CPU), written as plain, device-agnostic torch so that a GPU rank and a CPU rank of one job
produce the same pictures (stylempi.network.planes runs them around the network)::

    decoded y, u, v (int) ──planes_to_rgb──► float RGB (N,3,H,W), 0..255 ──network──┐
    encoder's y, u, v (int) ◄──rgb_to_planes── float RGB, 0..255 ◄──────────────────┘
                  (job's matrix + range; chroma resampled the way swscale resamples it)

:func:`split_nv12`, ``msb_aligned`` and :func:`rgb_to_nv12` read and write the semi-planar
layouts themselves (NVDEC's NV12/P010 out, NVENC's in), tested against swscale's, for feeding
NVENC CUDA frames directly; jobs do not use them yet (media.nvdec splits NVDEC's planes as it
copies them off the decoder's surfaces, and NVENC is fed host planes).

Chroma is resampled as swscale resamples it with the flags pixels.py uses (read off impulse
responses): the simplest filter that matches it within 45 dB on sharp edges, since torch's own
bicubic, bilinear or the wrong siting do not (docs/benchmarks.md, "YUV ↔ RGB in torch against swscale"):

* up (to RGB): Keys' cubic with a = -0.6 (swscale's BICUBIC: B = 0, C = 0.6), 4 taps, with the
  chroma where the frame's chroma location puts it. swscale reads that tag off each decoded
  frame: ``left`` (cosited with the left luma column, centred between rows in 4:2:0) is what
  H.264 and MPEG-2 decoders report, hence the default; an untagged frame is centred both
  ways. PyAV does not expose the tag, so a caller passes it (ffprobe's ``chroma_location``).
  Odd sizes (chroma ceil(W/2) wide) are handled as swscale does: chroma stretched over the picture.
* down (to YUV), as ``to_yuv``: limited range as swscale, pairs of columns averaged, then for
  4:2:0 the same cubic widened to 8 taps down the rows; full range as
  :func:`stylempi.colour.matrices.full_range_planes`, 2x2 (4:2:2: 1x2) box averages. Both centre the chroma
  (swscale writes untagged frames). Odd sizes in 4:2:0 or 4:2:2 are refused: jobs encode them 4:4:4.

Arithmetic is float32 multiply-adds, never a matmul or 1x1 convolution: those run in TF32 (cuDNN's
default) or bf16 under autocast and would lose 10-bit codes. Levels follow the standards exactly
(10-bit limited white is 940), where swscale's 16-bit RGB paths are slightly off.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .matrices import LUMA, RANGE_FULL, Colour

#: swscale's bicubic: Keys' cubic convolution with a = -0.6.
KEYS_A = -0.6

#: Where each chroma location (AVChromaLocation, by ffprobe's name) puts the first chroma sample,
#: across and down, in luma samples from the first luma sample; "unspecified" is swscale's centre.
CHROMA_LOCATIONS = {"unspecified": (0.5, 0.5), "left": (0.0, 0.5), "center": (0.5, 0.5),
                    "topleft": (0.0, 0.0), "top": (0.5, 0.0), "bottomleft": (0.0, 1.0), "bottom": (0.5, 1.0)}


def _levels(colour: Colour, depth: int) -> tuple[float, float, float, float]:
    """Code values of black, the luma span, zero chroma and the chroma span at ``depth`` bits."""
    if colour.range == RANGE_FULL:
        top = 2.0 ** depth - 1
        return 0.0, top, 2.0 ** (depth - 1), top
    s = 2.0 ** (depth - 8)
    return 16 * s, 219 * s, 128 * s, 224 * s


def _ycbcr_from_rgb(colour: Colour) -> torch.Tensor:
    """Rows Y (0..1), Cb, Cr (-0.5..0.5) from R, G, B (0..1), in float64."""
    kr, kb = LUMA[colour.matrix]
    kg = 1 - kr - kb
    return torch.tensor([[kr, kg, kb],
                         [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5],
                         [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)]], dtype=torch.float64)


def _mix(a, b, c, weights, offset, out=None) -> torch.Tensor:
    """``w0*a + w1*b + w2*c + offset`` in elementwise float32 (exact whatever TF32 or autocast say)."""
    out = torch.mul(a, weights[0], out=out)
    return out.add_(b, alpha=weights[1]).add_(c, alpha=weights[2]).add_(offset)


@functools.lru_cache(maxsize=32)
def _taps(n: int, size: int, device: torch.device, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights, (taps, size) each, of swscale's bicubic from n samples to size.

    Output i sits at source (i + 0.5) * n / size - 0.5 + shift (centres aligned, then moved by
    ``shift`` source samples); a shrink widens the kernel by the ratio; edge samples repeat.
    """
    ratio = n / size
    width = max(1.0, ratio)
    src = (torch.arange(size, dtype=torch.float64) + 0.5) * ratio - 0.5 + shift
    reach = math.ceil(2 * width)
    pos = src.floor()[None] + torch.arange(1 - reach, reach + 1, dtype=torch.float64)[:, None]
    x = (src[None] - pos).abs() / width
    a = KEYS_A
    w = torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    torch.where(x < 2, a * (((x - 5) * x + 8) * x - 4), torch.zeros_like(x)))
    w /= w.sum(0)
    return pos.clamp(0, n - 1).long().to(device), w.float().to(device)


def _resample(x: torch.Tensor, dim: int, size: int, shift: float = 0.0) -> torch.Tensor:
    """``x`` (float) resampled to ``size`` along ``dim`` with swscale's bicubic."""
    if x.shape[dim] == size:
        return x
    index, weights = _taps(x.shape[dim], size, x.device, shift)
    # Leading dimensions flattened: on the CPU, index_select along the last of four dimensions
    # is 8x slower than along the second of two.
    flat = x.flatten(0, dim - 1)
    shape = (size,) + (1,) * (flat.dim() - 2)
    out = flat.index_select(1, index[0]).mul_(weights[0].view(shape))
    for i, w in zip(index[1:], weights[1:]):
        out.addcmul_(flat.index_select(1, i), w.view(shape))
    return out.unflatten(0, x.shape[:dim])


def split_nv12(uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """U and V views of an interleaved chroma plane, (N,H/2,W/2,2) or (N,H/2,W) (NV12, P010)."""
    if uv.dim() == 3:
        uv = uv.unflatten(-1, (-1, 2))
    return uv[..., 0], uv[..., 1]


def planes_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, colour: Colour, *,
                  msb_aligned: bool = False, chroma_location: str = "left") -> torch.Tensor:
    """Integer planes of a batch, y (N,H,W), u and v (N,H or ceil(H/2),W or ceil(W/2)), of
    ``colour.depth`` bits (``msb_aligned``: in the high bits of 16, as P010) -> float32 RGB
    (N,3,H,W) on their device, 0..255 (deep inputs too, as fractions), clamped.
    ``chroma_location`` is the frame's (a key of :data:`CHROMA_LOCATIONS`)."""
    n, h, w = y.shape
    if u.shape != v.shape or u.shape[0] != n or u.shape[1] not in (h, (h + 1) // 2) \
            or u.shape[2] not in (w, (w + 1) // 2):
        raise ValueError(f"chroma planes {tuple(u.shape)} and {tuple(v.shape)} do not fit "
                         f"luma {tuple(y.shape)}")
    unit = 2.0 ** (16 - colour.depth) if msb_aligned else 1.0
    y0, ys, c0, cs = (level * unit for level in _levels(colour, colour.depth))
    across, down = CHROMA_LOCATIONS[chroma_location]
    uv = torch.empty((n, 2, *u.shape[1:]), dtype=torch.float32, device=y.device)
    uv[:, 0], uv[:, 1] = u, v  # converted as copied (torch has few kernels for uint16)
    uv = _resample(uv, 2, h, (0.5 - down) / 2)
    uv = _resample(uv, 3, w, (0.5 - across) / 2)
    rgb = torch.empty((n, 3, h, w), dtype=torch.float32, device=y.device)
    luma = y.float()
    for c, (from_y, from_cb, from_cr) in enumerate(torch.linalg.inv(_ycbcr_from_rgb(colour)).tolist()):
        weights = (255 * from_y / ys, 255 * from_cb / cs, 255 * from_cr / cs)
        _mix(luma, uv[:, 0], uv[:, 1], weights, -weights[0] * y0 - (weights[1] + weights[2]) * c0,
             out=rgb[:, c])
    return rgb.clamp_(0, 255)


def rgb_to_planes(rgb: torch.Tensor, colour: Colour, chroma: str | None = None,
                  depth: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float RGB (N,3,H,W), 0..255 -> Y, U, V planes of ``depth`` bits (default the colour's),
    rounded to nearest: uint8 for 8 bits, int16 deeper (``.view(torch.uint16)`` or numpy's
    ``.view(np.uint16)`` gives an encoder's samples for free), int32 above 15 bits."""
    chroma, depth = chroma or colour.chroma, depth or colour.depth
    n, _, h, w = rgb.shape
    rows, cols = {"420": (2, 2), "422": (1, 2), "444": (1, 1)}[chroma]
    if h % rows or w % cols:
        raise ValueError(f"a {w}x{h} picture cannot be 4:{chroma[1]}:{chroma[2]}: "
                         "odd sizes are encoded 4:4:4")
    y0, ys, c0, cs = _levels(colour, depth)
    matrix = _ycbcr_from_rgb(colour).tolist()
    r, g, b = rgb.float().unbind(1)  # a bf16 network output would round 10-bit codes
    y = _mix(r, g, b, [k * ys / 255 for k in matrix[0]], y0)
    uv = torch.empty((n, 2, h, w), dtype=torch.float32, device=rgb.device)
    for i, row in enumerate(matrix[1:]):
        _mix(r, g, b, [k * cs / 255 for k in row], c0, out=uv[:, i])
    if cols == 2 and colour.range == RANGE_FULL:
        uv = F.avg_pool2d(uv, (rows, cols))
    elif cols == 2:
        uv = _resample(F.avg_pool2d(uv, (1, 2)), 2, h // rows)
    top = 2 ** depth - 1
    dtype = torch.uint8 if depth <= 8 else torch.int16 if depth <= 15 else torch.int32
    return tuple(p.round_().clamp_(0, top).to(dtype) for p in (y, *uv.unbind(1)))


def rgb_to_nv12(rgb: torch.Tensor, colour: Colour) -> tuple[torch.Tensor, torch.Tensor]:
    """Float RGB (N,3,H,W), 0..255 -> Y (N,H,W) and interleaved UV (N,H/2,W) 4:2:0, as NVENC
    takes them: NV12 (uint8) for 8 bits, else P010 (10 bits) or P016 style, ``colour.depth``
    bits in the high bits of torch.uint16."""
    y, u, v = rgb_to_planes(rgb, colour, "420")
    uv = torch.stack((u, v), -1).flatten(-2)
    if colour.depth <= 8:
        return y, uv
    shift = 16 - colour.depth
    return tuple((p.to(torch.int32) << shift).to(torch.uint16) for p in (y, uv))
