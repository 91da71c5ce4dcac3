"""x264 opened for a job never runs its AVX-512 kernels (stylempi.media.cpu).

Its AVX-512 macroblock-tree kernel reads past a row of macroblocks whose count is not
a multiple of 8, so the same frames could encode to different bytes from one job run
to the next (docs/benchmarks.md, "Why the media code does what it does"). x264 says
which kernels it picked when it opens; this reads that line from a real encoder.
"""
from __future__ import annotations

import io
from fractions import Fraction

import av
import av.logging
import numpy as np

from stylempi.colour import matrices as colours
from stylempi.colour.matrices import Colour
from stylempi.media import EncodeSettings, cpu, encoder_options
from stylempi.media.encoding import add_video_stream
from stylempi.media.pixels import to_yuv

SDR = Colour(colours.BT709, colours.RANGE_LIMITED, colours.BT709, colours.BT709)


def _kernels(open_stream) -> str:
    """x264's 'using cpu capabilities' line, from an encoder opened by ``open_stream`` and fed a frame."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)
    try:
        with av.logging.Capture() as logged:
            container = av.open(io.BytesIO(), "w", format="nut")
            stream = open_stream(container)
            frame = to_yuv(np.zeros((48, 96, 3), np.uint8), SETTINGS)
            frame.pts = 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
            container.close()
    finally:
        av.logging.set_level(level)
    said = [message for _, _, message in logged if "cpu capabilities" in message]
    assert said, "x264 did not say which kernels it uses"
    return said[0].strip()


SETTINGS = EncodeSettings("libx264", "yuv420p", tuple(encoder_options("libx264", SDR).items()), 96, 48,
                          Fraction(1, 24), None, SDR)


def _plain_x264(container):
    stream = container.add_stream("libx264", options=dict(SETTINGS.options))
    stream.width, stream.height, stream.pix_fmt = SETTINGS.width, SETTINGS.height, SETTINGS.pix_fmt
    return stream


def test_a_jobs_x264_runs_without_avx512_kernels_and_with_every_other_one():
    ours = _kernels(lambda container: add_video_stream(container, SETTINGS))
    plain = _kernels(_plain_x264)
    assert "AVX512" not in ours.split(), ours
    if cpu.x264_asm(cpu.cpu_flags()):  # an AVX-512 CPU: x264 alone would pick them; ours keeps the rest
        assert plain.split() == ours.split() + ["AVX512"], (plain, ours)
    else:
        assert ours == plain
