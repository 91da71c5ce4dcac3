"""The CUDA path: what a GPU node runs by default (fp16, batch 8, one GPU per local rank).

Marked ``gpu``: skipped where PyTorch sees no CUDA device (CI, this 2-core
machine); run on a lent GPU with ``pytest -m gpu tests/e2e/test_gpu.py``. The
summary line test at the end runs everywhere (it is the CPU half of the
"which engine ran" check).
"""
from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import torch

import clips
from conftest import stylempi
from stylempi.network.placement import default_batch_size, resolve_compile, resolve_device, resolve_precision
from stylempi.network.stylize import NetworkStylizer

RUN_TIMEOUT = 420  # liveness deadline, not a speed check


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _frames(count: int, width: int, height: int) -> list[np.ndarray]:
    return [clips.picture(i, width, height) for i in range(count)]


@pytest.mark.gpu
def test_auto_settings_on_a_gpu_are_fp16_batch_8_eager_contiguous():
    device = resolve_device("auto", local_rank=3)
    assert device.type == "cuda"
    assert device.index == 3 % torch.cuda.device_count()
    assert resolve_precision("auto", device) == "fp16"
    assert default_batch_size(device) == 8
    assert resolve_compile("auto", device, frames=10_000) is False  # the job compiled on a GPU: not yet run
    assert resolve_compile("on", device, frames=10) is True
    stylizer = NetworkStylizer(clips.test_network(), device, "fp16", 8)
    assert stylizer.memory_format == torch.contiguous_format  # faster eagerly on GPUs


@pytest.mark.gpu
def test_cuda_fp32_gives_the_cpu_fp32_pixels(one_torch_thread):
    """Same network, same frames (odd size: padding and crop on the GPU too): the same picture
    up to float rounding. TF32 convolutions (cuDNN's default) would be off by more."""
    network = clips.test_network()
    frames = _frames(3, 67, 45)
    cpu = NetworkStylizer(network, torch.device("cpu"), "fp32", 2)(frames)
    gpu = NetworkStylizer(network, torch.device("cuda"), "fp32", 8)(frames)
    assert [f.shape for f in gpu] == [(45, 67, 3)] * 3
    diff = np.abs(np.stack(cpu).astype(int) - np.stack(gpu).astype(int))
    assert diff.max() <= 2, f"max difference {diff.max()}"
    assert diff.mean() < 0.05, f"mean difference {diff.mean()}"


@pytest.mark.gpu
def test_cuda_fp16_stays_close_to_fp32():
    """The GPU default precision against fp32 on a real built-in style: PSNR >= 38 dB."""
    from stylempi.network.model import load_network
    from stylempi.network.styles import HERE
    network = load_network((HERE / "wave.pth").read_bytes())
    frames = _frames(4, 320, 180)
    reference = NetworkStylizer(network, torch.device("cuda"), "fp32", 8)(frames)
    half = NetworkStylizer(network, torch.device("cuda"), "fp16", 8)(frames)
    values = [_psnr(a, b) for a, b in zip(half, reference)]
    assert min(values) >= 38, f"fp16 vs fp32 PSNR {values}"


@pytest.mark.gpu
@pytest.mark.parametrize("ranks", [1, 2])
def test_run_on_the_gpu_keeps_every_frame_and_names_the_engine(tmp_path, ranks):
    """The whole job on the GPU (two ranks share one card): verify passes, and the summary
    says the network ran on CUDA in fp16."""
    clip = clips.make_clip(tmp_path / "in.mp4", frames=21, size=(96, 54), audio_tracks=1, gop=6)
    model = clips.save_test_model(tmp_path / "m.pth")
    out = tmp_path / "out.mp4"
    r = stylempi("run", clip, out, "--model", model, "--chunk-frames", "6", ranks=ranks, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "cuda fp16 batch 8" in r.stdout, r.stdout
    v = stylempi("verify", clip, out, timeout=RUN_TIMEOUT)
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["ok"]


@pytest.mark.gpu
def test_gpu_outputs_for_one_and_two_ranks_decode_identically(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=24, size=(96, 54), gop=6)
    model = clips.save_test_model(tmp_path / "m.pth")
    decoded = []
    for ranks in (1, 2):
        out = tmp_path / f"out{ranks}.mp4"
        r = stylempi("run", clip, out, "--model", model, "--chunk-frames", "6", ranks=ranks, timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        with av.open(str(out)) as container:
            decoded.append([f.to_ndarray(format="rgb24").tobytes() for f in container.decode(video=0)])
    assert len(decoded[0]) == 24
    assert decoded[0] == decoded[1]


@pytest.mark.gpu
def test_compiled_gpu_step_matches_eager(tmp_path, monkeypatch):
    """torch.compile on CUDA: the same picture as the eager network (a padded last batch too),
    and the same again from a second compiled stylizer (Inductor's caches)."""
    monkeypatch.setenv("STYLEMPI_COMPILE_CACHE", str(tmp_path / "cache"))
    network = clips.test_network()
    frames = _frames(5, 96, 54)  # batch 4: the second batch is padded to 4
    cuda = torch.device("cuda")
    eager = NetworkStylizer(network, cuda, "fp16", 4)(frames)
    compiled = NetworkStylizer(network, cuda, "fp16", 4, compile=True, require_compile=True)
    out = compiled(frames)
    assert len(out) == 5 and compiled.compile_notes == []
    values = [_psnr(a, b) for a, b in zip(out, eager)]
    assert min(values) >= 40, values
    again = NetworkStylizer(network, cuda, "fp16", 4, compile=True, require_compile=True)
    assert [a.tobytes() for a in again(frames)] == [a.tobytes() for a in out]


@pytest.mark.gpu
def test_compiled_gpu_run_for_one_and_two_ranks_decodes_identically(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=24, size=(96, 54), gop=6)
    model = clips.save_test_model(tmp_path / "m.pth")
    env = {"STYLEMPI_COMPILE_CACHE": str(tmp_path / "cache")}
    decoded = []
    for ranks in (1, 2):
        out = tmp_path / f"out{ranks}.mp4"
        r = stylempi("run", clip, out, "--model", model, "--chunk-frames", "6", "--compile", "on", ranks=ranks,
                     timeout=RUN_TIMEOUT, env=env)
        assert r.returncode == 0, r.stderr
        assert "cuda fp16 batch 8 compiled" in r.stdout, r.stdout
        with av.open(str(out)) as container:
            decoded.append([f.to_ndarray(format="rgb24").tobytes() for f in container.decode(video=0)])
    assert len(decoded[0]) == 24
    assert decoded[0] == decoded[1]


def test_summary_line_names_the_engine_on_cpu(tmp_path):
    """...and a width-8 network runs in fp32 on a CPU by default (bf16 costs it too much quality)."""
    clip = clips.make_clip(tmp_path / "in.mp4", frames=5, size=(64, 48))
    model = clips.save_test_model(tmp_path / "m.pth")
    r = stylempi("run", clip, tmp_path / "out.mp4", "--model", model, "--device", "cpu", "--batch-size", "3",
                 timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "on 1 rank (cpu fp32 batch 3)" in r.stdout, r.stdout


# ---------------------------------------------------------------------------
# The media engines on a GPU (stylempi.media.engines): not yet run on one. These are the
# checks a lent GPU should run first; tests/integration/test_engines.py has the CPU halves.
# ---------------------------------------------------------------------------

def _gpu_caps(clip):
    from stylempi.media.gpu_support import probe_capabilities
    return probe_capabilities(torch.device("cuda", 0), "h264", input_path=clip, video_stream=0, decode=True,
                              encoders=("h264_nvenc", "hevc_nvenc"))


@pytest.mark.gpu
def test_probing_this_gpu_agrees_with_nvidias_tables(tmp_path):
    """Every NVDEC decodes H.264; NVENC opens exactly where NVIDIA's family table says it exists."""
    from stylempi.media.engines import gpu_family
    caps = _gpu_caps(clips.make_clip(tmp_path / "in.mp4", frames=3, size=(256, 144)))
    assert caps.cuda and caps.gpu_name, caps
    assert caps.nvdec == frozenset({"h264"}), f"NVDEC did not decode H.264 on {caps.gpu_name}"
    family = gpu_family(caps.gpu_name)
    if family is not None:
        assert bool(caps.nvenc) == family.nvenc, (caps, family)


@pytest.mark.gpu
def test_auto_engines_on_a_gpu_run_name_them_and_verify(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=12, size=(256, 144), gop=6)
    model = clips.save_test_model(tmp_path / "m.pth")
    out = tmp_path / "out.mp4"
    r = stylempi("run", clip, out, "--model", model, "--decode", "auto", "--convert", "auto", "--codec", "auto",
                 "--chunk-frames", "6", timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    caps = _gpu_caps(clip)
    encoder = "h264_nvenc" if "h264_nvenc" in caps.nvenc else "libx264"
    assert f"decode gpu, convert torch, encode {encoder}" in r.stdout, r.stdout + r.stderr
    if encoder == "libx264":
        assert "encoding with libx264" in r.stderr, r.stderr  # the note says why
    v = stylempi("verify", clip, out, timeout=RUN_TIMEOUT)
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.gpu
def test_nvenc_segments_join_and_one_and_two_ranks_decode_alike(tmp_path):
    """Segments encoded apart by NVENC (bf 0) join into one stream that verifies, and the
    encoder is deterministic enough that N does not change the pictures."""
    clip = clips.make_clip(tmp_path / "in.mp4", frames=24, size=(256, 144), gop=6)
    if "h264_nvenc" not in _gpu_caps(clip).nvenc:
        pytest.skip("no NVENC on this GPU")
    model = clips.save_test_model(tmp_path / "m.pth")
    decoded = []
    for ranks in (1, 2):
        out = tmp_path / f"out{ranks}.mp4"
        r = stylempi("run", clip, out, "--model", model, "--codec", "h264_nvenc", "--chunk-frames", "6",
                     ranks=ranks, timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        v = stylempi("verify", clip, out, timeout=RUN_TIMEOUT)
        assert v.returncode == 0, v.stdout + v.stderr
        with av.open(str(out)) as container:
            decoded.append([f.to_ndarray(format="rgb24").tobytes() for f in container.decode(video=0)])
    assert len(decoded[0]) == 24
    assert decoded[0] == decoded[1], "NVENC encoded the same frames differently on 1 and 2 ranks"


@pytest.mark.gpu
def test_hevc_nvenc_keeps_a_10_bit_input_10_bit(tmp_path):
    clip = clips.colour_clip(tmp_path / "in.mkv", frames=6, size=(256, 144), codec="libx265",
                             pix_fmt="yuv420p10le", matrix=9, range_=1, primaries=9, transfer=16)
    if "hevc_nvenc" not in _gpu_caps(clip).nvenc:
        pytest.skip("no NVENC on this GPU")
    model = clips.save_test_model(tmp_path / "m.pth")
    out = tmp_path / "out.mkv"
    r = stylempi("run", clip, out, "--model", model, "--codec", "hevc_nvenc", timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "depth is reduced" not in r.stderr, r.stderr
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.pix_fmt in ("yuv420p10le", "p010le")


# ---------------------------------------------------------------------------
# The GPU frame path: NVDEC decode, colour in torch on the GPU (--decode gpu,
# --convert torch). Built without a GPU; these are the checks a lent one runs.
# ---------------------------------------------------------------------------

def _decoded(clip, reader) -> tuple[list, list, object]:
    """Timestamps and pictures of every frame of CLIP, read as ``reader(colour)`` says, and the colour."""
    from stylempi.media import decode_frames, describe_video, index_frames, open_input
    with open_input(clip) as container:
        video = describe_video(container, container.streams.video[0])
    pts = index_frames(clip, video.index).pts
    got = list(decode_frames(clip, video.index, pts, colour=video.colour, **reader(video.colour)))
    return [p for p, _ in got], [picture for _, picture in got], video.colour


@pytest.mark.gpu
@pytest.mark.parametrize("codec, pix_fmt", [("libx264", "yuv420p"), ("libx265", "yuv420p10le")])
def test_nvdec_gives_the_cpu_decoders_frames(tmp_path, codec, pix_fmt):
    """The same YUV samples as FFmpeg's CPU decoder (P010 shifted down for 10-bit), and RGB
    through the torch conversion within 45 dB of FFmpeg's conversion of the CPU frames."""
    from stylempi.network.planes import chroma_location
    from stylempi.media import to_planes
    from stylempi.media.nvdec import cuda_planes, nvdec
    from stylempi.colour.tensors import planes_to_rgb
    clip = clips.make_clip(tmp_path / "in.mkv", frames=14, size=(320, 180), codec=codec, pix_fmt=pix_fmt, gop=6)
    cuda = torch.device("cuda")
    cpu_pts, cpu_planes, colour = _decoded(clip, lambda c: {"convert": lambda f: to_planes(f, c)})
    gpu_pts, gpu_planes, _ = _decoded(clip, lambda c: {"convert": lambda f: cuda_planes(f, c.depth),
                                                       "hwaccel": nvdec(cuda)})
    _, cpu_rgb, _ = _decoded(clip, lambda c: {})
    _, sitings, _ = _decoded(clip, lambda c: {"convert": lambda f: chroma_location(f, c)})
    assert gpu_pts == cpu_pts and len(gpu_pts) == 14
    for host, device in zip(cpu_planes, gpu_planes):
        for a, b in zip(host, device):
            assert np.array_equal(a.astype(np.int64), b.cpu().numpy().astype(np.int64))
    top = 65535.0 if colour.depth > 8 else 255.0
    for planes, reference in zip(gpu_planes, cpu_rgb):
        rgb = planes_to_rgb(*(p[None] for p in planes), colour, chroma_location=sitings[0])[0]
        rgb = rgb.permute(1, 2, 0).cpu().numpy()
        mse = float(np.mean((rgb - reference.astype(np.float64) * (255.0 / top)) ** 2))
        assert 10 * math.log10(255.0 ** 2 / max(mse, 1e-12)) >= 45


@pytest.mark.gpu
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("engines", [("--decode", "gpu", "--convert", "torch"), ("--convert", "torch"),
                                     ("--decode", "gpu", "--convert", "ffmpeg")])
def test_gpu_frame_path_jobs_pass_verify(tmp_path, ranks, engines):
    """Whole jobs on the GPU frame path, on one and two ranks sharing the card: every frame,
    timestamp and audio packet kept (verify), and the summary names the engines."""
    clip = clips.make_clip(tmp_path / "in.mp4", frames=21, size=(96, 54), audio_tracks=1, gop=6)
    model = clips.save_test_model(tmp_path / "m.pth")
    out = tmp_path / "out.mp4"
    r = stylempi("run", clip, out, "--model", model, "--chunk-frames", "6", *engines, ranks=ranks,
                 timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert f"decode {engines[1] if engines[0] == '--decode' else 'cpu'}" in r.stdout, r.stdout
    v = stylempi("verify", clip, out, timeout=RUN_TIMEOUT)
    assert v.returncode == 0, v.stdout + v.stderr
