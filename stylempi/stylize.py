"""Running the network on frames: device, precision, batching, exact sizes.

A *stylizer* is anything with ``__call__(frames: list[np.ndarray]) ->
list[np.ndarray]`` taking and returning HxWx3 uint8 RGB arrays of the same
size. :class:`NetworkStylizer` is the real one; benchmarks plug in stand-ins
through :func:`stylempi.job.run_job` with the same interface.
"""
from __future__ import annotations

import contextlib
import functools
import ctypes
import hashlib
import os
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .compile_cache import package_stem, prune as prune_compile_cache, touch as touch_package
from .errors import ModelLoadFailure, UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("auto", "on", "off")
#: ``--compile auto`` compiles on CPUs for videos of at least this many frames (10 s
#: at 30 fps). docs/benchmarks.md: on 2 Zen 4 cores at 360p the compiled network takes
#: about half the time per frame; a cold compile costs about as much as ~100-150 frames
#: per rank, a warm cache (every later job of the same model and size) nothing.
COMPILE_MIN_FRAMES = 300


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


#: ``--precision auto`` on a CPU keeps narrower networks in fp32: with width 8, bf16
#: fell to 35.5 dB mean PSNR against fp32 on nasa_13013.mp4 (mosaic_nc8; 38 dB is the
#: line) for 4 % of speed (compiled, 640x360, 2 threads: 76.7 vs 79.7 ms/frame). Width 16
#: keeps >= 39.9 dB on every clip and runs 1.6x faster in bf16 (docs/benchmarks.md).
BF16_MIN_WIDTH = 16


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
    return 8 if device.type == "cuda" else 2


def have_c_compiler() -> bool:
    """Inductor's CPU backend builds C++: is there a compiler to build it with?"""
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


def resolve_compile(requested: str, device: torch.device, frames: int) -> bool:
    """Whether to run the network compiled (see :class:`NetworkStylizer`).

    ``auto``: on CPUs with a C++ compiler, for videos of at least
    :data:`COMPILE_MIN_FRAMES` frames (it depends on the video alone, never on
    the rank count, so every N computes the same pixels); off on GPUs for now.
    On an H200 at 1080p the compiled network was 3.4x the eager one (207.6 vs
    61.1 frames/s, width 32, fp16, batch 8), but that was the bare network:
    the whole job compiled on a GPU has not been run yet, so ``--compile on``
    is there to try it (docs/benchmarks.md, "GPU"). Narrow networks are
    compiled too: the bare width-8 network is faster eagerly on the CPU, but
    inside a job (decode and encode threads beside it) the compiled one is
    faster. ``on`` without a C++ compiler is an error on CPUs.
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


def compile_cache_dir() -> Path:
    """Where compiled networks are kept between jobs: ``$STYLEMPI_COMPILE_CACHE``, else
    ``~/.cache/stylempi/compile`` (``$XDG_CACHE_HOME`` respected)."""
    if os.environ.get("STYLEMPI_COMPILE_CACHE"):
        return Path(os.environ["STYLEMPI_COMPILE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stylempi" / "compile"


def threads_per_rank(local_size: int) -> int:
    """Share this node's cores among the ranks on it (OMP_NUM_THREADS wins if set)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_size))


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

    The network's last layer (9x9, 32 -> 3 channels) keeps oneDNN's CPU
    kernels from vectorizing over output channels: at 640x360 it took 83 ms of
    a frame's ~530 ms on one core (bf16), about 40 GFLOP/s. Rearranged with
    ``pixel_unshuffle(2)`` it becomes a 5x5 convolution of 4x the channels
    (128 -> 12) on a half-size image: 1.23x the multiply-adds (the folded
    kernel has zeros) in 45 ms. The same products are summed in another
    order, so it equals the plain convolution up to float rounding (4.5e-6 in
    fp32 at 640x360). Odd sizes take the plain convolution.
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


class _Step(nn.Module):
    """The whole per-batch step as one module, so it exports and compiles as one graph."""

    def __init__(self, stylizer: "NetworkStylizer"):
        super().__init__()
        self.network = stylizer.network
        self._stylizer = stylizer

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self._stylizer._forward(batch, check_finite=False)


class NetworkStylizer:
    """Run a TransformerNet (or a trusted TorchScript module) over frame batches.

    Frames are padded by reflection to a multiple of 4 (the network's two
    stride-2 stages would otherwise change the size: 405 becomes 408) and the
    result is cropped back, so the output has exactly the input's size.

    ``compile=True`` runs the whole step (uint8 in, pad, network, crop, clamp,
    round, uint8 out) as one graph. On CUDA that is ``torch.compile`` (JIT,
    static shapes). On CPUs it is compiled ahead of time by AOTInductor, with
    weights left unfrozen (see below) and static shapes: one package per
    model, precision, frame size, batch and thread count, kept in
    :func:`compile_cache_dir` so later jobs load it in milliseconds. A last,
    shorter batch of a chunk is padded with copies of its last frame to the
    compiled batch size. ``compile_seconds`` holds the time spent compiling or
    loading packages. If compiling fails the network runs eagerly (with a
    warning), unless ``require_compile`` is set.

    Weights are not frozen: with ``freezing`` Inductor swaps the convolutions
    for oneDNN kernels with prepacked weights, which on this bf16 Zen 4 CPU
    were markedly *slower* than ATen's channels-last convolutions (figures: the
    levers tables at the top of docs/benchmarks.md).
    """

    def __init__(self, network: nn.Module, device: torch.device, precision: str, batch_size: int,
                 compile: bool = False, channels_last: bool = True, require_compile: bool = False):
        self.device = device
        self.precision = precision
        self.batch_size = max(1, batch_size)
        if device.type == "cuda" and not compile:
            # Eager on a GPU, channels-last costs more than it gives: the instance norms copy
            # every activation back to NCHW (41 % of the GPU time of a batch). H200, 1080p,
            # width 32, fp16, batch 8: 83.3 frames/s contiguous vs 61.1 channels-last.
            channels_last = False
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = network.to(device).eval().to(memory_format=self.memory_format)
        if device.type == "cuda" and precision == "fp32":
            # fp32 means fp32: cuDNN would otherwise run the convolutions in TF32 (a 10-bit
            # mantissa), and fp32 is the reference the lower precisions are judged against.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if self._dtype is not None and isinstance(getattr(network, "conv1", None), nn.Module) \
                and not isinstance(network, torch.jit.ScriptModule) and not isinstance(network.conv1, _Float32):
            # The 9x9 first layer in fp32: in bf16 it alone costs ~2 dB of PSNR against fp32
            # (37.3 -> 39.2 dB on cockatoo.mp4) for ~5 % of the network's arithmetic.
            network.conv1 = _Float32(network.conv1)
        last = getattr(getattr(network, "deconv3", None), "conv2d", None)
        if device.type == "cpu" and isinstance(last, nn.Conv2d) and last.out_channels <= 4 \
                and last.kernel_size[0] >= 5:
            try:  # the output layer, rearranged for oneDNN (see _SpaceToDepthConv2d)
                network.deconv3.conv2d = _SpaceToDepthConv2d(last).to(memory_format=self.memory_format)
            except ValueError:  # strided, dilated...: left as it is
                pass
        self.compiled = bool(compile) and not isinstance(network, torch.jit.ScriptModule)
        self.require_compile = require_compile
        self.compile_seconds = 0.0
        self.compile_notes: list[str] = []
        self._runners: dict[tuple[int, ...], object] = {}
        self._identity: str | None = None

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            out.extend(self._run(frames[start:start + self.batch_size]))
        return out

    @torch.inference_mode()
    def _run(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        count = len(frames)
        if self.compiled and count < self.batch_size:  # keep the one compiled shape
            frames = list(frames) + [frames[-1]] * (self.batch_size - count)
        batch = torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True)
        runner = self._runner((*batch.shape, str(batch.dtype))) if self.compiled else None
        result = runner(batch) if runner is not None else self._forward(batch)
        return list(result.cpu().numpy()[:count])

    def _forward(self, batch: torch.Tensor, check_finite: bool = True) -> torch.Tensor:
        """uint8 (or 16-bit) NHWC in, the same type NHWC out, the same size.

        16-bit frames (inputs deeper than 8 bits) are scaled to the network's usual
        0..255 range and back, so the output keeps its depth without banding.
        ``check_finite`` fails the batch when the network computed NaN or Inf
        (weights that overflow, a trusted TorchScript file): the clamp below
        would silently turn them into black or white frames. Compiled graphs
        leave it out (a data-dependent branch cannot be exported); their
        weights were checked finite when loaded.
        """
        height, width = batch.shape[1], batch.shape[2]
        deep = batch.dtype != torch.uint8
        batch = batch.permute(0, 3, 1, 2).float()  # NHWC memory seen as NCHW: channels-last already
        if deep:
            batch = batch * (255 / 65535)
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
        result = result[:, :, :height, :width].float()
        if check_finite and not bool(torch.isfinite(result).all()):
            raise ModelLoadFailure("the model computed non-finite values (NaN or Inf) for a batch of "
                                   "frames; its weights overflow or are damaged: check or retrain it")
        result = result.clamp(0, 255)
        if deep:
            return (result * (65535 / 255)).round().to(torch.uint16).permute(0, 2, 3, 1).contiguous()
        return result.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    # -- ahead-of-time compilation -------------------------------------------

    def _runner(self, shape: tuple[int, ...]):
        if shape in self._runners:
            return self._runners[shape]
        started = time.perf_counter()
        try:
            runner = self._load_or_compile(shape)
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

    def _package_key(self, shape: tuple[int, ...]) -> str:
        if self._identity is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.network.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
            self._identity = digest.hexdigest()
        parts = [self._identity, torch.__version__, self.precision, str(self.memory_format), self.device.type,
                 str(shape), str(torch.get_num_threads()), _cpu_identity(), str(_PACKAGE_FORMAT)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def _load_or_compile(self, shape: tuple[int, ...]):
        cache = compile_cache_dir()
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
        if self.device.type == "cuda":
            # torch.compile's JIT: what was measured on the H200 (3.4x the eager network). The
            # AOTInductor package path below crashed there (a segfault in torch 2.11's package
            # loader for a CUDA package, loaded with device index 0), so GPUs do not take it. Inductor's own on-disk
            # caches (TORCHINDUCTOR_CACHE_DIR) keep the kernels between jobs.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                step = torch.compile(functools.partial(self._forward, check_finite=False), dynamic=False)
                step(_example(shape, self.device))  # the compile itself
            _prune_cache_once(cache)
            return step
        package = cache / f"{package_stem(self._package_key(shape), _PACKAGE_FORMAT)}.pt2"
        for attempt in (1, 2):
            if not touch_package(package):  # touched: no other process's cleanup removes it now
                self._compile_package(shape, cache, package)
            try:
                runner = self._load_package(package)
            except (OSError, RuntimeError, zipfile.BadZipFile):
                if attempt == 1 and not package.is_file():
                    continue  # removed by another process between our touch and our load
                raise
            _prune_cache_once(cache)
            return runner
        raise AssertionError("unreachable")

    def _compile_package(self, shape: tuple[int, ...], cache: Path, package: Path) -> None:
        cache.mkdir(parents=True, exist_ok=True)
        example = _example(shape, self.device)
        module = _Step(self).eval()
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".partial-", suffix=".pt2")
        os.close(fd)
        try:
            from torch._inductor import aoti_compile_and_package
            # torch 2.13's own deprecation notices (LeafSpec, printed by every rank)
            # are not the user's business.
            with warnings.catch_warnings(), _reductions_split_by_outer_loops_only():
                warnings.simplefilter("ignore", FutureWarning)
                exported = torch.export.export(module, (example,))
                # freezing off: faster here (class docstring)
                aoti_compile_and_package(exported, package_path=tmp,
                                         inductor_configs={"freezing": False, "fx_graph_cache": False})
            os.replace(tmp, package)  # atomic: ranks compiling at once all end with a whole file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _load_package(self, package: Path):
        if self.device.type == "cpu":
            try:
                return _GilFreeRunner(package)
            except (OSError, RuntimeError, AttributeError, KeyError, zipfile.BadZipFile) as exc:
                self.compile_notes.append(f"running the package through torch's loader ({exc})")
        # The C++ loader directly: importing torch._inductor to load would cost seconds.
        loader = torch._C._aoti.AOTIModelPackageLoader(str(package), "model", False, 1, -1)
        return lambda batch: loader.run([batch])[0]


def _example(key: tuple, device: torch.device) -> torch.Tensor:
    """A zero batch of the shape and dtype a runner is keyed by (``(*shape, "torch.uint8")``)."""
    *shape, dtype = key
    return torch.zeros(tuple(shape), dtype=getattr(torch, dtype.split(".")[-1]), device=device)


class _GilFreeRunner:
    """Runs an AOTInductor package's model through its C entry points, without the GIL.

    Why: torch's package loader holds Python's GIL for the whole forward pass,
    so while a rank's network ran, its decode and encode threads could not run
    Python at all and the three stages took turns instead of overlapping
    (end-to-end 1.19-1.56x the bare network on 2 cores). ctypes releases the GIL
    around a foreign call; the model's shared library exports a C ABI
    (``AOTInductorModelContainerRun``, torch/csrc/inductor/aoti_runtime/interface.h)
    that takes tensor handles, which torch's own AOTI helpers make and take back.
    The library is unpacked once beside the package.
    """

    def __init__(self, package: Path):
        library = package.with_suffix(".so")
        if not library.is_file():
            with zipfile.ZipFile(package) as archive:
                name = next((n for n in archive.namelist()
                             if n.endswith(".so") and "/data/aotinductor/model/" in n), None)
                if name is None:  # another package layout: torch's loader will do
                    raise KeyError(f"no model library in {package.name}")
                fd, tmp = tempfile.mkstemp(dir=package.parent, prefix=".partial-", suffix=".so")
                with os.fdopen(fd, "wb") as out:
                    out.write(archive.read(name))
                os.replace(tmp, library)
        self._lib = ctypes.CDLL(str(library))
        self._run = self._lib.AOTInductorModelContainerRun
        self._run.restype = ctypes.c_int32
        self._run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t,
                              ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
        create = self._lib.AOTInductorModelContainerCreateWithDevice
        create.restype = ctypes.c_int32
        create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p]
        self._container = ctypes.c_void_p()
        if create(ctypes.byref(self._container), 1, b"cpu", None) != 0:
            raise RuntimeError(f"cannot create the compiled model from {library}")
        self._aoti = torch._C._aoti
        # torch hands tensor handles over as unnamed capsules.
        self._unwrap = ctypes.pythonapi.PyCapsule_GetPointer
        self._unwrap.restype, self._unwrap.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        self._wrap = ctypes.pythonapi.PyCapsule_New
        self._wrap.restype, self._wrap.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        handles = self._aoti.unsafe_alloc_void_ptrs_from_tensors([batch])
        inputs = (ctypes.c_void_p * 1)(self._unwrap(handles[0], None))
        outputs = (ctypes.c_void_p * 1)()
        if self._run(self._container, inputs, 1, outputs, 1, None, None) != 0:  # GIL released here
            raise RuntimeError("the compiled model failed; rerun with --compile off")
        return self._aoti.alloc_tensors_by_stealing_from_void_ptrs([self._wrap(outputs[0], None, None)])[0]


#: Bumped when the compiled step changes, so stale packages are never loaded (and are
#: removed from the cache: the format is part of each package's file name).
_PACKAGE_FORMAT = 5
_pruned: set[str] = set()


def _prune_cache_once(cache: Path) -> None:
    """Keep the compile cache bounded (stylempi.compile_cache), once per process and cache.
    A failure here never fails a job: the cache is only an optimisation."""
    if str(cache) in _pruned:
        return
    _pruned.add(str(cache))
    try:
        prune_compile_cache(cache, _PACKAGE_FORMAT)
    except OSError:
        pass


@contextlib.contextmanager
def _reductions_split_by_outer_loops_only():
    """Keep Inductor's C++ kernels from splitting a reduction across threads.

    Why: when a reduction's own loop is much longer than the loops around it
    (the instance norms: 2 x 8 channels around 57,600 pixels), Inductor gives
    each thread a slice of the reduction and combines the partial results, so
    the rounding depends on the thread count. A rank's thread count depends on
    how many ranks share the node, so ``mpirun -n 1`` and ``-n 2`` computed
    different pixels (x264 then amplified them). Parallelising over the outer
    loops only (each mean and variance summed by one thread, in one order)
    gives the same pixels for every thread count, and the loops are still run
    in parallel: 2 x 8 = 16 outer iterations and more for wider networks.
    Patches the private ``LoopNest.max_parallel_depth`` for the duration of the
    compile only (if a torch release moves it, compile as it is).
    """
    try:
        from torch._inductor.codegen import cpp
        loop_nest, parallel_depth = cpp.LoopNest, cpp.ParallelDepth
        original = loop_nest.max_parallel_depth
    except (ImportError, AttributeError):  # pragma: no cover - another torch layout
        yield
        return

    def outer_loops_only(self):
        depth = original(self)
        if self.loops and depth.parallel_depth and self.loops[depth.start_depth].is_reduction:
            outer = 0
            while outer < len(self.loops) and not self.loops[outer].is_reduction:
                outer += 1
            return parallel_depth(parallel_depth=outer, start_depth=0)
        return depth

    loop_nest.max_parallel_depth = outer_loops_only
    try:
        yield
    finally:
        loop_nest.max_parallel_depth = original


def _cpu_identity() -> str:
    """The CPU model and flags: a package built for one ISA must not run on another."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((l for l in text.splitlines() if l.startswith("model name")), "")
        flags = next((l for l in text.splitlines() if l.startswith("flags")), "")
        return hashlib.sha256((model + flags).encode()).hexdigest()[:16]
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()
