"""The clip factory makes what it claims, and the ffprobe oracle can tell.

Every CLI test is built on ``tests/clips.py`` and ``tests/oracle.py``: if a
"rotated" clip had no rotation, or the oracle could not see a dropped frame,
those tests would pass for nothing. This file checks both against Debian's
ffprobe (and PyAV's own decode, a second FFmpeg) and shows that the oracle
fails on deliberately broken outputs.
"""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

import clips
import oracle
from conftest import SHARED_ABSENT


@pytest.fixture(autouse=True)
def _ffprobe():
    oracle.need_ffprobe()


def pyav_times(path, index=None):
    with av.open(str(path)) as c:
        st = c.streams.best("video") if index is None else c.streams[index]
        return [f.pts * f.time_base for f in c.decode(st)]


def audio_rms(path):
    out = []
    with av.open(str(path)) as c:
        for st in c.streams.audio:
            c.seek(0)
            samples = np.concatenate([f.to_ndarray().ravel() for f in c.decode(st)])
            out.append(float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))))
    return out


@pytest.mark.parametrize("frames", [1, 7, 101])
def test_frame_counts_and_constant_rate(tmp_path, frames):
    path = clips.basic_clip(tmp_path / "c.mp4", frames=frames)
    v = oracle.video(path)
    assert len(v.times) == frames
    assert v.times == [Fraction(i, 25) for i in range(frames)]
    assert pyav_times(path) == v.times
    assert (v.width, v.height, v.sar, v.rotation) == (64, 48, 1, 0)


def test_pictures_move():
    a, b = clips.picture(0, 64, 48), clips.picture(1, 64, 48)
    assert a.std() > 30 and np.abs(a.astype(int) - b).mean() > 5


def test_vfr(tmp_path):
    path = clips.vfr_clip(tmp_path / "v.mp4", frames=12)
    v = oracle.video(path)
    expected = [p * clips.VIDEO_TB for p in clips.vfr_pts(12)]
    assert v.times == expected
    gaps = {b - a for a, b in zip(v.times, v.times[1:])}
    assert len(gaps) >= 3, gaps
    assert pyav_times(path) == v.times


@pytest.mark.parametrize("maker,size", [(clips.odd_size_clip, (67, 41)), (clips.not_mult4_clip, (70, 46))])
def test_sizes(tmp_path, maker, size):
    path = maker(tmp_path / "s.mp4")
    v = oracle.video(path)
    assert (v.width, v.height) == size
    assert set(v.frame_sizes) == {size}
    assert len(v.times) == 7


@pytest.mark.parametrize("real", [True, False], ids=["remuxed", "synthesized"])
def test_two_audio_tracks_have_real_sound(tmp_path, real):
    if real and not clips.NASA.exists():
        pytest.skip(f"{SHARED_ABSENT} ({clips.NASA}; CI always has ../shared)")
    path = clips.two_audio_clip(tmp_path / "a.mp4", real_audio=real)
    audio = [s for s in oracle.streams(path) if s["codec_type"] == "audio"]
    assert [s["codec_name"] for s in audio] == ["aac", "aac"]
    rms = audio_rms(path)
    assert all(r > 0.01 for r in rms), rms  # not silence
    hashes = [oracle.packets(path, s["index"]).hashes for s in audio]
    assert all(len(h) >= 2 for h in hashes)
    assert len(set(hashes[0])) == len(hashes[0])  # varied packets, not one repeated
    if real:  # packets really are the nasa clip's, copied bit for bit
        nasa_audio = [s for s in oracle.streams(clips.NASA) if s["codec_type"] == "audio"]
        for h, s in zip(hashes, nasa_audio):
            assert set(h) <= set(oracle.packets(clips.NASA, s["index"]).hashes)


def test_subtitles(tmp_path):
    path = clips.subtitle_clip(tmp_path / "s.mp4")
    subs = [s for s in oracle.streams(path) if s["codec_type"] == "subtitle"]
    assert [s["codec_name"] for s in subs] == ["mov_text"]
    p = oracle.packets(path, subs[0]["index"])
    assert sum(n > 2 for n in p.sizes) == 2


@pytest.mark.parametrize("degrees", [90, 270])
def test_rotation(tmp_path, degrees):
    path = clips.rotated_clip(tmp_path / "r.mp4", rotation=degrees)
    v = oracle.video(path)
    assert v.rotation == degrees
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        assert frame.rotation % 360 == degrees  # PyAV and ffprobe agree on the sign
    assert oracle.video(clips.basic_clip(tmp_path / "b.mp4")).rotation == 0


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_sar_survives_container(tmp_path, ext):
    path = clips.sar_clip(tmp_path / f"s.{ext}", sar=Fraction(4, 3))
    v = oracle.video(path)
    assert v.sar == Fraction(4, 3)
    assert set(v.frame_sars) == {Fraction(4, 3)}


def test_several_video_streams(tmp_path):
    path = clips.multi_video_clip(tmp_path / "m.mp4")
    vids = [s for s in oracle.streams(path) if s["codec_type"] == "video"]
    assert [(s["width"], s["height"]) for s in vids] == [(64, 48), (34, 26)]
    assert len(oracle.video(path, vids[1]["index"]).times) == 7
    assert oracle.best_video_index(path) in {s["index"] for s in vids}


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_start_time_survives(tmp_path, ext):
    path = clips.start_offset_clip(tmp_path / f"s.{ext}", start=0.5)
    v = oracle.video(path)
    assert v.times[0] == Fraction(1, 2)
    assert v.times[-1] == Fraction(1, 2) + Fraction(6, 25)
    assert pyav_times(path) == v.times


def test_audio_only_and_png(tmp_path):
    a = clips.audio_only_clip(tmp_path / "a.mp4")
    assert [s["codec_type"] for s in oracle.streams(a)] == ["audio"]
    p = clips.png_image(tmp_path / "i.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# The oracle: accepts a faithful transcode, rejects each kind of damage.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rich_clip(tmp_path_factory):
    """VFR, non-zero start, rotation, non-square pixels, odd size, two audio tracks, subtitles."""
    d = tmp_path_factory.mktemp("rich")
    return clips.make_clip(d / "rich.mp4", frames=9, size=(67, 41), pts=clips.vfr_pts(9), start=0.5,
                           rotation=90, sar=Fraction(4, 3), audio_tracks=2, subtitles=1)


def test_oracle_accepts_faithful_copy(tmp_path, rich_clip):
    assert oracle.compare(rich_clip, rich_clip) == []
    good = clips.derive(rich_clip, tmp_path / "good.mp4", invert=True)
    assert oracle.compare(rich_clip, good) == []
    assert oracle.frame_md5s(good) != oracle.frame_md5s(rich_clip)
    assert len(oracle.frame_md5s(good)) == 9


@pytest.mark.parametrize("damage,expect", [
    (dict(drop_frame=4), "frames != input"),
    (dict(drop_frame=8), "frames != input"),
    (dict(shift_frame=(3, 900)), "frame times differ"),
    (dict(shift_frame=(3, 1)), "frame times differ"),
    (dict(audio_shift=Fraction(1, 2)), "packet times differ"),
    (dict(reencode_audio=True), "packets differ"),
    (dict(drop_audio=True), "audio streams"),
    (dict(keep_rotation=False), "rotation"),
    (dict(sar=Fraction(1, 1)), "sample aspect ratio"),
    (dict(size=(68, 42)), "size"),
], ids=["drop-middle", "drop-last", "shift", "shift-1-tick", "audio-desync", "reencode-audio", "drop-audio", "lose-rotation", "sar",
        "size"])
def test_oracle_catches_damage(tmp_path, rich_clip, damage, expect):
    bad = clips.derive(rich_clip, tmp_path / "bad.mp4", **damage)
    problems = oracle.compare(rich_clip, bad)
    assert any(expect in p for p in problems), problems


def test_oracle_catches_shift_of_one_tick_in_mkv(tmp_path):
    src = clips.vfr_clip(tmp_path / "v.mkv", frames=7)
    assert oracle.compare(src, clips.derive(src, tmp_path / "ok.mkv")) == []
    bad = clips.derive(src, tmp_path / "bad.mkv", shift_frame=(2, 1))  # 1 ms: one output tick
    assert any("frame times differ" in p for p in oracle.compare(src, bad))


def test_mpeg2_program_stream(tmp_path):
    """MPEG-2 in an .mpg program stream with a non-zero start (like cityCC0.mpg)."""
    path = clips.make_clip(tmp_path / "p.mpg", frames=23, codec="mpeg2video", start=0.48, gop=6)
    v = oracle.video(path)
    assert v.codec == "mpeg2video"
    assert len(v.times) == 23
    assert v.times[0] > 0
    assert pyav_times(path) == v.times
