"""Compiling the per-batch step: ahead of time on CPUs, ``torch.compile`` on CUDA.

:func:`compiled_runner` turns a step module (one graph: frames in, frames out;
see :class:`stylempi.network.stylize.FrameStep`) into a runner for one static input
shape. On CPUs the step is compiled ahead of time by AOTInductor, with
weights left unfrozen and static shapes: one package per model, precision,
frame size, batch and thread count (:func:`package_key`), kept in
:func:`compile_cache_dir` so later jobs load it in milliseconds, and run
through its C entry points without Python's GIL (:class:`GilFreeRunner`).
The cache is kept bounded by :mod:`stylempi.network.compile_cache`.

A runner takes a batch and returns the step's outputs as a list of tensors.

Weights are not frozen: with ``freezing`` Inductor swaps the convolutions for
oneDNN kernels with prepacked weights, which were *slower* than ATen's
channels-last convolutions (docs/benchmarks.md, the levers tables at the top).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..storage.safefiles import refuse_link
from .compile_cache import package_stem, prune as prune_compile_cache, touch as touch_package

#: Bumped when the compiled step changes, so stale packages are never loaded (and are
#: removed from the cache: the format is part of each package's file name).
PACKAGE_FORMAT = 6

Runner = Callable[[torch.Tensor], "list[torch.Tensor]"]
_pruned: set[str] = set()


def compile_cache_dir() -> Path:
    """Where compiled networks are kept between jobs: ``$STYLEMPI_COMPILE_CACHE``, else
    ``~/.cache/stylempi/compile`` (``$XDG_CACHE_HOME`` respected)."""
    if os.environ.get("STYLEMPI_COMPILE_CACHE"):
        return Path(os.environ["STYLEMPI_COMPILE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stylempi" / "compile"


def example(key: tuple, device: torch.device) -> torch.Tensor:
    """A zero batch of the shape and dtype a runner is keyed by (``(*shape, "torch.uint8")``)."""
    *shape, dtype = key
    return torch.zeros(tuple(shape), dtype=getattr(torch, dtype.split(".")[-1]), device=device)


def weights_digest(network: nn.Module) -> str:
    """A hash of every weight's name and value: the model's part of a package key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def package_key(weights: str, settings: Sequence[str], device: torch.device, shape: tuple) -> str:
    """Everything a package's code depends on: weights, torch build, the step's SETTINGS
    (precision, memory format), device, input shape, thread count, CPU and package format."""
    parts = [weights, torch.__version__, *settings, device.type, str(shape), str(torch.get_num_threads()),
             _cpu_identity(), str(PACKAGE_FORMAT)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def describe_shape(shape: tuple, settings: Sequence[str]) -> str:
    """``640x360 frames, batch 2, bf16``: what a compiled package is for, in a user's words."""
    batch, height, width = shape[0], shape[1], shape[2]
    return f"{width}x{height} frames, batch {batch}, {settings[0] if settings else '?'}"


def compiled_runner(step: nn.Module, shape: tuple, device: torch.device, settings: Sequence[str],
                    notes: list[str], stage: Callable[[str], None] | None = None) -> Runner:
    """A runner of STEP for input SHAPE (``(*shape, dtype name)``), loaded from the cache or
    compiled into it. STEP's ``network`` attribute holds the weights that key its package;
    NOTES collects what a user may want to know (a fallback loader). STAGE is told which
    of the two is about to happen (a compile takes minutes, a load milliseconds)."""
    cache = compile_cache_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    what = describe_shape(shape, settings)
    if device.type == "cuda":
        if stage is not None:
            stage(f"compiling the network with torch.compile for {what} (Inductor keeps its kernels for "
                  f"next time in {cache})")
        return _jit_runner(step, shape, device, cache)
    package = package_path(step, shape, device, settings)
    # A package is code this process runs: one that is a link (planted in a shared cache)
    # is refused before it is touched, loaded or replaced.
    refuse_link(package, "the compile cache entry")
    refuse_link(package.with_suffix(".so"), "the compile cache entry")
    for attempt in (1, 2):
        if not touch_package(package):  # touched: no other process's cleanup removes it now
            if stage is not None:
                stage(f"compiling the network for {what}: a one-off, cached for next time in {cache}")
            _compile_package(step, example(shape, device), cache, package)
        elif stage is not None and attempt == 1:
            stage(f"loading the network compiled for {what} from the cache ({cache})")
        try:
            runner = _load_package(package, notes)
        except (OSError, RuntimeError, zipfile.BadZipFile):
            if attempt == 1 and not package.is_file():
                continue  # removed by another process between our touch and our load
            raise
        _prune_cache_once(cache)
        return runner
    raise AssertionError("unreachable")


def package_path(step: nn.Module, shape: tuple, device: torch.device, settings: Sequence[str]) -> Path:
    """Where the package of STEP for SHAPE is kept in the compile cache (:func:`package_key`)."""
    key = package_key(weights_digest(step.network), settings, device, shape)
    return compile_cache_dir() / f"{package_stem(key, PACKAGE_FORMAT)}.pt2"


def _jit_runner(step: nn.Module, shape: tuple, device: torch.device, cache: Path) -> Runner:
    # torch.compile's JIT, not a package: the JIT is what was measured on a GPU, and torch's
    # package loader crashed on a CUDA package (docs/benchmarks.md, "Why the stylizer does what it does").
    # Inductor's own on-disk caches (TORCHINDUCTOR_CACHE_DIR) keep the kernels between jobs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        compiled = torch.compile(step, dynamic=False)
        compiled(example(shape, device))  # the compile itself
    _prune_cache_once(cache)

    def run(batch: torch.Tensor) -> list[torch.Tensor]:
        outputs = compiled(batch)
        return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    return run


@contextlib.contextmanager
def _written_whole(path: Path) -> Iterator[Path]:
    """``with _written_whole(path) as tmp:`` write TMP, a ``.partial-`` file beside PATH; a
    clean exit renames it onto PATH (atomic: ranks writing at once all end with a whole
    file), an exception removes it.

    Not :func:`stylempi.storage.files.atomic_write`: Inductor writes a package to a path, not
    to an open file, and the cache removes a killed rank's leftovers by their
    ``.partial-`` names (:mod:`stylempi.network.compile_cache`).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compile_package(step: nn.Module, example_batch: torch.Tensor, cache: Path, package: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with _written_whole(package) as tmp:
        from torch._inductor import aoti_compile_and_package
        # torch's own deprecation notices while exporting would be printed by every
        # rank, and are not the user's business.
        with warnings.catch_warnings(), _reductions_split_by_outer_loops_only():
            warnings.simplefilter("ignore", FutureWarning)
            exported = torch.export.export(step.eval(), (example_batch,))
            # freezing off: faster here (module docstring)
            aoti_compile_and_package(exported, package_path=str(tmp),
                                     inductor_configs={"freezing": False, "fx_graph_cache": False})


def _load_package(package: Path, notes: list[str]) -> Runner:
    try:
        return GilFreeRunner(package)
    except (OSError, RuntimeError, AttributeError, KeyError, zipfile.BadZipFile) as exc:
        notes.append(f"running the package through torch's loader ({exc})")
    # The C++ loader directly: importing torch._inductor to load would cost seconds.
    loader = torch._C._aoti.AOTIModelPackageLoader(str(package), "model", False, 1, -1)
    return lambda batch: list(loader.run([batch]))


class GilFreeRunner:
    """Runs an AOTInductor package's model through its C entry points, without the GIL.

    Why: torch's package loader holds Python's GIL for the whole forward pass,
    so while a rank's network ran, its decode and encode threads could not run
    Python at all and the three stages took turns instead of overlapping
    (docs/benchmarks.md, "Why the stylizer does what it does"). ctypes releases the GIL around a foreign
    call; the model's shared library exports a C ABI
    (``AOTInductorModelContainerRun``, torch/csrc/inductor/aoti_runtime/interface.h)
    that takes tensor handles, which torch's own AOTI helpers make and take back.
    The library is unpacked once beside the package.
    """

    def __init__(self, package: Path):
        library = package.with_suffix(".so")
        if not library.is_file():
            _unpack_library(package, library)
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
        count = self._lib.AOTInductorModelContainerGetNumOutputs
        count.restype, count.argtypes = ctypes.c_int32, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        outputs = ctypes.c_size_t()
        if count(self._container, ctypes.byref(outputs)) != 0:
            raise RuntimeError(f"cannot count the compiled model's outputs in {library}")
        self._outputs = outputs.value
        self._aoti = torch._C._aoti
        # torch hands tensor handles over as unnamed capsules.
        self._unwrap = ctypes.pythonapi.PyCapsule_GetPointer
        self._unwrap.restype, self._unwrap.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        self._wrap = ctypes.pythonapi.PyCapsule_New
        self._wrap.restype, self._wrap.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        handles = self._aoti.unsafe_alloc_void_ptrs_from_tensors([batch])
        inputs = (ctypes.c_void_p * 1)(self._unwrap(handles[0], None))
        outputs = (ctypes.c_void_p * self._outputs)()
        if self._run(self._container, inputs, 1, outputs, self._outputs, None, None) != 0:  # GIL released here
            raise RuntimeError("the compiled model failed; rerun with --compile off")
        return self._aoti.alloc_tensors_by_stealing_from_void_ptrs(
            [self._wrap(handle, None, None) for handle in outputs])


def _unpack_library(package: Path, library: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        name = next((n for n in archive.namelist()
                     if n.endswith(".so") and "/data/aotinductor/model/" in n), None)
        if name is None:  # another package layout: torch's loader will do
            raise KeyError(f"no model library in {package.name}")
        with _written_whole(library) as tmp:
            tmp.write_bytes(archive.read(name))


def _prune_cache_once(cache: Path) -> None:
    """Keep the compile cache bounded (stylempi.network.compile_cache), once per process and cache.
    A failure here never fails a job: the cache is only an optimisation."""
    if str(cache) in _pruned:
        return
    _pruned.add(str(cache))
    try:
        prune_compile_cache(cache, PACKAGE_FORMAT)
    except OSError:
        pass


@contextlib.contextmanager
def _reductions_split_by_outer_loops_only():
    """Keep Inductor's C++ kernels from splitting a reduction across threads.

    Why: when a reduction's own loop is much longer than the loops around it
    (an instance norm: a few (frame, channel) pairs around every pixel of a
    frame), Inductor gives each thread a slice of the reduction and combines
    the partial results, so the rounding depends on the thread count. A rank's
    thread count depends on how many ranks share the node, so ``mpirun -n 1``
    and ``-n 2`` would compute different pixels. Parallelising over the outer
    loops only (each mean and variance summed by one thread, in one order)
    gives the same pixels for every thread count, and the outer loops still
    run in parallel (docs/benchmarks.md, "Why the stylizer does what it does"). Patches the private
    ``LoopNest.max_parallel_depth`` for the duration of the compile only (if a
    torch release moves it, compile as it is).
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
