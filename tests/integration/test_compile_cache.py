"""The compile cache stays bounded: old formats, age and size limits, concurrent cleaners.

The rules are pure (plan_removals); prune() is checked on real files with set
mtimes, with several processes pruning one cache at once, and once after a real
compile (AOTInductor) to see the job itself clean up.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from stylempi.network import compile_cache
from stylempi.network.compile_cache import Entry, Limits, plan_removals

NOW = 1_000_000_000.0
DAY = 86400.0
MB = 1024 * 1024
LIMITS = Limits(max_bytes=100 * MB, max_age_s=30 * DAY)


def entry(stem, size_mb=10, age_s=2 * DAY, partial=False):
    return Entry(stem=stem, files=(stem + ".pt2",), size=int(size_mb * MB), used=NOW - age_s,
                 format=compile_cache.package_format(stem), partial=partial)


def removed(entries, limits=LIMITS):
    return sorted(e.stem for e in plan_removals(entries, NOW, 5, limits))


def test_old_formats_and_legacy_names_go():
    assert removed([entry("v5-aa"), entry("v4-bb"), entry("0123abcd"), entry("v6-cc")]) == ["0123abcd", "v4-bb", "v6-cc"]


def test_unused_for_too_long_goes():
    assert removed([entry("v5-aa", age_s=31 * DAY), entry("v5-bb", age_s=29 * DAY)]) == ["v5-aa"]


def test_over_the_size_cap_least_recently_used_go_first():
    entries = [entry(f"v5-{i:02x}", size_mb=30, age_s=(i + 2) * 3600) for i in range(5)]  # 150 MB
    # 150 MB > 100 MB: the two least recently used (largest age) go, leaving 90 MB.
    assert removed(entries) == ["v5-03", "v5-04"]


def test_recently_used_packages_are_never_removed():
    fresh = [entry("v4-old-format", age_s=60), entry("v5-big", size_mb=500, age_s=60)]
    assert removed(fresh) == []  # another rank may be loading them right now


def test_partial_files_of_killed_compiles_go_after_a_day():
    assert removed([entry(".partial-x", age_s=2 * DAY, partial=True),
                    entry(".partial-y", age_s=3600 * 2, partial=True)]) == [".partial-x"]


def test_limits_from_env():
    limits = Limits.from_env({compile_cache.ENV_MAX_MB: "512", compile_cache.ENV_MAX_DAYS: "7"})
    assert (limits.max_bytes, limits.max_age_s) == (512 * MB, 7 * DAY)
    assert Limits.from_env({compile_cache.ENV_MAX_MB: "lots"}).max_bytes == compile_cache.DEFAULT_MAX_MB * MB


def _make(cache: Path, name: str, size: int, age_s: float, now: float) -> Path:
    path = cache / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (now - age_s, now - age_s))
    return path


def _populate(cache: Path, now: float) -> set[str]:
    """A cache of 60 packages (.pt2 + .so), some old formats, some stale, over the cap;
    returns the names prune must remove."""
    gone = set()
    for i in range(60):
        stem = f"v{4 if i % 5 == 0 else 5}-{i:04x}"
        age = (40 if i % 7 == 0 else 2) * DAY + i * 60
        for suffix in (".pt2", ".so"):
            _make(cache, stem + suffix, 1000, age, now)
        if i % 5 == 0 or i % 7 == 0:
            gone |= {stem + ".pt2", stem + ".so"}
    _make(cache, "v5-fresh.pt2", 50_000, 30, now)  # in use by a running job: stays, though huge
    _make(cache, "inductor/ab/old.cpp", 10, 40 * DAY, now)
    _make(cache, "inductor/cd/new.cpp", 10, 1 * DAY, now)
    gone.add("inductor/ab/old.cpp")
    return gone


def test_prune_removes_what_the_rules_say(tmp_path):
    now = time.time()
    gone = _populate(tmp_path, now)
    limits = Limits(max_bytes=1_000_000, max_age_s=30 * DAY)  # under the cap: format and age rules only
    assert set(compile_cache.prune(tmp_path, 5, limits, now)) == gone
    assert (tmp_path / "v5-fresh.pt2").is_file() and (tmp_path / "inductor/cd/new.cpp").is_file()
    assert not (tmp_path / "inductor/ab").exists()
    # 41 packages of 2 kB and the fresh 50 kB one: over a 60 kB cap the least recently used
    # packages go, never the fresh one.
    limits = Limits(max_bytes=60_000, max_age_s=30 * DAY)
    compile_cache.prune(tmp_path, 5, limits, now)
    left = sum(p.stat().st_size for p in tmp_path.glob("v*"))
    assert left <= 60_000 and (tmp_path / "v5-fresh.pt2").is_file()


def _prune_worker(args):
    cache, now, barrier = args
    barrier.wait()
    return compile_cache.prune(Path(cache), 5, Limits(max_bytes=1_000_000, max_age_s=30 * DAY), now)


def test_concurrent_cleaners_remove_each_file_once_and_never_fail(tmp_path):
    now = time.time()
    gone = _populate(tmp_path, now)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            results = pool.map(_prune_worker, [(str(tmp_path), now, barrier)] * 4)
    everything = [name for result in results for name in result]
    assert sorted(everything) == sorted(gone)  # each removal done by exactly one cleaner, none failed
    assert (tmp_path / "v5-fresh.pt2").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not __import__("stylempi.network.placement", fromlist=["x"]).have_c_compiler(),
                    reason="no C++ compiler for Inductor")
def test_a_real_compile_names_its_package_by_format_and_cleans_old_ones(tmp_path, monkeypatch):
    import torch
    from stylempi.network import aot, stylize
    from stylempi.network.model import TransformerNet
    now = time.time()
    _make(tmp_path, "v1-0123.pt2", 1000, 3 * DAY, now)     # an old format
    _make(tmp_path, "89abcdef0123.pt2", 1000, 3 * DAY, now)  # named before formats were in names
    _make(tmp_path, ".partial-dead.pt2", 1000, 2 * DAY, now)  # a killed compile's leftover
    monkeypatch.setenv("STYLEMPI_COMPILE_CACHE", str(tmp_path))
    monkeypatch.setattr(aot, "_pruned", set())
    torch.manual_seed(0)
    stylizer = stylize.NetworkStylizer(TransformerNet(4), torch.device("cpu"), "fp32", 2, compile=True,
                                       require_compile=True)
    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    assert [f.shape for f in stylizer(frames)] == [(16, 16, 3)] * 2
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert all(n.startswith(f"v{aot.PACKAGE_FORMAT}-") for n in names), names
    assert any(n.endswith(".pt2") for n in names)
