"""Hostile media: timestamps at the edges, codecs and containers, misleading messages, silent drops
(issue 26, defects 3, 4, 7, 9 and 10).

Each case runs the real CLI as one plain process on a tiny clip made here, and ends in one of
two ways only: exit 0 with ``stylempi verify`` passing, or a refusal before any work (one
``stylempi: error:`` line, the documented exit code, no OUTPUT, no work dir).
"""
from __future__ import annotations

import json
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import clips
from conftest import stylempi
from stylempi.media import assembly
from stylempi.media.containers import CONTAINERS

TIMEOUT = 240

#: MPEG-TS counts 90 kHz ticks in 33 bits: a capture that starts this close before the wrap
#: reads as times before zero (FFmpeg unwraps the later ones past it).
WRAP = 2 ** 33


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return clips.save_test_model(tmp_path_factory.mktemp("model") / "tiny8.pth")


def run(inp: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    return stylempi("run", inp, out, "--model", model, "--device", "cpu", "--compile", "off", "--quiet", *extra,
                    timeout=TIMEOUT)


def leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}"))


def refused(res: subprocess.CompletedProcess, out: Path, code: int) -> str:
    """The refusal contract; returns the one error line."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.returncode == code, f"exit {res.returncode}, expected {code}: {res.stderr}"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stylempi: error:"), res.stderr
    assert not out.exists(), "a refused job left OUTPUT behind"
    assert leftovers(out) == [], "a refusal before any work left a work dir or a partial file"
    return lines[0]


def kept_or_refused(inp: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    """Exit 0 and verify passes, or a refusal before any work (exit 5, naming a type that works)."""
    res = run(inp, out, model, *extra)
    if res.returncode == 0:
        check = stylempi("verify", inp, out, timeout=TIMEOUT)
        report = json.loads(check.stdout)
        failed = {k: v for k, v in report["checks"].items() if not v["ok"]}
        assert check.returncode == 0, f"run exited 0 on an output its own verify rejects: {failed}"
    else:
        line = refused(res, out, 5)
        assert "name OUTPUT ." in line, line
    return res


# ---------------------------------------------------------------------------
# Clips with timestamps at the edges
# ---------------------------------------------------------------------------

def wrap_ts(path: Path, frames: int = 10) -> Path:
    """An MPEG-TS capture that starts 0.2 s before the 33-bit wrap: its first frames read as
    times before zero, the later ones after it."""
    return clips.make_clip(path, frames=frames, size=(32, 24), gop=4, start=Fraction(WRAP - 18000, 90000),
                           bframes=False)


def sub_ms_ts(path: Path) -> Path:
    """An MPEG-TS clip (with audio) whose first frame is at 126001/90000 s: not a whole millisecond."""
    return clips.make_clip(path, frames=6, size=(32, 24), gop=3, start=Fraction(126001, 90000), audio_tracks=1,
                           real_audio=False)


def negative_audio_mp4(path: Path, start: Fraction = Fraction(-14882, 44100)) -> Path:
    """An MP4 whose AAC track (44.1 kHz) starts at -0.337460 s, as a ``-ss ... -c copy`` cut leaves
    it: the packets before zero are kept in the file and hidden by the edit list."""
    video = clips.make_clip(path.with_suffix(".video.mp4"), frames=10, size=(32, 24), gop=5)
    rate = 44100
    n = rate // 2
    t = np.arange(n) / rate
    sound = (0.3 * np.sin(2 * np.pi * (300 + 500 * t) * t)).astype(np.float32)[None, :]
    with av.open(str(video)) as inp, av.open(str(path), "w", options={"avoid_negative_ts": "disabled"}) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        vout.time_base = vin.time_base
        aout = out.add_stream("aac", rate=rate)
        aout.layout = "mono"
        aout.codec_context.time_base = Fraction(1, rate)
        frame = av.AudioFrame.from_ndarray(sound, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = 0
        audio = [*aout.encode(frame), *aout.encode(None)]
        shift = int(start * rate) - min(p.pts for p in audio)
        for packet in audio:
            packet.pts += shift
            packet.dts += shift
            out.mux(packet)
        for packet in inp.demux(vin):
            if packet.size:
                packet.stream = vout
                out.mux(packet)
    video.unlink()
    return path


# ---------------------------------------------------------------------------
# Defect 3: a video that starts before zero
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["ts", "mkv", "mp4"])
@pytest.mark.parametrize("chunk_frames", [100, 4], ids=["one-chunk", "several-chunks"])
def test_capture_before_the_33_bit_wrap(tmp_path, model, ext, chunk_frames):
    """Times before zero were shifted to 0 per chunk: exit 0 with every timestamp wrong (one
    chunk), or the whole job then "Invalid argument" (several)."""
    inp = wrap_ts(tmp_path / "wrap.ts")
    out = tmp_path / f"out.{ext}"
    res = kept_or_refused(inp, out, model, "--chunk-frames", str(chunk_frames))
    if ext == "ts":  # MPEG-TS moves the whole video past zero, which verify allows for: it must work
        assert res.returncode == 0, res.stderr
    else:  # MP4 and Matroska cannot show frames before zero: refused, naming .ts
        assert "before zero" in res.stderr and "name OUTPUT .ts" in res.stderr, res.stderr


# ---------------------------------------------------------------------------
# Defect 4: sub-millisecond starts, negative audio starts
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["mp4", "mov", "mkv"])
def test_sub_millisecond_start(tmp_path, model, ext):
    """A TS start that is not a whole millisecond was rounded to 1 ms in MP4/MOV edit lists."""
    inp = sub_ms_ts(tmp_path / "subms.ts")
    out = tmp_path / f"out.{ext}"
    res = kept_or_refused(inp, out, model)
    if ext in ("mp4", "mov"):  # MP4's movie clock can count 90 kHz ticks: kept, not refused
        assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("ext", ["mkv", "mp4", "ts"])
def test_negative_audio_start(tmp_path, model, ext):
    """Audio at -0.337460 s came out of Matroska at -0.338 s, with exit 0."""
    inp = negative_audio_mp4(tmp_path / "cut.mp4")
    with av.open(str(inp)) as c:
        first = next(p for p in c.demux(c.streams.audio[0]) if p.size)
        assert first.pts * first.time_base == Fraction(-14882, 44100)
    kept_or_refused(inp, tmp_path / f"out.{ext}", model)


# ---------------------------------------------------------------------------
# Defect 7: codec and container problems, found before any work and worded by their cause
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def even_clip(tmp_path_factory) -> Path:
    """160x96: even, a multiple of 16, nothing odd about its size."""
    return clips.make_clip(tmp_path_factory.mktemp("even") / "in.mp4", frames=4, size=(160, 96), gop=2)


def test_rawvideo_into_matroska_is_refused_before_the_job(tmp_path, model, even_clip):
    """Matroska's muxer refuses raw video only when the header is written: once after the whole job."""
    out = tmp_path / "out.mkv"
    line = refused(run(even_clip, out, model, "--codec", "rawvideo"), out, 5)
    assert "rawvideo" in line and "Matroska" in line, line


def test_png_into_matroska_does_not_suggest_matroska(tmp_path, model, even_clip):
    out = tmp_path / "out.mkv"
    line = refused(run(even_clip, out, model, "--codec", "png"), out, 5)
    assert "png" in line and ".mkv" not in line.split("cannot hold")[1], line


@pytest.mark.parametrize("codec,ext", [("png", "mov"), ("libx264rgb", "mp4")])
def test_rgb_encoders_are_not_blamed_on_odd_sizes(tmp_path, model, even_clip, codec, ext):
    out = tmp_path / f"out.{ext}"
    line = refused(run(even_clip, out, model, "--codec", codec), out, 2)
    assert "odd" not in line and "rgb24" in line, line


def test_mjpeg_refusal_names_its_cause_not_crf(tmp_path, model, even_clip):
    out = tmp_path / "out.mkv"
    line = refused(run(even_clip, out, model, "--codec", "mjpeg"), out, 2)
    assert "--crf" not in line and "full-range" in line, line


# ---------------------------------------------------------------------------
# Defect 9: messages that name the wrong cause
# ---------------------------------------------------------------------------

def test_fifo_input_is_not_called_empty(tmp_path, model):
    fifo = tmp_path / "live.mp4"
    os.mkfifo(fifo)
    out = tmp_path / "out.mp4"
    line = refused(run(fifo, out, model), out, 3)
    assert "empty" not in line and "FIFO" in line, line


def test_verify_calls_output_output(tmp_path):
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=3)
    empty = tmp_path / "out.mp4"
    empty.write_bytes(b"")
    res = stylempi("verify", inp, empty, timeout=TIMEOUT)
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    assert f"OUTPUT {empty} is empty" in res.stderr and "input" not in res.stderr, res.stderr


@pytest.mark.parametrize("which", ["input", "output"])
def test_url_password_is_never_echoed(tmp_path, model, which):
    url = "https://bob:hunter2@127.0.0.1:9/clips/x.mp4"
    local = clips.basic_clip(tmp_path / "in.mp4", frames=3)
    inp, out = (url, tmp_path / "out.mp4") if which == "input" else (local, url)
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", timeout=TIMEOUT)
    assert res.returncode != 0 and "stylempi: error:" in res.stderr, res.stderr
    assert "hunter2" not in res.stderr + res.stdout and "bob" not in res.stderr, res.stderr


def test_ten_bit_into_webm_does_not_suggest_what_webm_cannot_hold(tmp_path, model):
    inp = clips.make_clip(tmp_path / "deep.mkv", frames=3, size=(32, 24), codec="libx265", pix_fmt="yuv420p10le")
    out = tmp_path / "out.webm"
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", "--compile", "off", timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "depth is reduced" in line]
    assert notes and "use libx265" not in notes[0] and ".mkv" in notes[0], res.stderr


def mid_gop_ts(path: Path, cut: int = 2) -> Path:
    """An MPEG-TS capture that starts mid-GOP: the first ``cut`` packets (the keyframe among them)
    are gone, so its first frames refer to pictures before the file's start."""
    full = clips.make_clip(path.with_suffix(".full.ts"), frames=12, size=(32, 24), gop=6, bframes=False)
    with av.open(str(full)) as inp, av.open(str(path), "w") as out:
        video = inp.streams.video[0]
        target = out.add_stream_from_template(video)
        target.time_base = video.time_base
        for packet in [p for p in inp.demux(video) if p.size][cut:]:
            packet.stream = target
            out.mux(packet)
    full.unlink()
    return path


def test_capture_starting_mid_gop_starts_at_its_first_keyframe(tmp_path, model):
    """It failed with "could not reach the frame at 0.080000s", no cause and no fix."""
    inp = mid_gop_ts(tmp_path / "mid.ts")
    out = tmp_path / "out.mp4"
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", "--compile", "off", timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "mid-GOP" in line]
    assert len(notes) == 1 and "4 frame(s)" in notes[0] and "0.240000s" in notes[0], res.stderr
    check = stylempi("verify", inp, out, timeout=TIMEOUT)
    assert check.returncode == 0, check.stdout


# ---------------------------------------------------------------------------
# Defect 10: nothing dropped without a word
# ---------------------------------------------------------------------------

def chaptered_mkv(path: Path) -> Path:
    """A Matroska clip (with audio) holding two titled chapters."""
    src = clips.make_clip(path.with_suffix(".src.mp4"), frames=10, size=(32, 24), gop=5, audio_tracks=1,
                          real_audio=False)
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        targets = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for s in inp.streams:
            targets[s.index].time_base = s.time_base
        out.set_chapters([{"id": 1, "start": 0, "end": 200, "time_base": Fraction(1, 1000), "metadata": {"title": "One"}},
                          {"id": 2, "start": 200, "end": 400, "time_base": Fraction(1, 1000),
                           "metadata": {"title": "Two"}}])
        for packet in inp.demux():
            if packet.size:
                packet.stream = targets[packet.stream_index]
                out.mux(packet)
    src.unlink()
    return path


def chapters(path: Path) -> list[tuple[Fraction, str]]:
    with av.open(str(path)) as c:
        return [(ch["start"] * ch["time_base"], ch["metadata"].get("title")) for ch in c.chapters()]


@pytest.mark.parametrize("ext", ["mkv", "mp4", "ts"])
def test_chapters_are_copied_or_their_drop_is_noted(tmp_path, model, ext):
    inp = chaptered_mkv(tmp_path / "chapters.mkv")
    assert chapters(inp) == [(0, "One"), (Fraction(1, 5), "Two")]
    out = tmp_path / f"out.{ext}"
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", "--compile", "off", timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    if ext == "ts":  # MPEG-TS has no chapters: a note says so
        assert "2 chapter(s) are dropped" in res.stderr, res.stderr
    else:
        assert chapters(out) == chapters(inp)
    assert stylempi("verify", inp, out, timeout=TIMEOUT).returncode == 0


def interlaced_mp4(path: Path) -> Path:
    """H.264 coded interlaced (top field first): the decoder flags every frame interlaced."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.options = {"flags": "+ildct+ilme", "x264-params": "tff=1", "threads": "1"}
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(clips.picture(i, 32, 24), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("kind", ["alpha", "interlaced"])
def test_alpha_and_interlacing_are_not_dropped_silently(tmp_path, model, kind):
    if kind == "alpha":
        inp = clips.make_clip(tmp_path / "alpha.mkv", frames=4, size=(32, 24), codec="ffv1", pix_fmt="yuva420p")
        words = "alpha channel (yuva420p) is dropped"
    else:
        inp = interlaced_mp4(tmp_path / "interlaced.mp4")
        words = "the input is interlaced"
    out = tmp_path / "out.mkv"
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", "--compile", "off", timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert len([line for line in res.stderr.splitlines() if words in line]) == 1, res.stderr
    assert stylempi("verify", inp, out, timeout=TIMEOUT).returncode == 0


def test_preview_frames_are_capped_at_the_frame_count(tmp_path, model):
    """--frames 100000 on a 72-frame clip ran for 10 minutes; it takes the clip's frames, with a note."""
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=4)
    sheet = tmp_path / "sheet.png"
    res = stylempi("preview", inp, "--model", model, "--frames", "100000", "--out", sheet, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--frames 100000 is more than the video's 4 frames: taking 4" in res.stderr, res.stderr
    assert res.stdout.count(" s") == 1 and "frames at 0.00, 0.04, 0.08, 0.12 s" in res.stdout, res.stdout


def test_the_check_after_the_join_sees_a_moved_timestamp(tmp_path):
    """The last guard before OUTPUT takes its name: a muxed file whose times are not those sent
    is named, frame and time (here the file is right and the record of what was sent is moved)."""
    clip = clips.basic_clip(tmp_path / "in.mkv", frames=3)
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        times = sorted(p.pts * Fraction(p.time_base) for p in c.demux(stream) if p.size)

    class Sent:
        video_tb, copied, tbs = Fraction(1, 90000), {}, {}
        video = list(times)

    assert assembly._check_times(str(clip), CONTAINERS["mkv"], Sent) is None
    Sent.video = [times[0], times[1] + Fraction(1, 1000), times[2]]
    problem = assembly._check_times(str(clip), CONTAINERS["mkv"], Sent)
    assert problem == f"the video frame at {float(Sent.video[1]):.6f}s would come out at {float(times[1]):.6f}s"
    Sent.video = times + [times[-1] + Fraction(1, 25)]
    assert assembly._check_times(str(clip), CONTAINERS["mkv"], Sent) == "1 of 4 video frames would be lost or hidden"
