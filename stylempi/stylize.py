"""Running the network on frames: device, precision, batching, exact sizes.

A *stylizer* is anything with ``__call__(frames: list[np.ndarray]) ->
list[np.ndarray]`` taking and returning HxWx3 uint8 RGB arrays of the same
size. :class:`NetworkStylizer` is the real one; benchmarks plug in stand-ins
through :func:`stylempi.job.run_job` with the same interface.
"""
from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


class Stylizer(Protocol):
    """Maps a batch of RGB uint8 frames to stylized frames of the same sizes."""

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]: ...


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels here (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private API: absent means no
        return False


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; each rank on a node takes its own GPU."""
    if requested not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                         "(is this a CPU build of torch, or are the drivers missing?)")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto``: fp16 on GPUs, bf16 on CPUs with native bf16, else fp32."""
    if requested not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UsageError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
        return requested
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def default_batch_size(device: torch.device) -> int:
    return 8 if device.type == "cuda" else 2


def threads_per_rank(local_size: int) -> int:
    """Share this node's cores among the ranks on it (OMP_NUM_THREADS wins if set)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


class NetworkStylizer:
    """Run a TransformerNet (or a trusted TorchScript module) over frame batches.

    Frames are padded by reflection to a multiple of 4 (the network's two
    stride-2 stages would otherwise change the size: 405 becomes 408) and the
    result is cropped back, so the output has exactly the input's size.
    """

    def __init__(self, network: nn.Module, device: torch.device, precision: str, batch_size: int):
        self.device = device
        self.precision = precision
        self.batch_size = max(1, batch_size)
        self.memory_format = torch.channels_last
        self.network = network.to(device).eval().to(memory_format=self.memory_format)
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            out.extend(self._run(frames[start:start + self.batch_size]))
        return out

    @torch.inference_mode()
    def _run(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        height, width = frames[0].shape[:2]
        batch = torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float()
        # Multiples of 4, and at least 16 pixels: the 9x9 border layers reflect 4 pixels.
        pad_h, pad_w = max(-height % 4, 16 - height), max(-width % 4, 16 - width)
        if pad_h or pad_w:
            # Reflection needs the pad smaller than the side; replicate covers tiny frames.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            batch = nn.functional.pad(batch, (0, pad_w, 0, pad_h), mode=mode)
        batch = batch.contiguous(memory_format=self.memory_format)
        if self._dtype is not None:
            with torch.autocast(self.device.type, dtype=self._dtype):
                result = self.network(batch)
        else:
            result = self.network(batch)
        result = result[:, :, :height, :width].float().clamp_(0, 255).round_()
        result = result.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        return list(result)
