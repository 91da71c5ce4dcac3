"""A damaged stretch mid-stream is concealed and named; audio is re-encoded only when asked."""
from __future__ import annotations

import random

import av
import pytest
import torch

import clips
from conftest import stylempi, without_stages
from stylempi.network.model import TransformerNet


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "w8.pth"
    torch.save(TransformerNet(8).state_dict(), path)
    return path


def _damage(clip, dst, nbytes: int, seed: int = 1):
    data = bytearray(clip.read_bytes())
    rng = random.Random(seed)
    middle = len(data) // 2
    for i in range(middle, middle + nbytes):
        data[i] = rng.randrange(256)
    dst.write_bytes(bytes(data))
    return dst


def _decoder_view(path):
    """What FFmpeg's decoder makes of it: times of concealed frames, or the error."""
    try:
        with av.open(str(path)) as c:
            return [f.pts * f.time_base for f in c.decode(video=0) if f.is_corrupt], None
    except av.error.FFmpegError as exc:
        return None, exc


def test_damaged_stretch_is_concealed_with_a_warning_naming_frames(tmp_path, model):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=60, size=(128, 96), gop=10)
    bad = _damage(clip, tmp_path / "bad.mp4", 600)
    corrupt, error = _decoder_view(bad)
    assert error is None and corrupt, "this damage should be concealable; the test proves nothing"

    out = tmp_path / "out.mp4"
    result = stylempi("run", bad, out, "--model", model, "-q")
    assert result.returncode == 0, result.stderr
    warnings = [l for l in result.stderr.splitlines() if l.startswith("stylempi: warning:")]
    assert len(warnings) == 1 and "damaged" in warnings[0]
    assert f"{float(corrupt[0]):.3f}s" in warnings[0]
    assert stylempi("verify", bad, out).returncode == 0  # every frame and timestamp is still there


def test_undecodable_stretch_fails_clearly(tmp_path, model):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=40, size=(96, 64), gop=8)
    bad = _damage(clip, tmp_path / "bad.mp4", 400)
    _, error = _decoder_view(bad)
    assert error is not None, "this damage should defeat the decoder; the test proves nothing"
    before = bad.read_bytes()
    out = tmp_path / "out.mp4"
    result = stylempi("run", bad, out, "--model", model)
    assert result.returncode == 3, result.stderr
    lines = without_stages(result.stderr.strip().splitlines())  # it failed while working: after a stage line
    assert len(lines) == 1 and lines[0].startswith("stylempi: error:") and "damaged" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not out.exists() and bad.read_bytes() == before


def test_audio_is_never_silently_reencoded(tmp_path, model):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=6, audio_tracks=1)
    refused = stylempi("run", clip, tmp_path / "out.webm", "--model", model)
    assert refused.returncode != 0
    assert "cannot hold" in refused.stderr and ".mkv" in refused.stderr
    assert not (tmp_path / "out.webm").exists()

    asked = stylempi("run", clip, tmp_path / "out.webm", "--model", model, "--audio-codec", "libopus", "-q")
    assert asked.returncode == 0, asked.stderr
    with av.open(str(tmp_path / "out.webm")) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["opus"]
        assert sum(1 for _ in c.decode(audio=0)) > 0
    report = stylempi("verify", clip, tmp_path / "out.webm")
    assert report.returncode == 1 and '"bit_identical": false' in report.stdout
