"""`mpirun -n N stylempi run` on generated clips, judged twice.

Each case makes a tiny clip with one property (tests/clips.py), runs the real
CLI under real ``mpirun`` (N from 1 to 4, spread across the cases) with a tiny
width-8 network, then checks the output with BOTH ``stylempi verify`` and the
independent ffprobe oracle (tests/oracle.py): frame count, timestamps (as
rationals), size, sample aspect ratio, rotation, audio packets bit for bit,
subtitles. A third check decodes the pictures: frame i of the output must be
the network's image of frame i of the input (a chunk written in the wrong
place, or an unstylized frame, keeps every timestamp right but fails here).

``verify`` itself is cross-checked: outputs broken on purpose (a frame dropped,
a time shifted, audio re-encoded, rotation lost...) must make it exit non-zero,
and the oracle must see the same damage, so neither judge can quietly pass
everything.

Verify-independence note: these tests can fail, and were seen to. Four mutants
of the core (a scratch copy of ``stylempi/`` put first on PYTHONPATH, the
repository untouched), each a bug shared by ``run`` and ``verify`` so that
``verify`` alone would pass it:

* rotation not written by run + rotation check disabled in verify:
  ``[rotation90-n2]`` fails on the oracle ("rotation 0 != input 90") and
  ``[rotation-lost]`` fails because verify accepts the damage;
* the last frame dropped by the planner + frame count/length checks disabled in
  verify: ``[7-frames-n3]`` fails on the oracle ("6 frames != input 7"),
  ``[drop-last-frame]`` on verify;
* one bit flipped in every copied audio packet + audio check disabled in
  verify: ``[two-real-audio-n2]`` fails on the oracle ("packets differ"),
  ``[audio-reencoded]`` on verify;
* frames of a batch written in reverse order (timestamps intact, invisible to
  verify and ffprobe): ``[7-frames-n3]`` fails on the picture check.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
import torch

import clips
import oracle
from conftest import stylempi

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 420  # liveness deadline for one job on two shared cores, not a speed check


make_test_net = clips.test_network


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    return clips.save_test_model(tmp_path_factory.mktemp("model") / "tiny8.pth")


@pytest.fixture(autouse=True)
def _ffprobe():
    oracle.need_ffprobe()


# ---------------------------------------------------------------------------
# Judges
# ---------------------------------------------------------------------------

def run_verify(inp: Path, out: Path, video_stream: int | None = None):
    args = ["verify", inp, out]
    if video_stream is not None:
        args += ["--video-stream", str(video_stream)]
    res = stylempi(*args, timeout=180)
    assert "Traceback" not in res.stderr, res.stderr
    try:
        report = json.loads(res.stdout)
    except ValueError:
        pytest.fail(f"verify did not print a JSON report: stdout={res.stdout[-500:]!r} "
                    f"stderr={res.stderr[-500:]!r}")
    return res, report


def decode_rgb(path: Path, index: int | None = None) -> list[np.ndarray]:
    """Pictures as the job hands them to the network (its colour conversion), so that the
    reference below sees exactly the network's input."""
    from stylempi.media import describe_video, to_rgb
    with av.open(str(path)) as c:
        st = c.streams.best("video") if index is None else c.streams[index]
        colour = describe_video(c, st).colour
    with av.open(str(path)) as c:
        st = c.streams.best("video") if index is None else c.streams[index]
        return [to_rgb(f, colour) for f in c.decode(st)]


_NET = None


def reference(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The test network applied here (reflect-pad to multiples of 4, then crop)."""
    global _NET
    if _NET is None:
        _NET = make_test_net()
    out = []
    with torch.no_grad():
        for img in frames:
            h, w = img.shape[:2]
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            ph, pw = (-h) % 4, (-w) % 4
            if ph or pw:
                x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
            y = _NET(x)[0, :, :h, :w].clamp(0, 255)
            out.append(y.permute(1, 2, 0).round().byte().numpy())
    return out


def check_pictures(inp: Path, out: Path, index: int | None) -> None:
    """Output frame i is the network's picture of input frame i (and no other)."""
    src = decode_rgb(inp, index)
    got = decode_rgb(out)
    assert len(got) == len(src)
    ref = reference(src)
    for i, g in enumerate(got):
        assert g.shape == ref[i].shape, (i, g.shape, ref[i].shape)
        err = [float(np.abs(g.astype(np.int16) - r).mean()) for r in ref]
        best = int(np.argmin(err))
        assert best == i, f"output frame {i} looks like stylized input frame {best} (errors {err[:12]})"
        assert err[i] < 25, f"output frame {i} is far from the stylized input ({err[i]:.1f} mean abs error)"
        assert float(np.abs(g.astype(np.int16) - src[i]).mean()) > 10, f"frame {i} was not stylized"


def judge(inp: Path, out: Path, video_stream: int | None = None) -> None:
    res, report = run_verify(inp, out, video_stream)
    problems = oracle.compare(inp, out, video_stream)
    assert res.returncode == 0, f"verify rejected the output: {res.stdout[-1500:]} {res.stderr[-500:]}"
    assert problems == [], f"oracle found: {problems}"
    check_pictures(inp, out, video_stream)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# The matrix: each property once, N from 1 to 4 spread over the cases.
# ---------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    make: Callable[[Path], Path]
    ranks: int | None
    args: list[str] = field(default_factory=list)
    out_ext: str = "mp4"
    video_stream: int | None = None  # for verify/oracle; passed to run via args


CASES = [
    Case("1-frame-n2", lambda d: clips.basic_clip(d / "in.mp4", frames=1), 2),
    Case("7-frames-n3", lambda d: clips.basic_clip(d / "in.mp4", frames=7), 3, ["--chunk-frames", "2"]),
    Case("101-frames-n4", lambda d: clips.basic_clip(d / "in.mp4", frames=101), 4, ["--chunk-frames", "16", "--batch-size", "3"]),
    Case("vfr-n2", lambda d: clips.vfr_clip(d / "in.mp4", frames=13), 2,
         ["--chunk-frames", "4", "--batch-size", "5"]),
    Case("odd-67x41-n1", lambda d: clips.odd_size_clip(d / "in.mp4"), 1),
    Case("70x46-n3", lambda d: clips.not_mult4_clip(d / "in.mp4"), 3, ["--chunk-frames", "3"]),
    Case("two-real-audio-n2", lambda d: clips.two_audio_clip(d / "in.mp4"), 2, ["--chunk-frames", "4"]),
    Case("subtitles-n1", lambda d: clips.subtitle_clip(d / "in.mp4"), 1),
    Case("rotation90-n2", lambda d: clips.rotated_clip(d / "in.mp4", rotation=90), 2, ["--chunk-frames", "4"]),
    Case("sar4:3-mkv-n3", lambda d: clips.sar_clip(d / "in.mkv"), 3, ["--chunk-frames", "3"], out_ext="mkv"),
    Case("multi-video-default-n2", lambda d: clips.multi_video_clip(d / "in.mp4"), 2, ["--chunk-frames", "4"]),
    Case("multi-video-stream1-n1", lambda d: clips.multi_video_clip(d / "in.mp4"), 1,
         ["--video-stream", "1"], video_stream=1),
    Case("start-0.5s-audio-n4", lambda d: clips.start_offset_clip(d / "in.mp4", frames=9, audio_tracks=1),
         4, ["--chunk-frames", "2"]),
    Case("mpeg2-ps-n3", lambda d: clips.make_clip(d / "in.mpg", frames=40, codec="mpeg2video", start=0.48,
                                                   gop=6), 3, ["--chunk-frames", "7"]),
    # x265 uses open GOPs: frames after a CRA keyframe may reference the previous GOP,
    # so a chunk decoder that seeks to the keyframe must still yield exactly its frames.
    Case("hevc-open-gop-n3", lambda d: clips.make_clip(d / "in.mp4", frames=31, codec="libx265", gop=8,
                                                        audio_tracks=1), 3, ["--chunk-frames", "5"]),
    Case("vfr-audio-mkv-n2", lambda d: clips.vfr_clip(d / "in.mkv", frames=13, audio_tracks=1), 2,
         ["--chunk-frames", "4"], out_ext="mkv"),
    Case("webm-out-n1", lambda d: clips.basic_clip(d / "in.mp4", frames=7), 1, ["--chunk-frames", "4"],
         out_ext="webm"),
    Case("mov-out-n2", lambda d: clips.vfr_clip(d / "in.mp4", frames=7, audio_tracks=1), 2,
         ["--chunk-frames", "4"], out_ext="mov"),
    Case("plain-no-mpirun", lambda d: clips.make_clip(d / "in.mp4", frames=8, pts=clips.vfr_pts(8), start=0.5,
                                                       rotation=270, sar=Fraction(4, 3), size=(67, 41),
                                                       audio_tracks=1), None, ["--chunk-frames", "3"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_run_then_verify_and_oracle(tmp_path, model, case):
    inp = case.make(tmp_path)
    before = sha256(inp)
    out = tmp_path / f"out.{case.out_ext}"
    # --temporal off: the picture oracle compares each frame with the network's own picture of its
    # input frame, which the filter blends with the frame before (the rank test below keeps it on).
    res = stylempi("run", inp, out, "--model", model, "--precision", "fp32", "--device", "cpu", "--quiet",
                   "--temporal", "off", *case.args, ranks=case.ranks, timeout=RUN_TIMEOUT)
    assert res.returncode == 0, f"run failed ({res.returncode}): {res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr
    assert out.exists()
    assert sha256(inp) == before, "run modified its input"
    judge(inp, out, case.video_stream)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p not in (inp, out))
    assert leftovers == [], f"temporary files left after success: {leftovers}"


SAME_N = {
    # H.264 with B-frames, VFR and sound: 1 rank, 3 ranks and a plain process.
    "h264-vfr": (lambda d: clips.make_clip(d / "in.mp4", frames=23, pts=clips.vfr_pts(23), audio_tracks=1),
                 (("n1", 1), ("n3", 3), ("plain", None))),
    # MPEG-2 program stream: where seeks do not land exactly.
    "mpeg2-ps": (lambda d: clips.make_clip(d / "in.mpg", frames=23, codec="mpeg2video", start=0.48, gop=6),
                 (("n1", 1), ("n3", 3))),
}


@pytest.mark.parametrize("kind", list(SAME_N))
def test_outputs_for_different_n_decode_identically(tmp_path, model, kind):
    """The plan does not depend on N: the same pictures whatever the number of ranks."""
    make, runs = SAME_N[kind]
    inp = make(tmp_path)
    md5s = {}
    for label, ranks in runs:
        out = tmp_path / f"out-{label}.mp4"
        res = stylempi("run", inp, out, "--model", model, "--precision", "fp32", "--device", "cpu",
                       "--chunk-frames", "5", "--quiet", ranks=ranks, timeout=RUN_TIMEOUT)
        assert res.returncode == 0, f"{label}: {res.stderr[-2000:]}"
        assert oracle.compare(inp, out) == []
        md5s[label] = oracle.frame_md5s(out)
    assert len(md5s["n1"]) == 23
    assert md5s["n1"] == md5s["n3"], "1 rank and 3 ranks decode to different frames"
    if "plain" in md5s:
        assert md5s["n1"] == md5s["plain"], "mpirun -n 1 and a plain process decode to different frames"


# ---------------------------------------------------------------------------
# verify, cross-checked: it accepts a faithful output it did not make, and it
# rejects each kind of damage that the oracle also sees.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rich_clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("verify")
    return clips.make_clip(d / "rich.mp4", frames=9, size=(67, 41), pts=clips.vfr_pts(9), start=0.5,
                           rotation=90, sar=Fraction(4, 3), audio_tracks=2, subtitles=1)


def test_verify_accepts_faithful_transcode(tmp_path, rich_clip):
    good = clips.derive(rich_clip, tmp_path / "good.mp4", invert=True)
    res, _ = run_verify(rich_clip, good)
    assert oracle.compare(rich_clip, good) == []
    assert res.returncode == 0, f"verify rejected a faithful transcode: {res.stdout[-1500:]} {res.stderr[-300:]}"


DAMAGE = {
    "drop-middle-frame": (dict(drop_frame=4), "frames != input"),
    "drop-last-frame": (dict(drop_frame=8), "frames != input"),
    "shift-one-frame": (dict(shift_frame=(3, 900)), "frame times differ"),  # 10 ms
    "shift-one-tick": (dict(shift_frame=(3, 1)), "frame times differ"),  # 1/90000 s: a whole tick
    "audio-desync": (dict(audio_shift=Fraction(1, 2)), "packet times differ"),  # same bytes, 0.5 s late
    "audio-reencoded": (dict(reencode_audio=True), "packets differ"),
    "audio-dropped": (dict(drop_audio=True), "audio streams"),
    "rotation-lost": (dict(keep_rotation=False), "rotation"),
    "sar-lost": (dict(sar=Fraction(1, 1)), "sample aspect ratio"),
    "size-changed": (dict(size=(68, 42)), "size"),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_verify_and_oracle_reject_damage(tmp_path, rich_clip, damage):
    kwargs, expect = DAMAGE[damage]
    bad = clips.derive(rich_clip, tmp_path / "bad.mp4", **kwargs)
    problems = oracle.compare(rich_clip, bad)
    assert any(expect in p for p in problems), f"oracle missed {damage}: {problems}"
    res, _ = run_verify(rich_clip, bad)
    assert res.returncode != 0, f"verify accepted an output with {damage}: {res.stdout[-1500:]}"


def test_verify_rejects_wrong_video_stream(tmp_path):
    """Output made from stream 1 matches stream 1 and not the default stream."""
    inp = clips.multi_video_clip(tmp_path / "in.mp4")
    out = clips.derive(inp, tmp_path / "o.mp4", video_stream=1)
    assert oracle.compare(inp, out, 1) == []
    assert oracle.compare(inp, out, 0) != []
    assert run_verify(inp, out, 1)[0].returncode == 0
    assert run_verify(inp, out, 0)[0].returncode != 0


@pytest.mark.parametrize("what", ["missing", "text", "audio-only"])
def test_verify_unreadable_output_fails_cleanly(tmp_path, what):
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=3)
    out = tmp_path / "out.mp4"
    if what == "text":
        out.write_text("not a video\n")
    elif what == "audio-only":
        clips.audio_only_clip(out)
    res = stylempi("verify", inp, out, timeout=180)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stylempi:"), res.stderr
