"""The planner: every frame exactly once, in order, whatever the layout and rank count."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from stylempi.job.plan import assign_chunks, plan_chunks


@st.composite
def layouts(draw):
    steps = draw(st.lists(st.integers(1, 5000), min_size=0, max_size=400))
    start = draw(st.integers(-10_000, 10_000))
    pts, t = [], start
    for step in steps:
        pts.append(t)
        t += step
    keys = draw(st.sets(st.sampled_from(pts), max_size=len(pts))) if pts else set()
    if pts and draw(st.booleans()):
        keys.add(pts[0])
    return pts, keys


@settings(max_examples=300, deadline=None)
@given(layouts(), st.integers(1, 100), st.integers(1, 64), st.integers(0, 60))
def test_chunks_cover_every_frame_once_in_order(layout, target, ranks, warmup):
    pts, keys = layout
    chunks = plan_chunks(pts, keys, target)
    flat = [p for c in chunks for p in c.pts]
    assert flat == pts
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(1 <= c.frames <= 2 * target for c in chunks)
    # Every chunk but the last ends either at a keyframe boundary past the target, or at 2*target.
    for chunk, following in zip(chunks, chunks[1:]):
        assert following.first in keys and chunk.frames >= target or chunk.frames == 2 * target

    assigned = assign_chunks(chunks, ranks, warmup)
    assert len(assigned) == ranks
    order = [c.index for rank in assigned for c in rank]
    assert order == list(range(len(chunks)))  # contiguous runs, in order, each chunk once


@settings(max_examples=100, deadline=None)
@given(layouts(), st.integers(1, 50))
def test_plan_does_not_depend_on_rank_count(layout, target):
    pts, keys = layout
    assert plan_chunks(pts, keys, target) == plan_chunks(list(pts), set(keys), target)


def test_balanced_assignment():
    chunks = plan_chunks(list(range(1000)), set(range(0, 1000, 10)), 10)
    sizes = [sum(c.frames for c in rank) for rank in assign_chunks(chunks, 7)]
    assert sum(sizes) == 1000
    assert max(sizes) - min(sizes) <= 10


@pytest.mark.parametrize("ranks", [2, 3, 7])
def test_a_run_that_warms_the_filter_up_gets_fewer_frames(ranks):
    """The slowest rank sets the job's time: frames plus warm-up come out even, where counting
    frames alone leaves every rank but the first a whole warm-up behind."""
    chunks = plan_chunks(list(range(600)), set(range(0, 600, 4)), 4)
    frames_only = assign_chunks(chunks, ranks)
    assigned = assign_chunks(chunks, ranks, warmup=20)
    assert [c.index for rank in assigned for c in rank] == list(range(len(chunks)))

    def costs(runs):
        return [sum(c.frames for c in run) + (20 if run and run[0].index else 0) for run in runs]
    assert max(costs(assigned)) - min(costs(assigned)) <= 4
    assert max(costs(assigned)) <= max(costs(frames_only)) - 4
    assert assign_chunks(chunks, ranks, warmup=0) == frames_only


def test_a_warm_up_longer_than_a_share_leaves_the_video_to_the_first_rank():
    chunks = plan_chunks(list(range(40)), set(range(0, 40, 8)), 8)
    assert [len(r) for r in assign_chunks(chunks, 3, warmup=100)] == [5, 0, 0]


def test_more_ranks_than_chunks_leaves_idle_ranks():
    chunks = plan_chunks([0, 1, 2], {0, 1, 2}, 1)
    assigned = assign_chunks(chunks, 5)
    assert [len(r) for r in assigned] == [1, 1, 1, 0, 0]


def test_keyframe_alignment():
    pts = list(range(100))
    chunks = plan_chunks(pts, {0, 30, 60, 90}, 25)
    assert [c.first for c in chunks] == [0, 30, 60, 90]
    assert plan_chunks(pts, {0}, 25)[1].first == 50  # sparse keyframes: cut at 2*target


def test_auto_chunk_length_depends_on_video_only():
    from stylempi.job.plan import auto_chunk_frames
    assert auto_chunk_frames(1) == 8
    assert auto_chunk_frames(90) == 8
    assert auto_chunk_frames(300) == 19
    assert auto_chunk_frames(100_000) == 48
