"""Where and how the network runs: device, precision, batch size, compile, threads.

Pure decisions from the user's flags, the video and this machine; nothing here
touches a network. :class:`stylempi.network.stylize.NetworkStylizer` takes what they
decide.
"""
from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from ..errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("auto", "on", "off")
DEFAULT_DEVICE = DEFAULT_PRECISION = DEFAULT_COMPILE = "auto"
#: Frames per network call when --batch-size is not given, by device type.
DEFAULT_BATCH_SIZE = {"cuda": 8, "cpu": 2}
#: ``--compile auto`` compiles on CPUs for videos of at least this many frames (10 s at
#: 30 fps): enough for the faster network to repay a cold compile (docs/benchmarks.md,
#: "Why the stylizer does what it does").
COMPILE_MIN_FRAMES = 300
#: ``--precision auto`` on a CPU keeps narrower networks in fp32: in bf16 they fall under
#: the quality line for little speed (docs/benchmarks.md, "Why the stylizer does what it does").
BF16_MIN_WIDTH = 16


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels here (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private API: absent means no
        return False


def slurm_gave_no_gpu(environ=os.environ) -> bool:
    """Inside a Slurm job that was given no GPU.

    Slurm sets CUDA_VISIBLE_DEVICES for the GPUs it allocates; unset inside a job means
    none was requested, and where Slurm does not constrain devices (ConstrainDevices=no)
    the GPUs torch still sees are other jobs'.
    """
    return bool(environ.get("SLURM_JOB_ID")) and "CUDA_VISIBLE_DEVICES" not in environ


def resolve_device(requested: str, local_rank: int = 0, environ=os.environ) -> torch.device:
    """``auto`` picks CUDA when present; each rank on a node takes its own GPU."""
    if requested not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}")
    if requested == "cuda" and slurm_gave_no_gpu(environ):
        raise UsageError("--device cuda inside a Slurm job that was given no GPU "
                         "(CUDA_VISIBLE_DEVICES is unset): ask sbatch for --gpus-per-node or --gres=gpu:N")
    if requested == "cpu" or (requested == "auto" and (slurm_gave_no_gpu(environ)
                                                       or not torch.cuda.is_available())):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                         "(is this a CPU build of torch, or are the drivers missing?)")
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    capability = torch.cuda.get_device_capability(device)
    if not cuda_arch_supported(capability, torch.cuda.get_arch_list()):
        # Otherwise the first kernel fails with "no kernel image is available", or
        # ``auto`` users never learn why the GPU sits idle.
        raise UsageError(
            f"this torch build (CUDA {torch.version.cuda}) has no kernels for "
            f"{torch.cuda.get_device_name(device)} (sm_{capability[0]}{capability[1]}); install a torch "
            "build for that GPU (docs/deploy.md, torch builds and GPUs)")
    return device


def cuda_arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch build compiled for ARCH_LIST runs on a GPU of CAPABILITY.

    A cubin for sm_XY runs on GPUs of the same major version and a minor one at
    least Y; PTX (compute_XY) is compiled at load time for any GPU of capability
    XY or newer. An empty list (a build that does not say) is given the benefit
    of the doubt.
    """
    if not arch_list:
        return True
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")  # sm_90a, sm_100f: family variants of the same major
        if not digits.isdigit():
            continue
        arch_major, arch_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def resolve_precision(requested: str, device: torch.device, width: int | None = None) -> str:
    """``auto``: fp16 on GPUs; bf16 on CPUs with native bf16 for networks of base width
    :data:`BF16_MIN_WIDTH` or more (``width`` None: unknown, e.g. TorchScript); else fp32."""
    if requested not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UsageError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
        return requested
    if device.type == "cuda":
        return "fp16"
    if width is not None and width < BF16_MIN_WIDTH:
        return "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def network_width(network: nn.Module) -> int | None:
    """The base width of a TransformerNet (channels of its first layer); None if unknown."""
    width = getattr(network, "width", None)
    return width if isinstance(width, int) else None


def default_batch_size(device: torch.device) -> int:
    return DEFAULT_BATCH_SIZE["cuda" if device.type == "cuda" else "cpu"]


def have_c_compiler() -> bool:
    """Inductor's CPU backend builds C++: is there a compiler to build it with?"""
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


def resolve_compile(requested: str, device: torch.device, frames: int) -> bool:
    """Whether to run the network compiled (see :class:`stylempi.network.stylize.NetworkStylizer`).

    ``auto``: on CPUs with a C++ compiler, for videos of at least
    :data:`COMPILE_MIN_FRAMES` frames (it depends on the video alone, never on
    the rank count, so every N computes the same pixels), narrow networks too
    (inside a job they are faster compiled). Off on GPUs: only the bare network
    was measured compiled there, so ``--compile on`` is there to try a whole
    job (docs/benchmarks.md, "Why the stylizer does what it does"). ``on`` without a C++ compiler is an
    error on CPUs.
    """
    if requested not in COMPILE_MODES:
        raise UsageError(f"--compile must be one of {', '.join(COMPILE_MODES)}")
    if requested == "off":
        return False
    if requested == "on":
        if device.type == "cpu" and not have_c_compiler():
            raise UsageError("--compile on needs a C++ compiler on the CPU (apt-get install g++), "
                             "or use --compile off")
        return True
    return device.type == "cpu" and frames >= COMPILE_MIN_FRAMES and have_c_compiler()


def threads_per_rank(local_size: int) -> int:
    """Share this node's cores among the ranks on it (OMP_NUM_THREADS wins if set)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))
