"""Running the network on frames: padding, precision, batching, exact sizes.

A *stylizer* is what :class:`Stylizer` declares: a callable on batches of frames that says
where it runs, how many frames it takes at once, its arithmetic, its compile time and the
form of frames it takes (RGB arrays or YUV planes). :class:`NetworkStylizer` is the real
one; a custom one plugs in through :func:`stylempi.job.run.run_job`'s ``stylizer_factory``. The device,
precision, batch size and compile mode it is given are decided in
:mod:`stylempi.network.placement`; compiling is :mod:`stylempi.network.aot`.
"""
from __future__ import annotations

import copy
import sys
import time
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadFailure
from . import aot
from .model import layout_of


#: Frames as HxWx3 RGB arrays: uint8, or uint16 (0..65535) for inputs deeper than 8 bits.
RGB = "rgb"
#: Frames as (Y, Cb, Cr) planes: the input's colour in (numpy arrays, or CUDA tensors when NVDEC
#: decodes), the encoder's (the output's subsampling and depth) out, as numpy arrays.
PLANES = "planes"
INPUT_KINDS = (RGB, PLANES)


class Stylizer(Protocol):
    """What a job needs of a stylizer, whether :class:`NetworkStylizer` or a custom one given to
    :func:`stylempi.job.run.run_job` as ``stylizer_factory(prepared, comm)``.

    ``__call__`` maps a batch of at most :attr:`batch_size` frames, in the form
    :attr:`input_kind` names, to as many stylized frames of the same size and form. The job
    decodes (and converts) frames into that form itself: a stylizer taking :data:`RGB` gets RGB
    whatever ``--convert`` says.
    """

    #: Where it runs. A CUDA device is the GPU NVDEC decodes on and NVENC encodes on; any other
    #: (``torch.device("cpu")``) keeps the media engines on the CPU.
    device: torch.device
    #: Frames per call; the job decodes batches of this size.
    batch_size: int
    #: Its arithmetic as the summary line shows it: "fp32", "bf16", "fp16" (or a stand-in's word).
    precision: str
    #: Whether it runs compiled, and the seconds spent compiling or loading compiled code so far.
    compiled: bool
    compile_seconds: float
    #: :data:`RGB` or :data:`PLANES`.
    input_kind: str

    def __call__(self, frames: list) -> list: ...


class _Float32(nn.Module):
    """Runs the wrapped layer in fp32 even inside a bf16/fp16 autocast region."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float())


class _SpaceToDepthConv2d(nn.Module):
    """A stride-1 convolution with few output channels, computed on 2x2 pixel blocks.

    Why: the network's last layer (9x9, 32 -> 3 channels) keeps oneDNN's CPU
    kernels from vectorizing over output channels, so it runs far below the
    CPU's speed. Rearranged with ``pixel_unshuffle(2)`` it becomes a 5x5
    convolution of 4x the channels (128 -> 12) on a half-size image: a few
    more multiply-adds (the folded kernel has zeros), in much less time
    (docs/benchmarks.md, "Why the stylizer does what it does"). The same products are summed in another
    order, so it equals the plain convolution up to float rounding. Odd sizes
    take the plain convolution.
    """

    BLOCK = 2

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        r = self.BLOCK
        out_ch, in_ch, k, k2 = conv.weight.shape
        if k != k2 or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.dilation != (1, 1) \
                or conv.groups != 1:
            raise ValueError("only plain stride-1 square convolutions")
        taps = (k + 2 * (r - 1)) // r
        weight = conv.weight.detach()
        folded = weight.new_zeros(out_ch, r, r, in_ch, r, r, taps, taps)
        for a in range(r):  # output pixel's row within the block
            for p in range(taps):  # block row tap
                for q in range(r):  # input pixel's row within the block
                    i = r * p + q - a
                    if not 0 <= i < k:
                        continue
                    for b in range(r):
                        for pp in range(taps):
                            for qq in range(r):
                                j = r * pp + qq - b
                                if 0 <= j < k:
                                    folded[:, a, b, :, q, qq, p, pp] = weight[:, :, i, j]
        self.conv = conv
        self.blocked = nn.Conv2d(in_ch * r * r, out_ch * r * r, taps, bias=conv.bias is not None)
        with torch.no_grad():
            self.blocked.weight.copy_(folded.reshape(out_ch * r * r, in_ch * r * r, taps, taps))
            if conv.bias is not None:
                self.blocked.bias.copy_(conv.bias.detach().repeat_interleave(r * r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.BLOCK
        if x.shape[-2] % r or x.shape[-1] % r:
            return self.conv(x)
        return nn.functional.pixel_shuffle(self.blocked(nn.functional.pixel_unshuffle(x, r)), r)


def prepare_network(network: nn.Module, device: torch.device, precision: str,
                    memory_format: torch.memory_format) -> nn.Module:
    """A copy of NETWORK ready to run: on DEVICE, in eval mode and MEMORY_FORMAT, with the
    layer rewrites PRECISION and DEVICE call for. The caller's network is left as it was."""
    with torch.no_grad():  # a TorchScript copy made with grad on has non-leaf weights: .to() warns
        network = copy.deepcopy(network)
    network = network.to(device).eval().to(memory_format=memory_format)
    if isinstance(network, torch.jit.ScriptModule):  # trusted TorchScript runs as it is
        return network
    layout = layout_of(network)
    first = network.get_submodule(layout.first_layer)
    if precision in ("bf16", "fp16") and not isinstance(first, _Float32):
        # The first layer in fp32: in bf16 it alone loses much of the quality, for a
        # small share of the arithmetic (docs/benchmarks.md, "Why the stylizer does what it does").
        _replace(network, layout.first_layer, _Float32(first))
    last = network.get_submodule(layout.last_conv)
    if device.type == "cpu" and isinstance(last, nn.Conv2d) and last.out_channels <= 4 \
            and last.kernel_size[0] >= 5:
        try:  # the output layer, rearranged for oneDNN (see _SpaceToDepthConv2d)
            _replace(network, layout.last_conv, _SpaceToDepthConv2d(last).to(memory_format=memory_format))
        except ValueError:  # strided, dilated...: left as it is
            pass
    return network


def _replace(network: nn.Module, path: str, module: nn.Module) -> None:
    """Put MODULE at the submodule PATH ("deconv3.conv2d") of NETWORK."""
    parent, _, name = path.rpartition(".")
    setattr(network.get_submodule(parent) if parent else network, name, module)


NON_FINITE = ("the model computed non-finite values (NaN or Inf) for a batch of frames; its weights "
              "overflow or are damaged: check or retrain it")


class FrameStep(nn.Module):
    """The whole per-batch step as one module, so it exports and compiles as one graph.

    uint8 (or 16-bit) NHWC in, the same type NHWC out, the same size. Frames
    are padded to a multiple of the network's stride (its ``LAYOUT``; TransformerNet's two
    stride-2 stages would otherwise change the size: 405 becomes 408) and cropped back. 16-bit
    frames (inputs deeper than 8 bits) are scaled to the network's usual
    0..255 range and back, so the output keeps its depth without banding.

    Returns the frames and a flag: whether every value the network computed
    was finite. Finite weights can still overflow (a trusted TorchScript file
    can compute anything), and the clamp would silently turn NaN and Inf into
    black or white frames; the caller fails the batch instead. A flag, not a
    raise, because a compiled graph cannot branch on its data.
    """

    def __init__(self, network: nn.Module, precision: str, memory_format: torch.memory_format):
        super().__init__()
        self.network = network
        self.layout = layout_of(network)
        self.memory_format = memory_format
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = batch.shape[1], batch.shape[2]
        deep = batch.dtype != torch.uint8
        batch = batch.permute(0, 3, 1, 2).float()  # NHWC memory seen as NCHW: channels-last already
        if deep:
            batch = batch * (255 / 65535)
        # Multiples of the network's stride, and the smallest side its border layers take.
        stride, side = self.layout.stride, self.layout.min_side
        pad_h, pad_w = max(-height % stride, side - height), max(-width % stride, side - width)
        if pad_h or pad_w:
            # Reflection needs the pad smaller than the side; replicate covers tiny frames.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            batch = nn.functional.pad(batch, (0, pad_w, 0, pad_h), mode=mode)
        batch = batch.contiguous(memory_format=self.memory_format)
        if self.dtype is not None:
            with torch.autocast(batch.device.type, dtype=self.dtype):
                result = self.network(batch)
        else:
            result = self.network(batch)
        result = result[:, :, :height, :width].float()
        # Row by row, then over the rows: the outer loops of the first reduction keep it
        # parallel under aot's reduction patch, and all() is exact in any order.
        finite = torch.isfinite(result).all(dim=-1).all()
        result = result.clamp(0, 255)
        if deep:
            return (result * (65535 / 255)).round().to(torch.uint16).permute(0, 2, 3, 1).contiguous(), finite
        return result.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous(), finite


class NetworkStylizer:
    """Run a TransformerNet (or a trusted TorchScript module) over frame batches.

    The network given is copied (:func:`prepare_network`) and run through a
    :class:`FrameStep`, so the output has exactly the input's size.

    A batch whose network output is not finite raises :class:`ModelLoadFailure`.

    ``compile=True`` runs the step compiled (:mod:`stylempi.network.aot`): on CUDA by
    ``torch.compile``, on CPUs by AOTInductor, cached between jobs. A last,
    shorter batch of a chunk is padded with copies of its last frame to the
    compiled batch size (one static shape). ``compile_seconds`` holds the time
    spent compiling or loading packages. If compiling fails the network runs
    eagerly (with a warning), unless ``require_compile`` is set.
    """

    def __init__(self, network: nn.Module, device: torch.device, precision: str, batch_size: int,
                 compile: bool = False, channels_last: bool = True, require_compile: bool = False,
                 stage: Callable[[str], None] | None = None):
        self.device = device
        #: Told before a compile or a compile-cache load starts (rank 0 prints it; stylempi.aot).
        self.stage = stage
        self.precision = precision
        self.batch_size = max(1, batch_size)
        if device.type == "cuda" and not compile:
            # Eager on a GPU, channels-last costs more than it gives: the instance norms copy
            # every activation back to NCHW (docs/benchmarks.md, "Why the stylizer does what it does").
            channels_last = False
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if device.type == "cuda" and precision == "fp32":
            # fp32 means fp32: cuDNN would otherwise run the convolutions in TF32 (a 10-bit
            # mantissa), and fp32 is the reference the lower precisions are judged against.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.network = prepare_network(network, device, precision, self.memory_format)
        self.step = FrameStep(self.network, precision, self.memory_format)
        self.compiled = bool(compile) and not isinstance(network, torch.jit.ScriptModule)
        self.require_compile = require_compile
        self.compile_seconds = 0.0
        self.input_kind = RGB
        self.compile_notes: list[str] = []
        self._runners: dict[tuple, aot.Runner | None] = {}

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            out.extend(self._run(frames[start:start + self.batch_size]))
        return out

    @torch.inference_mode()
    def _run(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        batch = torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True)
        return list(self.stylize_tensor(batch).cpu().numpy())

    @torch.inference_mode()
    def stylize_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """One batch already on the device (NHWC, uint8 or uint16, at most ``batch_size``
        frames) through the step: the stylized batch, on the device, the same shape."""
        count = batch.shape[0]
        if self.compiled and count < self.batch_size:  # keep the one compiled shape
            batch = torch.cat([batch, batch[-1:].expand(self.batch_size - count, *batch.shape[1:])])
        runner = self._runner((*batch.shape, str(batch.dtype))) if self.compiled else None
        result, finite = runner(batch) if runner is not None else self.step(batch)
        if not bool(finite):
            raise ModelLoadFailure(NON_FINITE)
        return result[:count]

    def _runner(self, shape: tuple) -> aot.Runner | None:
        if shape in self._runners:
            return self._runners[shape]
        started = time.perf_counter()
        try:
            runner = aot.compiled_runner(self.step, shape, self.device,
                                         (self.precision, str(self.memory_format)), self.compile_notes,
                                         stage=self.stage)
        except Exception as exc:  # noqa: BLE001 - no compiler, an unsupported op...: run eagerly
            if self.require_compile:
                raise
            note = f"torch.compile failed ({type(exc).__name__}: {str(exc).strip()[:200]}); running eagerly"
            self.compile_notes.append(note)
            print(f"stylempi: warning: {note}", file=sys.stderr, flush=True)
            runner = None
        self._runners[shape] = runner
        self.compile_seconds += time.perf_counter() - started
        return runner
