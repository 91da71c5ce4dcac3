"""A temporal regularization for training, needing no video and no optical flow data.

Feed-forward style networks are trained on still images, so nothing teaches
them that a slightly moved or slightly noisier input should give a
correspondingly moved output; on video the strokes then shimmer. The
compound regularization of Wang et al. 2020 ("Consistent Video Style
Transfer via Compound Regularization", ReReVST) teaches it from single
images: for a content batch ``x`` with output ``F(x)``, a random smooth flow
``W`` and small noise ``n``,

    L_temporal = mean over pixels that stay inside the image of
                 ((F(W(x) + n) - W(F(x))) / 255)^2

i.e. the output of a warped, noised input must be the warped output of the
clean input. The flow is a random global shift (up to ``shift`` pixels each
way, as a camera pan) plus a smooth local motion (a random coarse grid of up
to ``motion`` pixels, upsampled bicubically, as objects moving), the noise
Gaussian with standard deviation ``noise`` on [0, 1]. Only the style network
runs a second time (the loss network does not), so a step costs about one
more forward and backward pass of the style network.

Pure tensor functions; the generator makes every batch's flow reproducible
(a resumed run follows the same path).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: ReReVST's defaults: a shift of up to 10 px, local motion up to 8 px, noise 1e-3 on [0, 1].
DEFAULT_SHIFT = 10.0
DEFAULT_MOTION = 8.0
DEFAULT_NOISE = 1e-3
#: Coarse grid of the local motion: cells across the image.
MOTION_CELLS = 4


def random_flow(batch: int, height: int, width: int, gen: torch.Generator, shift: float = DEFAULT_SHIFT,
                motion: float = DEFAULT_MOTION) -> torch.Tensor:
    """A smooth random flow field, ``[batch, 2, H, W]`` in pixels (x then y)."""
    pan = (torch.rand(batch, 2, 1, 1, generator=gen) * 2 - 1) * shift
    coarse = (torch.rand(batch, 2, MOTION_CELLS, MOTION_CELLS, generator=gen) * 2 - 1) * motion
    local = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return pan + local


def warp(images: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` sampled at ``p + flow(p)`` (bilinear), and a ``[N, 1, H, W]`` mask of the
    pixels whose sample lies inside the image."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    px, py = xs + flow[:, 0], ys + flow[:, 1]
    grid = torch.stack((2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1), dim=-1)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = ((px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)).unsqueeze(1)
    return warped, inside.to(images.dtype)


def compound_loss(network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                  shift: float = DEFAULT_SHIFT, motion: float = DEFAULT_MOTION,
                  noise: float = DEFAULT_NOISE) -> torch.Tensor:
    """ReReVST's compound regularization for inputs ``x`` (0..255) and their outputs ``y = network(x)``."""
    n, _, h, w = x.shape
    flow = random_flow(n, h, w, gen, shift, motion).to(x.device)
    moved, inside = warp(x, flow)
    moved = moved + torch.randn(moved.shape, generator=gen).to(x.device) * (noise * 255.0)
    target, _ = warp(y, flow)
    diff = (network(moved) - target) / 255.0
    return (diff.pow(2) * inside).sum() / (inside.sum() * diff.shape[1]).clamp_min(1.0)
