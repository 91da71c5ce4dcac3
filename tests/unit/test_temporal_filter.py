"""The temporal filter, its cut detector and its plan: pure logic on generated frames.

Each test fails without the filter (or with the part it checks broken): the pan's E_warp is
the unfiltered one, a cut would carry the previous shot, a slow pan or fade would reset.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from stylempi.media.cuts import CutDetector, content_score  # noqa: E402
from stylempi.job.plan import Chunk, plan_chunks, warmup_frames  # noqa: E402
from stylempi.tools.stability import warping_error  # noqa: E402
from stylempi.network.temporal_filter import FilterSettings, TemporalFilter  # noqa: E402


def texture(height: int, width: int, seed: int = 0, blob: float = 6.0) -> np.ndarray:
    """A random texture of blobs a few pixels wide (noise blurred by a Gaussian of sigma ``blob``,
    stretched to a standard deviation of 50 grey levels), RGB uint8: optical flow can lock on to
    it, as on a photo."""
    import cv2
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32), (0, 0), blob)
    return np.clip((noise - noise.mean()) / noise.std() * 50 + 128, 0, 255).astype(np.uint8)


def pan(frames: int, step: int = 2, size: tuple[int, int] = (96, 160), seed: int = 0,
        blob: float = 6.0) -> list[np.ndarray]:
    """A textured picture moved by ``step`` whole pixels a frame (a camera pan)."""
    h, w = size
    big = texture(h, w + step * frames, seed, blob)
    return [np.ascontiguousarray(big[:, step * t:step * t + w]) for t in range(frames)]


def noisy_stylizer(frames: list[np.ndarray], sigma: float = 12.0, seed: int = 1) -> list[np.ndarray]:
    """A stand-in network that paints fresh noise on every frame: strokes that shimmer."""
    rng = np.random.default_rng(seed)
    return [np.clip(f.astype(np.float32) + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8) for f in frames]


def filtered(inputs, styled, settings=FilterSettings(), cuts=None):
    f = TemporalFilter(settings)
    return [f.step(i, s, cut=bool(cuts and t in cuts)) for t, (i, s) in enumerate(zip(inputs, styled))]


def test_a_pan_with_fresh_noise_every_frame_is_steadied_at_least_four_times():
    inputs = pan(30)
    styled = noisy_stylizer(inputs)
    off = warping_error(inputs, styled).output
    on = warping_error(inputs, filtered(inputs, styled)).output
    assert off / on >= 4.0, (off, on)


def test_a_frame_that_moves_fast_gets_the_fast_motion_settings_and_a_slow_one_the_others():
    import cv2
    settings = FilterSettings()
    assert settings.fast_motion > 0
    coarse = TemporalFilter(dataclasses.replace(settings, fast_motion=0.0))
    fine = TemporalFilter(dataclasses.replace(settings, fast_motion=0.0,
                                              brightness_sigma=settings.fast_brightness_sigma))
    fine._dis.setFinestScale(settings.fast_finest_scale)
    for step, expected in ((8, fine), (1, coarse)):
        # the flow's own size, as the filter scales frames for it (1 pixel at 360 rows: half a pixel there)
        a, b = (coarse._small_grey(f) for f in pan(2, step=step, size=(360, 640)))
        flow, weight = TemporalFilter(settings).weights(a, b)
        want_flow, want_weight = expected.weights(a, b)
        assert not np.array_equal(flow, (coarse if expected is fine else fine).weights(a, b)[0])
        assert np.array_equal(flow, want_flow) and np.array_equal(weight, want_weight), step


def test_a_fast_pan_is_steadied_better_than_by_the_coarse_flow_alone():
    """The coarse flow's error grows with the motion, and carried strokes follow it (at 360 rows,
    the size the levels are set for; without the rule both outputs are the same)."""
    inputs = pan(20, step=8, size=(360, 640))
    styled = noisy_stylizer(inputs)
    off = warping_error(inputs, styled).output
    coarse = warping_error(inputs, filtered(inputs, styled, FilterSettings(fast_motion=0.0))).output
    on = warping_error(inputs, filtered(inputs, styled)).output
    assert off / on >= 80 and coarse / on >= 1.1, (off / on, off / coarse)


def test_a_sharp_fast_pan_whose_motion_blur_changes_every_frame_is_still_steadied():
    """A hand-held camera's motion blur changes with its speed: the brightness check must not take
    that for an occlusion and let the network's shimmer through."""
    import cv2
    inputs = [cv2.blur(f, (1 + 8 * (t % 2), 1)) for t, f in enumerate(pan(12, step=8, blob=1.5, size=(360, 640)))]
    styled = noisy_stylizer(inputs)
    off = warping_error(inputs, styled).output
    on = warping_error(inputs, filtered(inputs, styled)).output
    assert off / on >= 8, off / on


def sharpness(frame: np.ndarray) -> float:
    g = frame.astype(np.float32).mean(-1)
    return float(np.mean(np.hypot(np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1])))


def test_the_filter_keeps_the_picture_where_the_network_is_steady():
    """A network without shimmer loses nothing: no blur, no drift from the network's frame."""
    inputs = pan(24)
    out = filtered(inputs, inputs)
    assert sharpness(out[-1]) >= 0.9 * sharpness(inputs[-1])
    assert np.abs(out[-1].astype(int) - inputs[-1].astype(int)).mean() < 6


def test_first_frame_and_a_cut_give_the_network_frame_bit_for_bit():
    inputs = pan(10, seed=2) + pan(10, seed=3)
    styled = noisy_stylizer(inputs)
    out = filtered(inputs, styled, cuts={10})
    assert out[0].tobytes() == styled[0].tobytes()
    assert out[10].tobytes() == styled[10].tobytes()
    assert out[11].tobytes() != styled[11].tobytes()  # the filter works again right after


def test_the_output_is_a_pure_function_of_the_frames_since_the_reset():
    inputs = pan(12)
    styled = noisy_stylizer(inputs)
    once = [o.tobytes() for o in filtered(inputs, styled)]
    again = TemporalFilter()
    for i, s in zip(inputs[:5], noisy_stylizer(pan(5, seed=9))):  # other frames first...
        again.step(i, s)
    again.reset()  # ...forgotten
    assert [again.step(i, s).tobytes() for i, s in zip(inputs, styled)] == once


def test_a_warm_up_over_frames_just_filtered_reuses_their_flow_and_gives_the_same_pixels():
    """A rank that runs two chunks in a row warms the second up over the first's tail: the flows
    between those frames are remembered by their keys, not computed again, and nothing changes."""
    inputs = pan(14)
    styled = noisy_stylizer(inputs)

    class Counting(TemporalFilter):
        calls = 0

        def weights(self, previous_grey, grey):
            Counting.calls += 1
            return super().weights(previous_grey, grey)

    fresh = TemporalFilter()
    expected = [fresh.step(i, s) for i, s in zip(inputs[8:], styled[8:])]  # a chunk warmed up on 8..13
    again = Counting(remember=8)
    [again.step(i, s, key=k) for k, (i, s) in enumerate(zip(inputs, styled))]  # the chunk before
    before = Counting.calls
    again.reset()
    replayed = [again.step(i, s, key=k) for k, (i, s) in enumerate(zip(inputs[8:], styled[8:]), start=8)]
    assert Counting.calls == before  # every pair of the replay was remembered
    assert all(np.array_equal(a, b) for a, b in zip(expected, replayed))


def test_deep_frames_keep_their_depth():
    inputs = [f.astype(np.uint16) * 257 for f in pan(4)]
    out = filtered(inputs, inputs)
    assert all(o.dtype == np.uint16 for o in out)
    assert np.abs(out[-1].astype(int) - inputs[-1].astype(int)).mean() < 257


def test_a_hard_cut_is_found_and_nothing_else():
    a, b = pan(6, seed=4), pan(6, seed=5)
    detector = CutDetector()
    flags = [detector.is_cut(f) for f in a + b]
    assert flags == [True] + [False] * 5 + [True] + [False] * 5


def test_a_slow_pan_and_a_fade_do_not_cut():
    detector = CutDetector()
    frames = pan(20, step=3)
    assert [detector.is_cut(f) for f in frames] == [True] + [False] * 19
    picture = pan(1, seed=6)[0].astype(np.float32)
    fade = [np.clip(picture * (1 - t / 30), 0, 255).astype(np.uint8) for t in range(30)]  # to black in 1 s
    detector = CutDetector()
    assert [detector.is_cut(f) for f in fade] == [True] + [False] * 29
    assert content_score(fade[0], fade[1]) < 5


def test_warm_up_frames_are_the_tail_of_the_chunk_before_in_its_own_batches():
    pts = list(range(0, 100))
    chunks = plan_chunks(pts, {0, 10, 20, 30, 40}, 10)
    assert warmup_frames(chunks, 0, 6) == ((), None)
    assert warmup_frames(chunks, 2, 6) == (tuple(range(14, 20)), 10)
    assert warmup_frames(chunks, 2, 6, batch=3) == (tuple(range(13, 20)), 10)  # batches 10-12, 13-15...
    assert warmup_frames(chunks, 2, 0) == ((), None)
    short = [Chunk(0, (0, 1)), Chunk(1, (2, 3, 4), 2), Chunk(2, (5, 6), 5)]
    assert warmup_frames(short, 2, 4) == ((1, 2, 3, 4), None)  # over two chunks
    assert warmup_frames(short, 2, 4, batch=2) == ((0, 1, 2, 3, 4), None)  # chunk 0's batch (0, 1) whole
    assert warmup_frames(short, 2, 2, batch=2) == ((2, 3, 4), 2)  # from the batch that holds frame 3


def test_the_key_changes_only_when_the_filter_is_on(tmp_path):
    from stylempi.job import key as prep
    from stylempi.media.engines import DEFAULT_CONVERT, DEFAULT_DECODE
    from stylempi.options import PLAIN_LOOK
    import json
    from stylempi import __version__
    base = {"input_size": 5, "input_sha256": hashlib.sha256(b"video").hexdigest(), "video_stream": 0,
            "model_sha256": hashlib.sha256(b"model").hexdigest(), "precision": "bf16",
            "encoding": {"codec": "libx264"}, "chunk_frames": 8, "compile": "auto", "look": PLAIN_LOOK,
            "engines": {"decode": DEFAULT_DECODE, "convert": DEFAULT_CONVERT}}
    old = prep.job_key({**base, "temporal": None})
    on = prep.job_key({**base, "temporal": FilterSettings().as_dict()})
    assert on != old
    assert prep.job_key({**base, "temporal": FilterSettings(weight=0.5).as_dict()}) != on
    # today's key, computed as main computed it before the filter existed (format 2)
    identity = {"format": prep.WORK_FORMAT, "stylempi": __version__,
                **{k: v for k, v in base.items() if k not in ("look", "engines")}}
    assert old == hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
