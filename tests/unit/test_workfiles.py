"""The work dir's files (stylempi.job.workfiles) and the atomic writes under them (stylempi.storage.files); pure."""
from __future__ import annotations

import pytest

from stylempi.storage.files import atomic_write, sha256_file
from stylempi.job.plan import Chunk
from stylempi.job.workfiles import finished_pairs, reusable, segment_path, write_record


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "plan.json"
    with atomic_write(path) as f:
        f.write(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temp file left behind


def test_finished_pairs_need_segment_and_record():
    names = ["chunk-00001.json", "chunk-00001.nut", "chunk-00002.json", "chunk-00003.nut", "plan.json",
             "chunk-00004.partial.nut", "chunk-123456.json", "chunk-123456.nut"]
    assert finished_pairs(names) == [("chunk-00001.nut", "chunk-00001.json"),
                                     ("chunk-123456.nut", "chunk-123456.json")]


def test_reusable_checks_record_and_checksum(tmp_path):
    chunks = [Chunk(index=i, pts=(10 * i, 10 * i + 1), seek_from=10 * i) for i in range(3)]
    for chunk in chunks[:2]:
        segment_path(tmp_path, chunk.index).write_bytes(b"segment %d" % chunk.index)
        write_record(tmp_path, chunk, sha256_file(segment_path(tmp_path, chunk.index)))
    segment_path(tmp_path, 1).write_bytes(b"damaged")
    assert reusable(tmp_path, chunks) == ([1, 2], 2)
