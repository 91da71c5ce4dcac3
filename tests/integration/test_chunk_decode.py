"""Chunks decode to exactly the frames a sequential decode gives, pixel for pixel.

Every rank decodes its chunks by seeking; a seek point that is not a clean
start, or decoder state that only the stream's first packet carries, would
give wrong pixels with the right timestamps -- invisible to `verify`, which
compares timestamps, sizes and audio. These tests compare pixels.
"""
from __future__ import annotations

import hashlib

import av
import pytest

import clips
from conftest import need_shared
from stylempi.media import decode_frames, index_frames, open_input, pick_video_stream
from stylempi.job.plan import plan_chunks


def _sequential(path, stream_index: int) -> dict[int, str]:
    with av.open(str(path)) as container:
        return {f.pts: hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest()
                for f in container.decode(container.streams[stream_index])}


def _chunked(path, stream_index: int, target: int) -> tuple[dict[int, str], list[int]]:
    index = index_frames(path, stream_index)
    damaged: list[int] = []
    out: dict[int, str] = {}
    for chunk in plan_chunks(index.pts, index.keyframes, target):
        for pts, rgb in decode_frames(path, stream_index, chunk.pts, damaged, chunk.seek_from):
            assert pts not in out
            out[pts] = hashlib.sha256(rgb.tobytes()).hexdigest()
    return out, damaged


@pytest.mark.parametrize("name,kwargs", [
    ("h264.mp4", {}),                                   # avcC, B-frames
    ("h264.ts", {}),                                    # Annex B start codes
    ("hevc.mkv", {"codec": "libx265"}),
    ("odd444.mp4", {"size": (67, 41)}),                 # 4:4:4
])
def test_every_keyframe_of_our_clips_is_a_clean_start(tmp_path, name, kwargs):
    clip = clips.make_clip(tmp_path / name, frames=30, gop=6, **kwargs)
    with av.open(str(clip)) as container:
        flagged = sorted(p.pts for p in container.demux(container.streams.video[0]) if p.is_keyframe and p.size)
    assert len(flagged) >= 4
    assert index_frames(clip, 0).keyframes == flagged  # every IDR recognised: no needless long decodes
    chunks, damaged = _chunked(clip, 0, 4)
    assert chunks == _sequential(clip, 0) and not damaged


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cockatoo.mp4", "cityCC0.mpg", "nasa_13013.mp4", "flower_vfr.mp4"])
def test_real_clips_decode_exactly_in_chunks(name):
    # cockatoo.mp4 (x264 4:4:4 from an old x264) decoded wrongly after every seek until
    # the decoder was shown the first packet; cityCC0.mpg's backward seeks land late.
    path = need_shared("media", name)
    with open_input(path) as container:
        stream_index = pick_video_stream(container).index
    reference = _sequential(path, stream_index)
    chunks, damaged = _chunked(path, stream_index, 8)
    assert len(chunks) == len(reference)
    wrong = sorted(p for p in reference if chunks.get(p) != reference[p])
    assert not wrong, f"{len(wrong)} frames differ from a sequential decode"
    assert not damaged
