"""The files of a job's work dir: ``plan.json``, and a segment and a record per finished chunk.

::

    .OUTPUT.stylempi/          the work root of one OUTPUT (stylempi.job.worklock's ``lock`` is here)
        KEY/                   one job, named by its key (stylempi.job.key.job_key)
            plan.json          what rank 0 planned (for people and tools; resume does not read it)
            chunk-00000.nut    chunk 0's encoded frames (written as chunk-00000.partial.nut, renamed when whole)
            chunk-00000.json   its record: frames, first and last pts, the segment's SHA-256; written last

A chunk is finished exactly when its record exists and its segment matches the
record's checksum: a later run reuses it and redoes everything else. Torch-free
and PyAV-free: Blob staging (stylempi.job.staging) moves the same files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import OutputFailure
from ..storage.files import atomic_write, sha256_file
from .plan import Chunk

PLAN_NAME = "plan.json"
_PREFIX, _SEGMENT, _RECORD = "chunk-", ".nut", ".json"


def segment_name(index: int) -> str:
    return f"{_PREFIX}{index:05d}{_SEGMENT}"


def record_name(index: int) -> str:
    return f"{_PREFIX}{index:05d}{_RECORD}"


def segment_path(job_dir: str | os.PathLike, index: int) -> Path:
    return Path(job_dir) / segment_name(index)


def record_path(job_dir: str | os.PathLike, index: int) -> Path:
    return Path(job_dir) / record_name(index)


def partial_segment_path(job_dir: str | os.PathLike, index: int) -> Path:
    """Where a segment is encoded until it is whole (then renamed to :func:`segment_path`)."""
    final = segment_path(job_dir, index)
    return final.with_name(final.stem + ".partial" + _SEGMENT)


def finished_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """(segment, record) names of the chunks whose record and segment are both among NAMES, sorted."""
    present = set(names)
    pairs = []
    for name in sorted(present):
        if name.startswith(_PREFIX) and name.endswith(_RECORD):
            segment = name[:-len(_RECORD)] + _SEGMENT
            if segment in present:
                pairs.append((segment, name))
    return pairs


def read_record(path: str | os.PathLike) -> dict | None:
    """The JSON object at PATH, or None when it is missing or unreadable (a torn or foreign file)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write atomically: a reader sees the old file or the whole new one."""
    try:
        with atomic_write(path) as f:
            f.write(json.dumps(data, indent=1).encode())
    except OSError as exc:
        raise OutputFailure(f"cannot write {path}: {exc.strerror or exc}") from None


def write_record(job_dir: str | os.PathLike, chunk: Chunk, sha256: str) -> Path:
    """Mark CHUNK finished (its segment is in place, with this checksum); returns the record's path."""
    path = record_path(job_dir, chunk.index)
    write_json(path, {"index": chunk.index, "frames": chunk.frames, "first_pts": chunk.first,
                      "last_pts": chunk.last, "sha256": sha256})
    return path


def segment_matches(segment: str | os.PathLike, record: dict) -> bool:
    """Whether SEGMENT's bytes are the ones RECORD's checksum names."""
    return sha256_file(segment) == record.get("sha256")


def reusable(job_dir: str | os.PathLike, chunks: Sequence[Chunk]) -> tuple[list[int], int]:
    """Indexes of the chunks still to do, and the frames already done (checksums verified)."""
    pending: list[int] = []
    reused = 0
    for chunk in chunks:
        record = read_record(record_path(job_dir, chunk.index))
        segment = segment_path(job_dir, chunk.index)
        if (record and record.get("frames") == chunk.frames and record.get("first_pts") == chunk.first
                and record.get("last_pts") == chunk.last and segment.is_file()
                and segment_matches(segment, record)):
            reused += chunk.frames
        else:
            pending.append(chunk.index)
    return pending, reused
