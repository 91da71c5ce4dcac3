"""Decoding exactly one chunk: its frames, checked against the index, as RGB arrays."""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Any, Callable, Generator, Iterator, Sequence

import av

from ..colour.matrices import Colour
from ..errors import VideoDecodeFailure
from ._ffmpeg import ffmpeg_reason
from .inputs import open_input
from .pixels import to_rgb

#: How far before the chunk's start point each attempt seeks, in seconds; None decodes from
#: the stream's start (see :func:`decode_frames`).
SEEK_BACK_S = (0, 1, 4, 16, 64, None)


def _prime_decoder(container, stream) -> None:
    """Feed the decoder the stream's first packet before seeking away from it.

    Some decoders keep state from the first packet that later keyframes do not
    repeat: FFmpeg's H.264 decoder reads the x264 version from the first
    packet's SEI and, for old x264 builds, decodes 4:4:4 streams with a
    workaround for that encoder's bug. Without it every frame after a seek came
    out wrong (docs/benchmarks.md, "Why the media code does what it does"). One extra packet per chunk; the
    frame it gives is before the chunk.
    """
    for packet in container.demux(stream):
        if packet.size:
            try:
                stream.codec_context.decode(packet)
            except av.error.FFmpegError:
                pass  # a damaged first packet: the seek below still decides
            return


def decode_frames(path: str | os.PathLike, stream_index: int, pts: Sequence[int],
                  damaged: list[int] | None = None, seek_from: int | None = -1,
                  colour: Colour | None = None, convert: Callable[[av.VideoFrame], Any] | None = None,
                  hwaccel=None) -> Iterator[tuple[int, Any]]:
    """Yield ``(pts, RGB array)`` for exactly the frames ``pts``, in order.

    The arrays are converted with ``colour`` (the job's matrix and range; 16-bit
    RGB for inputs deeper than 8 bits), or as FFmpeg would when it is None.
    ``convert`` replaces that conversion (the torch colour path takes the YUV
    planes as they are, see :func:`~stylempi.media.pixels.to_planes`), and
    ``hwaccel`` decodes on a GPU (:mod:`stylempi.media.nvdec`).

    A damaged stretch of the stream is concealed by FFmpeg's decoder (as every
    player does); the timestamps of frames the decoder flags as corrupt are
    appended to ``damaged`` so the job can name them. Frames that are missing
    altogether fail the job instead: that would silently shorten the video.

    ``seek_from`` is the clean keyframe to start decoding from (the chunk's
    :attr:`~stylempi.job.plan.Chunk.seek_from`, from the index); ``None`` decodes
    from the start of the stream, and the default ``-1`` trusts the container's
    keyframe before the first frame (exact for codecs whose keyframes are all
    clean). Seeking is not exact on every container (on an MPEG-2 program
    stream a backward seek can land *after* the target), so when the first
    decoded frame is already past the wanted one the seek is retried further
    back (:data:`SEEK_BACK_S`), then from the very start. So it is when the
    first wanted frame comes out flagged corrupt after a seek: the seek point
    was not clean, or the stream is damaged there, which a decode from further
    back tells apart. Any frame that differs from the plan raises
    :class:`VideoDecodeFailure`.
    """
    if not pts:
        return
    if convert is None:
        def convert(frame):
            return to_rgb(frame, colour)
    anchor = pts[0] if seek_from == -1 else seek_from
    time_base = None
    for back_seconds in (SEEK_BACK_S if anchor is not None else (None,)):
        with open_input(path, hwaccel) as container:
            stream = container.streams[stream_index]
            if hwaccel is None:
                stream.thread_type = "AUTO"
            time_base = Fraction(stream.time_base)
            try:
                seeked = back_seconds is not None and _seek_before(container, stream, anchor, back_seconds)
            except av.error.FFmpegError:
                continue
            if (yield from _decode_run(path, container, stream, pts, seeked, damaged, convert)):
                return
    raise VideoDecodeFailure(f"{path}: could not reach the frame at {float(pts[0] * time_base):.6f}s by seeking "
                             "or by decoding from the start")


def _seek_before(container, stream, anchor: int, back_seconds: int) -> bool:
    """Seek to the keyframe ``back_seconds`` before ``anchor``; False (no seek) when that is
    not after the stream's start. FFmpeg's errors are the caller's to handle."""
    time_base = Fraction(stream.time_base)
    target = anchor - int(back_seconds / time_base)
    start = stream.start_time if stream.start_time is not None else target
    if target <= start:
        return False
    _prime_decoder(container, stream)
    container.seek(target, stream=stream, backward=True, any_frame=False)
    return True


def _decode_run(path, container, stream, pts: Sequence[int], seeked: bool, damaged: list[int] | None,
                convert: Callable[[av.VideoFrame], Any]) -> Generator[tuple[int, Any], None, bool]:
    """Decode from where ``container`` stands and yield the frames ``pts`` (see :func:`decode_frames`).

    Returns True once all are yielded, False with none yielded when this start
    cannot give the first one (the seek overshot it, or it came out corrupt
    after a seek): the caller then starts further back.
    """
    time_base = Fraction(stream.time_base)
    first = pts[0]
    frames = container.decode(stream)
    want = 0
    try:
        for frame in frames:
            if frame.pts is None:
                raise VideoDecodeFailure(f"{path}: a decoded frame has no timestamp")
            if want == 0:
                if frame.pts < first:
                    continue
                if frame.pts > first:
                    break  # the seek overshot: try further back
                if frame.is_corrupt and seeked:
                    break  # not a clean start, or damage: decide from further back
            if frame.pts != pts[want]:
                raise VideoDecodeFailure(
                    f"{path}: frame at {float(frame.pts * time_base):.6f}s differs from the index "
                    f"(expected {float(pts[want] * time_base):.6f}s); the stream may be damaged")
            if damaged is not None and frame.is_corrupt:
                damaged.append(frame.pts)
            yield frame.pts, convert(frame)
            want += 1
            if want == len(pts):
                return True
    except av.error.FFmpegError as exc:
        raise VideoDecodeFailure(f"{path} is damaged near {float(pts[want] * time_base):.3f}s: the "
                                 f"decoder gave up ({ffmpeg_reason(exc)}); repair or re-encode "
                                 "the input") from None
    if want:
        missing = float(pts[want] * time_base)
        raise VideoDecodeFailure(f"{path}: the stream ended or broke before the frame at {missing:.6f}s "
                                 f"({len(pts) - want} frames of this chunk missing); the file is damaged")
    return False
