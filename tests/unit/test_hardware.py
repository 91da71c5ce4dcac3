"""Which engines decode, convert and encode a job (stylempi.media.engines), on fake GPUs.

The choices are pure: each test hands them a :class:`Capabilities` table shaped like a
real node (what opened there), so the GPU rules are checked on a machine without one.
The tables: a V100 (NVENC and NVDEC, no AV1 decode: Volta), an H200 (NVDEC, no NVENC:
Hopper), and a CPU-only node.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from stylempi.media import engines as hardware
from stylempi.media import gpu_support
from stylempi.errors import UsageError
from stylempi.media.engines import CPU_ONLY, Capabilities, Choice, choose_codec, choose_convert, choose_decode

V100 = Capabilities(cuda=True, gpu_name="Tesla V100-SXM2-32GB", nvdec=frozenset({"h264", "hevc"}),
                    nvenc=frozenset({"h264_nvenc", "hevc_nvenc"}))
H200 = Capabilities(cuda=True, gpu_name="NVIDIA H200", nvdec=frozenset({"h264", "hevc"}))


@dataclass(frozen=True)
class FakeContainer:
    """An output container that holds the codecs listed (stylempi.media.containers.Container's interface)."""

    extension: str
    codecs: frozenset[str]

    def holds(self, codec: str) -> bool:
        return codec in self.codecs


MP4 = FakeContainer("mp4", frozenset({"libx264", "libx265", "h264_nvenc", "hevc_nvenc", "av1_nvenc"}))
WEBM = FakeContainer("webm", frozenset({"libvpx-vp9", "libsvtav1", "av1_nvenc"}))


# --------------------------------------------------------------------------- decode

def test_decode_cpu_is_cpu_everywhere():
    for caps, device in ((CPU_ONLY, "cpu"), (V100, "cuda"), (H200, "cuda")):
        assert choose_decode("cpu", device, "h264", caps) == Choice("cpu")


def test_decode_gpu_and_auto_take_nvdec_where_it_decodes_the_codec():
    assert choose_decode("gpu", "cuda", "h264", V100) == Choice("gpu")
    assert choose_decode("auto", "cuda", "hevc", H200) == Choice("gpu")


def test_decode_auto_on_a_cpu_job_is_cpu_without_a_note():
    assert choose_decode("auto", "cpu", "h264", CPU_ONLY) == Choice("cpu")
    assert choose_decode("auto", "cpu", "h264", V100) == Choice("cpu")  # --device cpu on a GPU node


def test_decode_gpu_without_the_network_on_cuda_says_what_to_do():
    for caps in (CPU_ONLY, V100):
        with pytest.raises(UsageError, match="--decode gpu .* runs the network on the CPU.*--decode cpu") as e:
            choose_decode("gpu", "cpu", "h264", caps)
        assert e.value.exit_code == 2


def test_av1_on_a_volta_falls_back_to_the_cpu_with_a_note_or_an_error():
    auto = choose_decode("auto", "cuda", "av1", V100)
    assert auto == Choice("cpu", "NVDEC cannot decode av1 on Tesla V100-SXM2-32GB (Volta GPUs decode no AV1): "
                                 "decoding on the CPU")
    with pytest.raises(UsageError, match=r"NVDEC cannot decode this input's av1 on Tesla V100.*--decode cpu"):
        choose_decode("gpu", "cuda", "av1", V100)


def test_a_gpu_missing_from_the_family_table_is_decided_alike():
    unknown = Capabilities(cuda=True, gpu_name="NVIDIA Future X1", nvdec=frozenset({"h264"}))
    assert choose_decode("auto", "cuda", "h264", unknown) == Choice("gpu")
    assert choose_decode("auto", "cuda", "vp9", unknown) == Choice(
        "cpu", "NVDEC cannot decode vp9 on NVIDIA Future X1: decoding on the CPU")


# --------------------------------------------------------------------------- convert

@pytest.mark.parametrize("requested, device, chosen", [
    ("auto", "cuda", "torch"), ("auto", "cpu", "ffmpeg"), ("torch", "cpu", "torch"), ("torch", "cuda", "torch"),
    ("ffmpeg", "cuda", "ffmpeg"), ("ffmpeg", "cpu", "ffmpeg")])
def test_convert(requested, device, chosen):
    assert choose_convert(requested, device) == Choice(chosen)


def test_unknown_modes_are_usage_errors():
    with pytest.raises(UsageError, match="--convert must be one of auto, ffmpeg, torch"):
        choose_convert("cuda", "cuda")
    with pytest.raises(UsageError, match="--decode must be one of auto, cpu, gpu"):
        choose_decode("nvdec", "cuda", "h264", V100)


# --------------------------------------------------------------------------- encode

def test_no_codec_keeps_the_default_on_every_node():
    for caps, device in ((CPU_ONLY, "cpu"), (V100, "cuda"), (H200, "cuda")):
        assert choose_codec(None, "libx264", MP4, 8, device, caps) == Choice("libx264")


@pytest.mark.parametrize("default, container, depth, device, caps, choice", [
    ("libx264", MP4, 8, "cuda", V100, Choice("h264_nvenc")),
    ("libx265", MP4, 10, "cuda", V100, Choice("hevc_nvenc")),  # H.264 NVENC writes 8 bits only
    ("libx264", MP4, 8, "cuda", H200, Choice(
        "libx264", "no NVENC on NVIDIA H200 (Hopper GPUs have none): encoding with libx264")),
    ("libx264", MP4, 8, "cpu", CPU_ONLY, Choice("libx264")),  # nothing fell back: no GPU to use
    ("libx264", MP4, 8, "cpu", V100, Choice("libx264")),  # --device cpu on a GPU node
    ("libvpx-vp9", WEBM, 8, "cuda", V100, Choice(
        "libvpx-vp9", "a .webm file holds no NVENC codec: encoding with libvpx-vp9")),
    ("libx265", MP4, 10, "cuda", Capabilities(cuda=True, gpu_name="Tesla V100-SXM2-32GB",
                                              nvenc=frozenset({"h264_nvenc"})),
     Choice("libx265", "hevc_nvenc does not open on Tesla V100-SXM2-32GB: encoding with libx265"))])
def test_codec_auto(default, container, depth, device, caps, choice):
    assert choose_codec("auto", default, container, depth, device, caps) == choice


@pytest.mark.parametrize("caps, device, words", [
    (H200, "cuda", "no NVENC on NVIDIA H200 (Hopper GPUs have none)"),
    (CPU_ONLY, "cpu", "no NVIDIA GPU with NVENC here"),
    (Capabilities(cuda=True, gpu_name="NVIDIA Future X1"), "cuda", "NVENC does not open on NVIDIA Future X1")])
def test_a_named_nvenc_encoder_that_does_not_open_is_one_usage_error(caps, device, words):
    with pytest.raises(UsageError) as e:
        choose_codec("h264_nvenc", "libx264", MP4, 8, device, caps)
    assert e.value.exit_code == 2
    assert words in str(e.value) and "leave --codec out for libx264" in str(e.value)


def test_a_named_nvenc_encoder_that_opens_is_taken_whatever_the_network_device():
    assert choose_codec("hevc_nvenc", "libx264", MP4, 8, "cuda", V100) == Choice("hevc_nvenc")
    assert choose_codec("h264_nvenc", "libx264", MP4, 8, "cpu", V100) == Choice("h264_nvenc")


def test_other_named_encoders_are_left_to_the_encoder_checks():
    assert choose_codec("libx265", "libx264", MP4, 8, "cuda", H200) == Choice("libx265")
    assert choose_codec("nosuchcodec", "libx264", MP4, 8, "cpu", CPU_ONLY) == Choice("nosuchcodec")


def test_which_nvenc_encoders_are_probed():
    assert hardware.nvenc_to_probe(None, MP4, 8, "cuda") == ()
    assert hardware.nvenc_to_probe("libx264", MP4, 8, "cuda") == ()
    assert hardware.nvenc_to_probe("auto", MP4, 8, "cpu") == ()  # a CPU job asks the GPU nothing
    assert hardware.nvenc_to_probe("auto", MP4, 8, "cuda") == ("h264_nvenc",)
    assert hardware.nvenc_to_probe("auto", MP4, 10, "cuda") == ("hevc_nvenc",)
    assert hardware.nvenc_to_probe("auto", WEBM, 8, "cuda") == ()
    assert hardware.nvenc_to_probe("av1_nvenc", MP4, 8, "cpu") == ("av1_nvenc",)  # named: tried anyway


# --------------------------------------------------------------------------- wording

@pytest.mark.parametrize("name, family", [
    ("NVIDIA H200", "Hopper"), ("NVIDIA H100 80GB HBM3", "Hopper"), ("NVIDIA GH200 480GB", "Hopper"),
    ("NVIDIA A100-SXM4-80GB", "Ampere GA100"), ("NVIDIA A30", "Ampere GA100"), ("Tesla V100-PCIE-16GB", "Volta"),
    ("Tesla T4", "Turing"), ("NVIDIA L4", "Ada"), ("NVIDIA L40S", "Ada"), ("NVIDIA GeForce RTX 4090", "Ada"),
    ("NVIDIA RTX 6000 Ada Generation", "Ada"), ("Quadro RTX 8000", "Turing"), ("NVIDIA A10", None), ("NVIDIA A300X", None), ("NVIDIA GeForce RTX 3090", None), (None, None)])
def test_gpu_families_match_whole_product_names(name, family):
    found = hardware.gpu_family(name)
    assert (found.name if found else None) == family


def test_describe_engines():
    assert hardware.describe_engines("cpu", "ffmpeg", "libx264") == "decode cpu, convert ffmpeg, encode libx264"


def test_a_cpu_device_without_named_encoders_probes_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("probed")
    monkeypatch.setattr(gpu_support, "_nvdec_decodes", refuse)
    monkeypatch.setattr(gpu_support, "_nvenc_opens", refuse)
    monkeypatch.setattr(gpu_support, "_gpu_name", refuse)

    class Cpu:
        type, index = "cpu", None
    assert gpu_support.probe_capabilities(Cpu(), "h264", input_path="x.mp4", video_stream=0, decode=True) is CPU_ONLY


def test_probing_asks_only_for_what_the_job_may_use(monkeypatch):
    asked = []
    monkeypatch.setattr(gpu_support, "_nvdec_decodes", lambda path, stream, index: asked.append(("nvdec", index)) or True)
    monkeypatch.setattr(gpu_support, "_nvenc_opens", lambda name, index: asked.append((name, index)) or name == "h264_nvenc")
    monkeypatch.setattr(gpu_support, "_gpu_name", lambda device: "Tesla V100-SXM2-32GB")

    class Cuda:
        type, index = "cuda", 0
    caps = gpu_support.probe_capabilities(Cuda(), "h264", input_path="x.mp4", video_stream=0, decode=True,
                                       encoders=("h264_nvenc", "hevc_nvenc"))
    assert caps == Capabilities(True, "Tesla V100-SXM2-32GB", frozenset({"h264"}), frozenset({"h264_nvenc"}))
    assert asked == [("nvdec", 0), ("h264_nvenc", 0), ("hevc_nvenc", 0)]
    asked.clear()
    assert gpu_support.probe_capabilities(Cuda(), "h264", input_path="x.mp4", video_stream=0).nvdec == frozenset()
    assert asked == []


# --------------------------------------------------------------------------- what the torch path does

GPU, TORCH = Choice("gpu"), Choice("torch")


def test_the_frame_path_is_kept_where_it_applies():
    assert hardware.fit_frame_path(GPU, TORCH, "gpu", "torch", "420", plain_look=True) == (GPU, TORCH)
    # swscale converts: NVDEC frames come to host memory, any subsampling will do
    assert hardware.fit_frame_path(GPU, Choice("ffmpeg"), "gpu", "ffmpeg", "444", True) == (GPU, Choice("ffmpeg"))


def test_a_look_keeps_swscale():
    """--style-scale and --preserve-colors work on the CPU's RGB frames."""
    with pytest.raises(UsageError, match="--convert torch cannot apply --style-scale"):
        hardware.fit_frame_path(Choice("cpu"), TORCH, "cpu", "torch", "420", plain_look=False)
    decode, convert = hardware.fit_frame_path(Choice("cpu"), TORCH, "cpu", "auto", "420", plain_look=False)
    assert convert.value == "ffmpeg" and "swscale" in convert.note and decode == Choice("cpu")


def test_nvdec_frames_reach_torch_as_4_2_0_only():
    with pytest.raises(UsageError, match="4:2:0 frames only, and this input is 4:4:4"):
        hardware.fit_frame_path(GPU, TORCH, "gpu", "torch", "444", plain_look=True)
    decode, convert = hardware.fit_frame_path(GPU, TORCH, "auto", "auto", "422", plain_look=True)
    assert decode.value == "cpu" and "4:2:2" in decode.note and convert == TORCH
