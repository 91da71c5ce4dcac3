"""The media engines of a job, from the command line: --decode, --convert, --codec auto.

On a machine without an NVIDIA GPU (CI, this 2-core machine): the GPU engines asked for
by name stop the job before any work with one usage line (exit 2); ``auto`` runs the CPU
engines and the summary names them; a CPU job never initialises CUDA nor imports the GPU
decoder. x264's thread count, a pixel setting, does not follow the process's CPU
affinity. The GPU halves are in tests/e2e/test_gpu.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

import clips
import oracle
from conftest import ROOT

RUN_TIMEOUT = 300  # liveness deadline, not a speed check
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: these are the CPU-only answers")


def stylempi(*args, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylempi", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=RUN_TIMEOUT, env=dict(os.environ, **(env or {})), **kwargs)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return clips.make_clip(tmp_path_factory.mktemp("engines") / "in.mp4", frames=6, size=(64, 48))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return clips.save_test_model(tmp_path_factory.mktemp("model") / "m.pth")


def _one_usage_line(done: subprocess.CompletedProcess, *pieces: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("stylempi: error:"), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    for piece in pieces:
        assert piece in lines[0], lines[0]


@no_cuda
def test_decode_gpu_without_a_gpu_is_one_usage_line(clip, model, tmp_path):
    done = stylempi("run", clip, tmp_path / "out.mp4", "--model", model, "--decode", "gpu")
    _one_usage_line(done, "--decode gpu", "--decode cpu")
    assert list(tmp_path.iterdir()) == []  # no output, no work dir


@no_cuda
@pytest.mark.parametrize("codec", ["h264_nvenc", "av1_nvenc"])
def test_a_named_nvenc_encoder_without_nvenc_is_one_usage_line(clip, model, tmp_path, codec):
    done = stylempi("run", clip, tmp_path / "out.mkv", "--model", model, "--codec", codec)
    _one_usage_line(done, f"--codec {codec} needs NVENC", "leave --codec out for libx264")
    assert list(tmp_path.iterdir()) == []


def test_auto_engines_on_a_cpu_job_run_and_are_named(clip, model, tmp_path):
    out = tmp_path / "out.mp4"
    done = stylempi("run", clip, out, "--model", model, "--device", "cpu", "--decode", "auto", "--convert", "auto",
                    "--codec", "auto")
    assert done.returncode == 0, done.stderr
    assert "(cpu fp32 batch 2), decode cpu, convert ffmpeg, encode libx264;" in done.stdout, done.stdout
    assert "note:" not in done.stderr, done.stderr  # nothing fell back: there was no GPU to use
    verified = stylempi("verify", clip, out)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"]


def test_a_cpu_job_initialises_no_cuda_and_imports_no_gpu_decoder(clip, model, tmp_path):
    """In a fresh process, a whole CPU job with every engine on auto leaves CUDA untouched."""
    script = (
        "import sys, torch\n"
        "from stylempi import cli\n"
        f"code = cli.main(['run', {str(clip)!r}, {str(tmp_path / 'out.mp4')!r}, '--model', {str(model)!r},\n"
        "                  '--device', 'cpu', '--decode', 'auto', '--convert', 'auto', '--codec', 'auto', '-q'])\n"
        "print(code, torch.cuda.is_initialized(), 'stylempi.media.nvdec' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "False", "False"], done.stdout + done.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to narrow a process's affinity")
@pytest.mark.parametrize("extension, size", [("mp4", (160, 128)), ("webm", (320, 240))])
def test_a_narrowed_cpu_affinity_encodes_the_same_pixels(model, tmp_path, extension, size):
    """Slurm's --cpus-per-task or mpirun's binding narrow a rank's affinity; x264 cut each
    frame into as many slices as the mask held CPUs (this frame is tall enough for 2), and
    libvpx's VP9 changed with its thread count too, so the pixels followed the mask."""
    clip = clips.make_clip(tmp_path / "in.mp4", frames=6, size=size)
    one_cpu = min(os.sched_getaffinity(0))
    md5s = {}
    for label, narrow in (("unbound", None), ("one cpu", lambda: os.sched_setaffinity(0, {one_cpu}))):
        out = tmp_path / f"{label}.{extension}"
        done = stylempi("run", clip, out, "--model", model, "--device", "cpu", "--precision", "fp32", "-q",
                        env={"OMP_NUM_THREADS": "1"}, preexec_fn=narrow)  # the same network threads in both
        assert done.returncode == 0, done.stderr
        md5s[label] = oracle.frame_md5s(out)
    assert len(md5s["unbound"]) == 6
    assert md5s["unbound"] == md5s["one cpu"], "a process bound to one CPU encoded different pixels"


# --------------------------------------------------------------------------- NVENC's 10-bit input

def _deep_video(range_: int):
    from fractions import Fraction

    from stylempi.colour import matrices as colours
    from stylempi.media import VideoStreamInfo
    colour = colours.Colour(colours.BT2020_NCL, range_, 9, 16, depth=10)  # BT.2020, PQ
    return VideoStreamInfo(index=0, codec="hevc", width=64, height=48, time_base=Fraction(1, 25), start_pts=0,
                           sample_aspect_ratio=None, rotation=0, pix_fmt="yuv420p10le", frame_rate=Fraction(25),
                           colour=colour)


def _planes(frame) -> list:
    import numpy as np
    return [np.frombuffer(bytes(p), np.uint16).reshape(-1, p.line_size // 2) for p in frame.planes]


@pytest.mark.parametrize("range_name", ["limited", "full"])
def test_hevc_nvenc_keeps_10_bits_as_p010_with_the_same_samples(tmp_path, range_name):
    """NVENC takes 10-bit 4:2:0 only as p010le: the settings (decided here, no GPU needed) keep
    the depth, and the frames the encoder is fed hold the samples yuv420p10le would."""
    import dataclasses

    import numpy as np

    from stylempi.colour import matrices as colours
    from stylempi.media import choose_encoding, encoding_notes, to_yuv
    video = _deep_video(colours.RANGE_LIMITED if range_name == "limited" else colours.RANGE_FULL)
    settings = choose_encoding(tmp_path / "out.mkv", video, "hevc_nvenc")
    assert (settings.pix_fmt, settings.colour.depth, settings.colour.chroma) == ("p010le", 10, "420")
    assert not [n for n in encoding_notes(video, settings) if "depth" in n]
    rgb = np.random.default_rng(1).integers(0, 65536, (48, 64, 3)).astype(np.uint16)
    fed = _planes(to_yuv(rgb, settings))
    y, u, v = _planes(to_yuv(rgb, dataclasses.replace(settings, pix_fmt="yuv420p10le")))
    assert (fed[0][:48, :64] & 0x3F).max() == 0  # p010: the samples in the high 10 bits
    assert (fed[0][:48, :64] >> 6 == y[:48, :64]).all()
    assert (fed[1][:24, 0:64:2] >> 6 == u[:24, :32]).all() and (fed[1][:24, 1:64:2] >> 6 == v[:24, :32]).all()


def test_the_engines_are_in_the_job_key_and_the_defaults_keep_the_old_keys(clip, model, tmp_path):
    from stylempi.options import RunOptions
    from stylempi import __version__
    from stylempi.job.key import WORK_FORMAT, job_key
    from stylempi.job.prepare import prepare, release_work_lock
    keys = {}
    for convert in ("ffmpeg", "torch"):  # torch converts on the CPU too
        prepared = prepare(RunOptions(input=str(clip), output=str(tmp_path / f"{convert}.mp4"), model=str(model),
                                      device="cpu", precision="fp32", convert=convert))
        release_work_lock()
        assert (prepared.decode, prepared.convert) == ("cpu", convert)
        keys[convert] = prepared.key
    assert keys["ffmpeg"] != keys["torch"]
    entries = {"input_size": 1, "input_sha256": "", "video_stream": 0, "model_sha256": "", "precision": "fp32",
               "encoding": prepared.settings.as_dict(), "chunk_frames": 8, "compile": "auto",
               "look": prepared.look.as_dict(), "temporal": None}
    key = lambda decode, convert: job_key({**entries, "engines": {"decode": decode, "convert": convert}})  # noqa: E731
    without = {"format": WORK_FORMAT, "stylempi": __version__, **{k: v for k, v in entries.items() if k not in ("look", "temporal")}}
    assert key("cpu", "ffmpeg") == hashlib.sha256(json.dumps(without, sort_keys=True).encode()).hexdigest()
    assert key("cpu", "ffmpeg") != key("gpu", "ffmpeg")  # a default job's key has no engines entry


@pytest.mark.parametrize("width, chroma, codec, reason", [
    (65, "420", "libx264", "the frame size 65x48 is odd, and 420 needs even sizes"),
    (64, "422", "h264_nvenc", "h264_nvenc cannot write 422"),
])
def test_the_chroma_note_says_which_reason_applies(tmp_path, width, chroma, codec, reason):
    """4:4:4 is written for one of two reasons, and the note names the one that holds."""
    import dataclasses
    from fractions import Fraction

    from stylempi.colour import matrices as colours
    from stylempi.media import VideoStreamInfo, choose_encoding, encoding_notes
    colour = dataclasses.replace(colours.Colour(colours.BT709, colours.RANGE_LIMITED, 1, 1), chroma=chroma)
    video = VideoStreamInfo(index=0, codec="h264", width=width, height=48, time_base=Fraction(1, 25), start_pts=0,
                            sample_aspect_ratio=None, rotation=0, pix_fmt=colour.pix_fmt(), frame_rate=Fraction(25),
                            colour=colour)
    settings = choose_encoding(tmp_path / "out.mp4", video, codec)
    assert settings.colour.chroma == "444"
    assert f"chroma {chroma} is written as 444 ({reason})" in encoding_notes(video, settings)
