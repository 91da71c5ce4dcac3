"""The torch colour path (``--convert torch``): YUV planes in, YUV planes out, converted
on the network's device rather than by swscale on the CPU.

::

    decoded planes: numpy (CPU decode) or CUDA tensors (NVDEC, stylempi.media.nvdec)
      ──pinned host buffer, asynchronous copy on this rank's CUDA stream──► device
      ──colour.tensors.planes_to_rgb (the input's matrix and range)──► RGB, rounded as the CPU path rounds
      ──NetworkStylizer.stylize_tensor──► stylized RGB
      ──colour.tensors.rgb_to_planes (the output's matrix, range, subsampling, depth)──► planes
      ──asynchronous copy into pinned host memory──► the encoder's planes (numpy)

Why: on a GPU node the CPU's share of a frame (swscale both ways, the copies of
RGB, three bytes a pixel, over PCIe) is most of a job's time while the GPU
waits (docs/benchmarks.md, "GPU: NVIDIA H200 at 1080p"). Planes are half the bytes of RGB at
4:2:0, and the conversions are a few element-wise kernels on the GPU. On a CPU
device the same code runs in torch on the CPU, which is how CI tests it.
"""
from __future__ import annotations

import contextlib
from typing import Sequence, Union

import numpy as np
import torch

from ..colour.matrices import Colour
from ..colour.tensors import CHROMA_LOCATIONS, planes_to_rgb, rgb_to_planes
from ..media import to_planes, to_rgb
from .stylize import PLANES, NetworkStylizer

#: One frame's Y, Cb and Cr: numpy arrays (host) or tensors (already on the device).
Planes = tuple[Union[np.ndarray, torch.Tensor], ...]


class PlanesStylizer:
    """A :class:`~stylempi.network.stylize.NetworkStylizer` fed and emptied as YUV planes.

    ``source`` is the input's colour (how decoded planes read), ``target`` the
    output's (the encoder's subsampling and depth, same matrix and range);
    ``chroma_location`` where the input's chroma samples sit (:func:`chroma_location`).
    """

    def __init__(self, inner: NetworkStylizer, source: Colour, target: Colour, chroma_location: str = "left"):
        self.inner = inner
        self.source = source
        self.target = target
        self.chroma_location = chroma_location
        self.cuda = inner.device.type == "cuda"
        # Copies on a stream of this rank's own, so they overlap the previous batch's work.
        self._stream = torch.cuda.Stream(inner.device) if self.cuda else None

    input_kind = PLANES

    # The rest of the Stylizer protocol is the network's.
    device = property(lambda self: self.inner.device)
    batch_size = property(lambda self: self.inner.batch_size)
    precision = property(lambda self: self.inner.precision)
    compiled = property(lambda self: self.inner.compiled)
    compile_seconds = property(lambda self: self.inner.compile_seconds)

    def __call__(self, frames: Sequence[Planes]) -> list[Planes]:
        out: list[Planes] = []
        size = self.inner.batch_size
        for start in range(0, len(frames), size):
            out.extend(self._run(frames[start:start + size]))
        return out

    @torch.inference_mode()
    def _run(self, frames: Sequence[Planes]) -> list[Planes]:
        with torch.cuda.stream(self._stream) if self.cuda else contextlib.nullcontext():
            y, u, v = (self._upload([f[i] for f in frames]) for i in range(3))
            styled = self.inner.stylize_tensor(self._rgb(y, u, v))
            rgb = styled.permute(0, 3, 1, 2).float()
            if styled.dtype != torch.uint8:
                rgb = rgb * (255 / 65535)
            planes = [self._download(p) for p in rgb_to_planes(rgb, self.target, self.target.chroma,
                                                                self.target.depth)]
        if self._stream is not None:
            self._stream.synchronize()
        dtype = np.uint8 if self.target.depth <= 8 else np.dtype("<u2")
        host = [p.numpy().astype(dtype, copy=False) for p in planes]
        return [tuple(plane[i] for plane in host) for i in range(len(frames))]

    def _rgb(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Decoded planes as the network's integer NHWC RGB, as the CPU path hands it over
        (8-bit, or 16-bit for deeper inputs)."""
        rgb = planes_to_rgb(y, u, v, self.source, chroma_location=self.chroma_location)  # float, 0..255
        if self.source.depth > 8:
            return (rgb * (65535 / 255)).round().clamp(0, 65535).to(torch.uint16).permute(0, 2, 3, 1).contiguous()
        return rgb.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def _upload(self, planes: list) -> torch.Tensor:
        if isinstance(planes[0], torch.Tensor):  # decoded on this GPU already (and synchronised)
            if self._stream is not None:
                for plane in planes:  # made on another stream: not to be reused while this one reads
                    plane.record_stream(self._stream)
            return torch.stack(planes).to(self.inner.device)
        # Stacked straight into the buffer the copy reads (pinned on a GPU: torch caches
        # pinned blocks, so no allocation per batch); deeper samples widened to int32 on the way.
        dtype = torch.uint8 if planes[0].dtype == np.uint8 else torch.int32
        batch = torch.empty((len(planes), *planes[0].shape), dtype=dtype, pin_memory=self.cuda)
        np.stack(planes, out=batch.numpy())
        return batch.to(self.inner.device, non_blocking=True)

    def _download(self, plane: torch.Tensor) -> torch.Tensor:
        """A plane batch to host memory: 8-bit as uint8, deeper as int16 (10 and 12 bits fit)."""
        plane = plane.to(torch.uint8 if self.target.depth <= 8 else torch.int16)
        if not self.cuda:
            return plane
        host = torch.empty(plane.shape, dtype=plane.dtype, pin_memory=True)
        host.copy_(plane, non_blocking=True)
        return host


def chroma_location(frame, colour: Colour) -> str:
    """Where FRAME's chroma samples sit, as swscale places them when converting it.

    FFmpeg reads the siting off each decoded frame (H.264 and MPEG-2 say
    ``left``; HEVC HDR masters often ``topleft``; untagged frames are centred),
    but PyAV does not expose that field. So rank 0 asks swscale instead: of
    the sitings, the one whose torch conversion of the first frame reproduces
    :func:`~stylempi.media.pixels.to_rgb` best. A picture without chroma
    detail fits them all alike and gets ``left``, the usual one, which then
    makes no visible difference.
    """
    if colour.chroma == "444":
        return "left"  # full-resolution chroma: no siting to choose
    reference = torch.from_numpy(to_rgb(frame, colour).astype(np.float32))
    if colour.depth > 8:
        reference *= 255 / 65535
    planes = [torch.from_numpy(p.astype(np.int32))[None] for p in to_planes(frame, colour)]

    def error(location: str) -> float:
        rgb = planes_to_rgb(*planes, colour, chroma_location=location)[0].permute(1, 2, 0)
        return float(((rgb - reference) ** 2).mean())

    candidates = ["left"] + [name for name in CHROMA_LOCATIONS if name not in ("left", "unspecified")]
    return min(candidates, key=error)
