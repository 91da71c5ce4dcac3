"""The options each encoder is opened with (stylempi.media.encoding.encoder_options).

NVENC cannot be opened here (no GPU), so its options are pinned to FFmpeg's option
names as written: a GPU run is the test that they open.
"""
from __future__ import annotations

import os

import pytest

from stylempi.colour import matrices as colours
from stylempi.colour.matrices import Colour
from stylempi.errors import UsageError
from stylempi.media import cpu
from stylempi.media import CRF_RANGES, EncoderRequest, DEFAULT_CRF, DEFAULT_PRESET, check_crf, encoder_options

SDR = Colour(colours.BT709, colours.RANGE_LIMITED, colours.BT709, colours.BT709)


@pytest.mark.parametrize("encoder", ["h264_nvenc", "hevc_nvenc", "av1_nvenc"])
def test_nvenc_is_constant_quality_without_b_frames(encoder):
    assert encoder_options(encoder, SDR) == {
        "rc": "vbr", "cq": str(DEFAULT_CRF[encoder]), "b": "0", "bf": "0", "preset": DEFAULT_PRESET[encoder]}
    assert encoder_options(encoder, SDR, EncoderRequest(crf=30, preset="p7")) == {"rc": "vbr", "cq": "30", "b": "0", "bf": "0", "preset": "p7"}


def test_nvenc_crf_scale_leaves_out_cq_0_which_is_not_lossless():
    assert CRF_RANGES["h264_nvenc"] == (1, 51)
    check_crf("hevc_nvenc", 51)
    with pytest.raises(UsageError, match="out of range for h264_nvenc"):
        check_crf("h264_nvenc", 0)


@pytest.mark.parametrize("encoder", ["libx264", "libvpx-vp9"])
def test_encoder_threads_are_the_node_cpu_count_whatever_the_affinity(monkeypatch, encoder):
    """The thread count is a pixel setting (x264's slices): never the affinity mask's count."""
    assert encoder_options(encoder, SDR)["threads"] == str(os.cpu_count())
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert encoder_options(encoder, SDR)["threads"] == str(os.cpu_count())


AVX512_CPU = {"sse4_2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


@pytest.mark.parametrize("flags, asm", [
    (AVX512_CPU, "AVX2"),                                 # Skylake-SP and later, Zen 4
    (AVX512_CPU | {"avx512_bf16", "avx512_fp16"}, "AVX2"),
    (AVX512_CPU - {"avx512bw"}, None),                    # Knights Landing: x264 keeps to AVX2 by itself
    ({"sse4_2", "avx", "avx2", "fma", "bmi2"}, None),     # AVX2 only: x264 decides
    (set(), None),                                        # /proc/cpuinfo unreadable (not Linux)
])
def test_x264_is_kept_from_its_avx512_kernels_only_where_it_would_use_them(flags, asm):
    """x264's AVX-512 mbtree kernel reads past a row (stylempi.media.cpu); AVX2 is asked for only on
    a CPU that has AVX-512, so that no CPU is ever told to run kernels it lacks."""
    assert cpu.x264_asm(flags) == asm
    assert cpu.x264_params("sync-lookahead=0", flags) == ("sync-lookahead=0:asm=AVX2" if asm else "sync-lookahead=0")
    assert cpu.x264_params("", flags) == ("asm=AVX2" if asm else "")
