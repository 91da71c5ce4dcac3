"""Keeping the compile cache bounded: by age, by size, and free of packages no job can load.

The cache (:func:`stylempi.network.aot.compile_cache_dir`) holds one compiled
package per model, precision, frame size, batch, thread count, CPU and torch
build (``vFORMAT-KEY.pt2``, with its library unpacked beside it as
``vFORMAT-KEY.so``), plus Inductor's own caches under ``inductor/``. Without
limits it only grows: every new frame size or model adds tens of MB, and a
package of an older format is never loaded again.

Rules, applied by every process after it has loaded its own package:

* a package of another format (or one named before formats were in names) is removed;
* a package unused for ``STYLEMPI_COMPILE_CACHE_DAYS`` days (default 30) is removed;
* then, while the packages total more than ``STYLEMPI_COMPILE_CACHE_MB`` (default 2048),
  the least recently used one is removed;
* files under ``inductor/`` unchanged for that many days are removed;
* a leftover ``.partial-*`` file of a killed compile is removed after a day.

"Used" is the file's mtime: loading a package touches it first. Safe with
concurrent ranks and jobs: nothing used in the last hour is ever removed (a rank
loading a package has just touched it), removal is a plain unlink (a rank that
has the library open keeps its copy; Linux frees it at close), two cleaners
removing the same file both succeed, and a rank whose package vanishes
between its touch and its load compiles it again instead of failing.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

ENV_MAX_MB = "STYLEMPI_COMPILE_CACHE_MB"
ENV_MAX_DAYS = "STYLEMPI_COMPILE_CACHE_DAYS"
DEFAULT_MAX_MB = 2048
DEFAULT_MAX_DAYS = 30.0
#: Nothing used this recently is removed: a rank of a running job may be loading it.
GRACE_S = 3600.0
#: A ``.partial-`` file younger than this may be a compile in progress.
PARTIAL_GRACE_S = 86400.0
_NAME = re.compile(r"^v(\d+)-([0-9a-f]+)$")


@dataclass(frozen=True)
class Entry:
    """One package (its .pt2 and .so together), or one leftover partial file."""

    stem: str
    files: tuple[str, ...]
    size: int
    used: float
    format: int | None
    partial: bool = False


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_age_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Limits":
        env = os.environ if env is None else env
        return cls(int(_number(env.get(ENV_MAX_MB), DEFAULT_MAX_MB) * 1024 * 1024),
                   _number(env.get(ENV_MAX_DAYS), DEFAULT_MAX_DAYS) * 86400.0)


def _number(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value >= 0 else default


def package_stem(key: str, fmt: int) -> str:
    """The file name (without suffix) of a package: the format is readable without loading it."""
    return f"v{fmt}-{key}"


def package_format(stem: str) -> int | None:
    match = _NAME.match(stem)
    return int(match.group(1)) if match else None


def plan_removals(entries: Iterable[Entry], now: float, current_format: int, limits: Limits,
                  grace_s: float = GRACE_S) -> list[Entry]:
    """Which entries to remove (pure: no I/O), by the rules in the module docstring."""
    remove: list[Entry] = []
    keep: list[Entry] = []
    for entry in entries:
        age = now - entry.used
        if entry.partial:
            (remove if age > PARTIAL_GRACE_S else keep).append(entry)
        elif age < grace_s:
            keep.append(entry)
        elif entry.format != current_format or age > limits.max_age_s:
            remove.append(entry)
        else:
            keep.append(entry)
    total = sum(e.size for e in keep)
    for entry in sorted((e for e in keep if not e.partial), key=lambda e: e.used):
        if total <= limits.max_bytes:
            break
        if now - entry.used >= grace_s:
            remove.append(entry)
            total -= entry.size
    return remove


def scan(cache: Path) -> list[Entry]:
    """The packages and partial files directly in CACHE (files vanishing meanwhile are skipped)."""
    groups: dict[str, list[tuple[str, os.stat_result]]] = {}
    try:
        names = os.listdir(cache)
    except FileNotFoundError:
        return []
    for name in names:
        if not (name.endswith(".pt2") or name.endswith(".so")):
            continue
        try:
            st = os.stat(cache / name)
        except FileNotFoundError:
            continue
        groups.setdefault(name if name.startswith(".partial-") else name.rsplit(".", 1)[0], []).append((name, st))
    entries = []
    for stem, files in groups.items():
        entries.append(Entry(stem=stem, files=tuple(n for n, _ in files), size=sum(s.st_size for _, s in files),
                             used=max(s.st_mtime for _, s in files), format=package_format(stem),
                             partial=stem.startswith(".partial-")))
    return entries


def prune(cache: Path, current_format: int, limits: Limits | None = None, now: float | None = None) -> list[str]:
    """Apply the rules to CACHE; returns the file names removed. Never raises for files that
    other processes remove or use meanwhile."""
    limits = limits or Limits.from_env()
    now = time.time() if now is None else now
    removed = []
    for entry in plan_removals(scan(cache), now, current_format, limits):
        for name in entry.files:
            path = cache / name
            try:
                if not entry.partial and now - path.stat().st_mtime < GRACE_S:
                    break  # touched since the scan: a rank is loading it
                path.unlink()
                removed.append(name)
            except FileNotFoundError:
                continue
            except OSError:
                break
    removed += _prune_old_files(cache / "inductor", now - limits.max_age_s)
    return removed


def _prune_old_files(root: Path, older_than: float) -> list[str]:
    removed = []
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            try:
                if path.lstat().st_mtime < older_than:
                    path.unlink()
                    removed.append(str(path.relative_to(root.parent)))
            except OSError:
                continue
        if folder != str(root):
            try:
                os.rmdir(folder)  # only when empty
            except OSError:
                pass
    return removed


def touch(path: Path) -> bool:
    """Mark a package used now; False when it is not there (then compile it)."""
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False
