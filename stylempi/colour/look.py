"""What a frame looks like around the network: stroke size and original colours.

* **Style scale.** The network's receptive field is fixed in pixels, so the
  same style paints tiny strokes on a 4K frame and big ones on 360p. With
  ``--style-scale S`` the network sees the frame resized by S and its output
  is resized back to the exact frame size: strokes grow by 1/S, and below 1
  the network has S^2 of the pixels to paint (a quarter at 0.5).
* **Preserve colours.** Only the stylized *luma* is kept; the chroma stays
  the input's. With Y = Kr R + Kg G + Kb B (Kg = 1 - Kr - Kb) and chroma
  linear in R - Y and B - Y, adding the same amount to R, G and B changes Y
  by that amount and leaves both chroma components as they were, so the
  result is ``input + (Y_styled - Y_input)`` on every channel. Where that
  would leave [0, 255] the luma change is cut short rather than the
  channels clipped, so the chroma stays exact (up to rounding) and a
  saturated pixel keeps its colour at the cost of some stroke contrast.
  Kr and Kb come from the input's colour matrix (BT.601, BT.709, BT.2020);
  the range (full or limited) scales Y and chroma alike and does not matter.

Everything is per frame and per pixel, with no sums across threads, so the
pixels do not depend on how many ranks or threads compute them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from .matrices import LUMA, MATRIX_NAMES

#: Luma coefficients (Kr, Kb) of the colour matrices, by the names FFmpeg gives them (and two aliases).
LUMA_COEFFICIENTS: dict[str, tuple[float, float]] = {
    **{MATRIX_NAMES[k]: v for k, v in LUMA.items()}, "bt601": LUMA[5], "bt2020": LUMA[9]}
DEFAULT_MATRIX = "bt709"
MIN_SCALE, MAX_SCALE = 0.1, 4.0


def luma_coefficients(matrix: str | tuple[float, float] | None = None) -> tuple[float, float]:
    """(Kr, Kb) of a matrix name (``bt709`` when None), or a pair given as it is."""
    if matrix is None:
        matrix = DEFAULT_MATRIX
    if isinstance(matrix, tuple):
        return float(matrix[0]), float(matrix[1])
    key = matrix.lower().replace("-", "").replace(".", "").replace("_", "")
    if key not in LUMA_COEFFICIENTS:
        raise UsageError(f"unknown colour matrix {matrix} (known: {', '.join(sorted(LUMA_COEFFICIENTS))})")
    return LUMA_COEFFICIENTS[key]


def luma(rgb: np.ndarray, kr: float, kb: float) -> np.ndarray:
    """Y of HxWx3 RGB, same scale as the input, float32."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return kr * rgb[..., 0] + (1.0 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]


def keep_colors(original: np.ndarray, styled: np.ndarray,
                matrix: str | tuple[float, float] | None = None) -> np.ndarray:
    """``original``'s chroma with ``styled``'s luma, as HxWx3 RGB of ``original``'s type (uint8, or
    uint16 for deep inputs; see the module docstring)."""
    kr, kb = luma_coefficients(matrix)
    top = float(np.iinfo(original.dtype).max)
    base = np.asarray(original, dtype=np.float32)
    delta = luma(styled, kr, kb) - luma(base, kr, kb)
    delta = np.clip(delta, -base.min(axis=-1), top - base.max(axis=-1))
    return np.clip(np.rint(base + delta[..., None]), 0, top).astype(original.dtype)


def check_scale(scale: float) -> float:
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise UsageError(f"--style-scale must be between {MIN_SCALE} and {MAX_SCALE} (got {scale})")
    return float(scale)


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size the network sees: the frame's times ``scale``, rounded, at least 1x1."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(frames: Sequence[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """Resize HxWx3 frames (uint8 or uint16) to ``size`` (width, height): bilinear, antialiased
    when shrinking."""
    if not frames:
        return []
    width, height = size
    if frames[0].shape[1] == width and frames[0].shape[0] == height:
        return list(frames)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    shrinking = width < frames[0].shape[1] or height < frames[0].shape[0]
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    deep = frames[0].dtype == np.uint16
    y = y.clamp(0, 65535 if deep else 255).round().to(torch.uint16 if deep else torch.uint8)
    y = y.permute(0, 2, 3, 1).contiguous().numpy()
    return list(y)


@dataclass(frozen=True)
class Look:
    """How the network is applied: ``scale`` of the frame it sees, and whether colours are kept."""

    scale: float = 1.0
    preserve_colors: bool = False
    #: Colour matrix of the input (a name of :data:`LUMA_COEFFICIENTS`), for ``preserve_colors``.
    matrix: str = DEFAULT_MATRIX

    @property
    def plain(self) -> bool:
        return self.scale == 1.0 and not self.preserve_colors

    def as_dict(self) -> dict:
        """What goes in a job's key: only what changes pixels."""
        return {"style_scale": self.scale,
                "preserve_colors": luma_coefficients(self.matrix) if self.preserve_colors else None}

    def describe(self) -> str:
        parts = [f"scale {self.scale:g}"] if self.scale != 1.0 else []
        return " ".join(parts + ([f"colours kept ({self.matrix})"] if self.preserve_colors else []))

    def apply(self, stylize: Callable[[list[np.ndarray]], list[np.ndarray]],
              frames: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``stylize`` on ``frames`` with this look; same count and sizes out."""
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        seen = resize(frames, scaled_size(w, h, self.scale)) if self.scale != 1.0 else frames
        styled = stylize(seen)
        if self.scale != 1.0:
            styled = resize(styled, (w, h))
        if self.preserve_colors:
            styled = [keep_colors(a, b, self.matrix) for a, b in zip(frames, styled)]
        return styled


class LookStylizer:
    """A stylizer (stylempi.network.stylize.Stylizer) with a :class:`Look` around it: it takes and
    gives RGB frames, as the stylizer it wraps must; the rest of the protocol is the wrapped one's."""

    input_kind = "rgb"  # stylempi.network.stylize.RGB (colour sits below the network)

    def __init__(self, inner, look: Look):
        if inner.input_kind != self.input_kind:
            raise UsageError("--style-scale and --preserve-colors need a stylizer that takes RGB frames")
        self.inner = inner
        self.look = look

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return self.look.apply(self.inner, frames)

    device = property(lambda self: self.inner.device)
    batch_size = property(lambda self: self.inner.batch_size)
    precision = property(lambda self: self.inner.precision)
    compiled = property(lambda self: self.inner.compiled)
    compile_seconds = property(lambda self: self.inner.compile_seconds)
