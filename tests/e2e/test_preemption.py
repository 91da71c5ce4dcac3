"""A preemption storm, short version: kill -9 a random rank at random moments, rerun, repeat.

benchmarks/preemption.py does the work (real ``mpirun``, the real CLI, 3 ranks,
a 60-chunk job); this runs it with 3 kills and checks what it promises: the
output passes ``verify`` and decodes to exactly the frames of an uninterrupted
run, no finished chunk is ever redone (the storm raises if a chunk record is
rewritten), the last run reuses every chunk finished before it, and the work
lost per kill is at most the chunks in flight. The long version (40 kills) is
``python benchmarks/preemption.py``; its figures are in docs/benchmarks.md.
"""
from __future__ import annotations

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import preemption  # noqa: E402


@pytest.mark.slow
def test_preemption_storm_short(tmp_path):
    result = preemption.storm(tmp_path, ranks=3, frames=240, chunk_frames=4, kills=3, seed=1, size=(256, 192))
    assert result["chunks"] >= 40
    assert result["kills"] == 3, result["history"]
    assert result["verify_ok"]
    assert result["same_frames_as_uninterrupted"]
    last = result["history"][-1]
    assert result["reused_in_last_run"] == last["done_at_start"] > 0, result["history"]
    assert result["max_redone_frames_per_kill"] <= result["in_flight_bound_frames"], result
