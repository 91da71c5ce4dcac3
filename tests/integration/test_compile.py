"""The compiled network (``--compile``): when it is used, and that it computes the
same pixels whatever the rank count.

A rank's thread count is the node's cores divided by the ranks sharing it, so
``mpirun -n 1`` and ``mpirun -n 2`` run the network with different thread
counts. These tests compile a small network for real (AOTInductor, a C++
compiler) and need no reference data.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

from stylempi.errors import UsageError
from stylempi.network.model import TransformerNet
from stylempi.network.aot import GilFreeRunner
from stylempi.network.placement import COMPILE_MIN_FRAMES, have_c_compiler, resolve_compile
from stylempi.network.stylize import NetworkStylizer

CPU = torch.device("cpu")
needs_compiler = pytest.mark.skipif(not have_c_compiler(), reason="no C++ compiler for Inductor")


def test_auto_depends_on_the_video_alone():
    assert resolve_compile("auto", CPU, COMPILE_MIN_FRAMES) is have_c_compiler()
    assert resolve_compile("auto", CPU, COMPILE_MIN_FRAMES - 1) is False
    assert resolve_compile("off", CPU, 10**6) is False
    assert resolve_compile("auto", torch.device("cuda"), 10**6) is False
    with pytest.raises(UsageError, match="--compile must be one of"):
        resolve_compile("sometimes", CPU, 1)


def _stylize_compiled(threads: int, cache, frames, precision: str) -> list[np.ndarray]:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        stylizer = NetworkStylizer(TransformerNet(4), CPU, precision, 2, compile=True, require_compile=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = stylizer(frames)
        # torch's own deprecation notices during a compile would be printed by every rank.
        assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
        assert stylizer._runners and all(isinstance(r, GilFreeRunner) for r in stylizer._runners.values())
        assert ".pt2" in {p.suffix for p in cache.iterdir() if p.is_file()}
        return result
    finally:
        torch.set_num_threads(old)


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_pixels_do_not_depend_on_the_thread_count(tmp_path, monkeypatch, precision):
    # 96x72 frames, batch 2, width 4: the first instance norm sums 6,912 pixels inside 8
    # (frame, channel) pairs, long enough that Inductor would split it across threads.
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(3)]  # 3: a padded batch
    outputs = []
    for threads in (1, 2):
        cache = tmp_path / f"threads-{threads}"
        monkeypatch.setenv("STYLEMPI_COMPILE_CACHE", str(cache))
        outputs.append(_stylize_compiled(threads, cache, frames, precision))
    one, two = outputs
    assert [f.shape for f in one] == [(72, 96, 3)] * 3
    assert all(np.array_equal(a, b) for a, b in zip(one, two)), \
        "the compiled network computed different pixels with 1 and 2 threads"


@needs_compiler
@pytest.mark.slow
def test_compiled_network_lets_other_threads_run(tmp_path, monkeypatch, one_torch_thread):
    """Decode and encode run in threads beside the network: the compiled call must release the GIL.

    A spinning Python thread is counted during compiled calls and during a sleep of the same
    length: holding the GIL, a call would let it run only for a switch interval or two.
    """
    import time
    monkeypatch.setenv("STYLEMPI_COMPILE_CACHE", str(tmp_path))
    torch.manual_seed(0)
    stylizer = NetworkStylizer(TransformerNet(8), CPU, "fp32", 2, compile=True, require_compile=True)
    frames = [np.zeros((360, 640, 3), np.uint8)] * 2
    stylizer(frames)  # compile
    batch = torch.from_numpy(np.stack(frames))
    runner = next(iter(stylizer._runners.values()))
    ticks, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        before, started = ticks[0], time.perf_counter()
        for _ in range(3):
            runner(batch)
        during, seconds = ticks[0] - before, time.perf_counter() - started
        before = ticks[0]
        time.sleep(seconds)
        free = ticks[0] - before
    finally:
        stop.set()
        spinner.join()
    assert during > 0.3 * free, f"another thread ran {during} steps during {seconds:.2f} s of compiled calls, " \
                                f"{free} during a sleep as long"
