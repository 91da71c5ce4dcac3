"""The same picture: colour matrix, range, tags, bit depth and HDR metadata kept, in every container.

Each colour case runs a real job under ``mpirun -n 2`` whose network is an
identity (tests/identity_job.py), with a lossless encode, so the output must
*look* like the input. "Look" is judged by an oracle independent of stylempi's
conversions (tests/oracle.py ``displayed_rgb``: raw planes and the BT.601/709/2020
equations with each file's own tags, or a player's guess where it has none).
Before colour was handled, an HD BT.709 clip came back shown at ~37 dB with a
mean shift of 1-2.6 levels, untagged, and 10-bit input came back 8-bit.
"""
from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import clips
import oracle
from conftest import ROOT, mpirun_path, stylempi

pytestmark = pytest.mark.slow

TIMEOUT = 420
PQ_MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return clips.save_test_model(tmp_path_factory.mktemp("model") / "tiny.pth")


def identity_run(src: Path, out: Path, model: Path, *extra: str, ranks: int = 2) -> None:
    cmd = [mpirun_path(), "-n", str(ranks), sys.executable, str(ROOT / "tests" / "identity_job.py"),
           str(src), str(out), str(model), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]


CASES = {
    # name: (file name, colour_clip keywords)
    "bt601-sd": ("sd.mp4", dict(size=(320, 240), matrix=6, range_=1, primaries=6, transfer=6)),
    "bt709-hd": ("hd.mp4", dict(size=(1280, 720), frames=3, matrix=1, range_=1, primaries=1, transfer=1)),
    "untagged-hd": ("plain.mp4", dict(size=(1280, 720), frames=3)),
    "full-range": ("full.mp4", dict(size=(320, 240), pix_fmt="yuvj420p", matrix=5, range_=2, primaries=5,
                                     transfer=1)),
    "hlg-10bit": ("hlg.mp4", dict(size=(320, 240), codec="libx265", pix_fmt="yuv420p10le", matrix=9, range_=1,
                                   primaries=9, transfer=18)),
    "pq-10bit-mastering": ("pq.mkv", dict(size=(320, 240), codec="libx265", pix_fmt="yuv420p10le", matrix=9,
                                           range_=1, primaries=9, transfer=16, mastering=PQ_MASTERING,
                                           light=(1000, 400))),
    "yuv444": ("full444.mp4", dict(size=(320, 240), pix_fmt="yuv444p", matrix=1, range_=1, primaries=1,
                                    transfer=1)),
    "odd-size": ("odd.mkv", dict(size=(319, 239), pix_fmt="yuv444p", matrix=6, range_=1, primaries=6,
                                  transfer=6)),
    "mpegts-in-out": ("in.ts", dict(size=(320, 240), frames=8, matrix=1, range_=1, primaries=1, transfer=1,
                                     audio_tracks=1)),
    "m2ts-in-out": ("in.m2ts", dict(size=(320, 240), frames=8, matrix=6, range_=1, primaries=6, transfer=6,
                                     audio_tracks=1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_identity_job_keeps_the_picture_and_its_description(case, tmp_path, model):
    name, kw = CASES[case]
    src = clips.colour_clip(tmp_path / name, **kw)
    out = tmp_path / f"out{Path(name).suffix}"
    identity_run(src, out, model, "--crf", "0")

    psnr, shift = oracle.picture_match(src, out, frames=3)
    assert psnr >= 43 and max(abs(v) for v in shift) <= 0.5, (psnr, shift)

    tags_in, tags_out = oracle.colour_tags(src), oracle.colour_tags(out)
    fields = ("color_space", "color_range", "color_primaries", "color_transfer")
    if case == "untagged-hd":  # converted as players guess, and tagged so nobody guesses again
        assert tags_in["color_space"] == "unknown"
        assert [tags_out[f] for f in fields] == ["bt709", "tv", "bt709", "bt709"], tags_out
    else:
        assert [tags_out[f] for f in fields] == [tags_in[f] for f in fields], (tags_in, tags_out)
    assert oracle.pix_fmt_depth(tags_out["pix_fmt"]) == oracle.pix_fmt_depth(tags_in["pix_fmt"]), tags_out
    if "mastering" in kw:
        side = oracle.first_frame_side_data(out)
        assert side.get("max_content") == 1000 and side.get("max_average") == 400, side
        assert side.get("max_luminance") == "10000000/10000" and side.get("red_x") == "34000/50000", side

    report = stylempi("verify", src, out, timeout=TIMEOUT)
    assert report.returncode == 0, report.stdout[-2000:]
    colour = json.loads(report.stdout)["checks"]["colour"]
    # verify's reading of the output's tags is ffprobe's
    names = {"matrix": "color_space", "range": "color_range", "primaries": "color_primaries",
             "transfer": "color_transfer"}
    assert {k: colour["output_tags"][k] for k in names} == {k: tags_out[v] for k, v in names.items()}


def test_ten_bit_ramp_keeps_its_steps(tmp_path, model):
    """A smooth 10-bit ramp over ~600 code values: an 8-bit path keeps at most ~150 of them."""
    src = clips.colour_clip(tmp_path / "ramp.mkv", size=(640, 16), frames=3, codec="libx265",
                            pix_fmt="yuv420p10le", matrix=9, range_=1, primaries=9, transfer=18, ramp=True)
    out = tmp_path / "out.mkv"
    identity_run(src, out, model, "--crf", "0")
    assert oracle.distinct_luma(src) >= 590
    assert oracle.distinct_luma(out) >= 400, oracle.distinct_luma(out)


def test_verify_sees_lost_tags_and_depth(tmp_path, model):
    """An output re-encoded 8-bit and untagged must fail verify, as ffprobe sees it."""
    src = clips.colour_clip(tmp_path / "hlg.mp4", size=(320, 240), codec="libx265", pix_fmt="yuv420p10le",
                            matrix=9, range_=1, primaries=9, transfer=18)
    bad = clips.colour_clip(tmp_path / "bad.mp4", size=(320, 240))  # same frames and times, 8-bit, untagged
    assert oracle.colour_tags(bad)["color_transfer"] == "unknown"
    report = stylempi("verify", src, bad, timeout=TIMEOUT)
    assert report.returncode == 1
    differ = json.loads(report.stdout)["checks"]["colour"]["differ"]
    assert {"matrix", "primaries", "transfer", "bit_depth"} <= set(differ), differ


def test_eight_bit_encoder_asked_for_says_depth_is_reduced(tmp_path, model):
    src = clips.colour_clip(tmp_path / "hlg.mkv", size=(64, 48), codec="libx265", pix_fmt="yuv420p10le",
                            matrix=9, range_=1, primaries=9, transfer=18)
    out = tmp_path / "out.webm"
    result = stylempi("run", src, out, "--model", model, "--codec", "libvpx-vp9", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "depth is reduced" in line]
    assert len(notes) == 1 and notes[0].startswith("stylempi: note:"), result.stderr
    assert oracle.colour_tags(out)["color_transfer"] == "arib-std-b67"


CONTAINERS = [(".mp4", None), (".mov", None), (".mkv", None), (".webm", None), (".ts", None), (".m2ts", None),
              (".mp4", "libx265"), (".mov", "libx265"), (".mkv", "libx265"), (".ts", "libx265"),
              (".m2ts", "libx265")]


@pytest.mark.parametrize("ext,codec", CONTAINERS, ids=[f"{e[1:]}-{c or 'default'}" for e, c in CONTAINERS])
def test_every_accepted_container_end_to_end(ext, codec, tmp_path, model):
    """Real CLI on 2 ranks, several chunks, AAC audio: verify and the ffprobe oracle both agree."""
    src = clips.make_clip(tmp_path / "in.mp4", frames=20, size=(64, 48), audio_tracks=1, gop=4)
    out = tmp_path / f"out{ext}"
    args = ["run", src, out, "--model", model, "--chunk-frames", "4", "-q"]
    args += ["--codec", codec] if codec else []
    args += ["--audio-codec", "libopus"] if ext == ".webm" else []
    result = stylempi(*args, ranks=2, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    report = stylempi("verify", src, out, timeout=TIMEOUT)
    checks = json.loads(report.stdout)["checks"]
    failed = {k for k, v in checks.items() if not v["ok"]}
    assert failed <= ({"audio"} if ext == ".webm" else set()), {k: checks[k] for k in failed}
    problems = oracle.compare(src, out)
    if ext == ".webm":  # AAC cannot go into WebM: re-encoded to Opus as asked
        problems = [p for p in problems if not p.startswith("audio")]
    assert not problems, problems


@pytest.mark.parametrize("ext", [".avi", ".flv", ".mpg", ".ogv"])
def test_containers_that_cannot_keep_timestamps_are_refused_up_front(ext, tmp_path, model):
    src = clips.make_clip(tmp_path / "in.mp4", frames=4)
    out = tmp_path / f"out{ext}"
    result = stylempi("run", src, out, "--model", model)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ".mkv" in lines[0] and "Traceback" not in result.stderr, lines
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_audio_codec_reencodes_only_what_the_container_cannot_hold(tmp_path, model):
    """MP3 + AAC into .webm with --audio-codec libopus: both re-encoded (WebM holds neither);
    into .mkv with --audio-codec aac: nothing re-encoded; --reencode-audio re-encodes all."""
    src = clips.make_clip(tmp_path / "in.mkv", frames=6, audio_tracks=1)
    kept = tmp_path / "kept.mkv"
    result = stylempi("run", src, kept, "--model", model, "--audio-codec", "flac", "-q")
    assert result.returncode == 0, result.stderr
    assert json.loads(stylempi("verify", src, kept).stdout)["checks"]["audio"]["ok"]
    everything = tmp_path / "all.mkv"
    result = stylempi("run", src, everything, "--model", model, "--audio-codec", "flac", "--reencode-audio", "-q")
    assert result.returncode == 0, result.stderr
    with av.open(str(everything)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["flac"]
    lonely = stylempi("run", src, tmp_path / "x.mkv", "--model", model, "--reencode-audio")
    assert lonely.returncode == 2 and "--audio-codec" in lonely.stderr


def _broadcast_audio_clip(path: Path) -> Path:
    """A short clip with AC-3 and MP2 audio tracks (what broadcast .ts recordings carry)."""
    clip = clips.make_clip(path.with_suffix(".video.mkv"), frames=12, size=(64, 48))
    with av.open(str(clip)) as src, av.open(str(path), "w") as out:
        video = out.add_stream_from_template(src.streams.video[0])
        audio = [out.add_stream(codec, rate=48000) for codec in ("ac3", "mp2")]
        for stream in audio:
            stream.layout = "stereo"
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = video
                out.mux(packet)
        t = np.arange(48000 // 2) / 48000
        for k, stream in enumerate(audio):
            tone = (0.3 * np.sin(2 * np.pi * (440 + 220 * k) * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, 0
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def test_ts_keeps_ac3_and_mp2_audio_as_packets(tmp_path, model):
    src = _broadcast_audio_clip(tmp_path / "in.mkv")
    out = tmp_path / "out.ts"
    result = stylempi("run", src, out, "--model", model, "--chunk-frames", "4", ranks=2, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["ac3", "mp2"]
    assert "stylempi: note: MPEG-TS cannot store negative times" in result.stderr, result.stderr
    report = json.loads(stylempi("verify", src, out).stdout)
    assert report["ok"], report["checks"]
    # The encoders' priming starts the audio 10 ms before zero; MPEG-TS cannot store that, so
    # every stream moves by the same 10 ms. The oracle sees exactly that uniform shift, nothing else.
    assert report["checks"]["timestamps"]["whole_video_shifted_s"] == pytest.approx(0.01)
    problems = oracle.compare(src, out)
    assert len(problems) == 3 and all("times differ" in p for p in problems), problems
    shift = Fraction(1, 100)
    assert [t + shift for t in oracle.video(src).times] == oracle.video(out).times
    for si, so in ((1, 1), (2, 2)):
        assert [t + shift for t in oracle.packets(src, si).times] == oracle.packets(out, so).times
        assert oracle.packets(src, si).hashes == oracle.packets(out, so).hashes
