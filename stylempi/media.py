"""Media I/O with PyAV: probe, index, decode exact frame runs, encode segments, assemble.

Everything happens in process (PyAV bundles FFmpeg): no frames on disk as
images, no ``ffmpeg`` command lines. Timestamps are carried as integers in the
input stream's time base, so nothing is ever re-timed.

The data path of a job:

1. :func:`index_frames` lists the presentation timestamps and keyframes of the
   chosen video stream by demuxing packets (no decoding, so it is fast).
2. :func:`decode_frames` yields exactly the frames of one chunk as RGB arrays,
   seeking from the keyframe before it and checking every timestamp, because a
   seek does not always land where asked.
3. :class:`SegmentWriter` encodes a rank's stylized chunk into a NUT file (any
   codec, any time base, exact timestamps).
4. :func:`assemble` joins the segments by packet copy and muxes the original
   audio and subtitle packets untouched, interleaved by time, into a temporary
   file that is renamed onto OUTPUT only when complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import os
import re
import struct
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
import numpy as np

from . import colour as colours
from .colour import Colour
from .containers import Container, container_for
from .errors import OutputFailure, UsageError, VideoDecodeFailure, VideoOpenFailure

#: Encoder for inputs deeper than 8 bits when --codec is not given: HEVC Main 10 is what
#: HDR players and TVs decode (x264's High 10 is barely supported in hardware).
DEEP_CODEC = "libx265"


# ---------------------------------------------------------------------------
# Opening and describing inputs
# ---------------------------------------------------------------------------

def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a media file, turning every failure into one clear :class:`VideoOpenFailure`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoOpenFailure(f"input {path} does not exist")
    if os.path.isdir(path):
        raise VideoOpenFailure(f"input {path} is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoOpenFailure(f"input {path} is empty")
    try:
        return av.open(path, metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise VideoOpenFailure(f"cannot read {path} as a video: {_ffmpeg_reason(exc)}") from None


def pick_video_stream(container: av.container.InputContainer, index: int | None = None) -> av.video.stream.VideoStream:
    """The stream FFmpeg would pick (``streams.best``), or stream number ``index``."""
    videos = [s for s in container.streams.video if not _is_attached_picture(s)]
    if index is not None:
        if index < 0 or index >= len(container.streams) or container.streams[index].type != "video":
            choices = ", ".join(str(s.index) for s in videos) or "none"
            raise UsageError(f"--video-stream {index} is not a video stream of {container.name} "
                             f"(video streams: {choices})")
        return container.streams[index]
    if not videos:
        raise VideoOpenFailure(f"{container.name} holds no video stream "
                               "(an audio-only file or a document?); give a video file")
    best = container.streams.best("video")
    return best if best is not None and not _is_attached_picture(best) else videos[0]


def _is_attached_picture(stream) -> bool:
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except Exception:  # noqa: BLE001 - older PyAV without dispositions
        return False


@dataclass
class VideoStreamInfo:
    """What the output must reproduce of the chosen video stream."""

    index: int
    codec: str
    width: int
    height: int
    time_base: Fraction
    start_pts: int | None
    sample_aspect_ratio: Fraction | None
    rotation: int
    pix_fmt: str | None
    frame_rate: Fraction | None
    #: Matrix, range, tags, depth and HDR metadata, as both conversions use them.
    colour: Colour = field(default_factory=lambda: Colour(colours.SMPTE170M, colours.RANGE_LIMITED,
                                                          colours.SMPTE170M, colours.BT709))
    #: What of the picture's description cannot be kept (dynamic HDR metadata...), for the user.
    colour_notes: list[str] = field(default_factory=list)


def describe_video(container: av.container.InputContainer, stream) -> VideoStreamInfo:
    """Size, aspect, rotation, colour and timing of ``stream`` (decodes its first frame)."""
    ctx = stream.codec_context
    rotation = 0
    width, height = ctx.width, ctx.height
    first = None
    try:
        for frame in container.decode(stream):
            rotation = int(round(frame.rotation or 0)) % 360
            width, height = frame.width, frame.height
            first = frame
            break
    except av.error.FFmpegError as exc:
        raise VideoOpenFailure(f"cannot decode video of {container.name}: {_ffmpeg_reason(exc)}") from None
    colour, notes = frame_colour(first, width, height, ctx.pix_fmt, container.name)
    sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
    return VideoStreamInfo(
        index=stream.index, codec=ctx.name, width=width, height=height,
        time_base=Fraction(stream.time_base), start_pts=stream.start_time,
        sample_aspect_ratio=Fraction(sar) if sar else None, rotation=rotation,
        pix_fmt=ctx.pix_fmt, frame_rate=Fraction(stream.average_rate) if stream.average_rate else None,
        colour=colour, colour_notes=notes)


def frame_colour(frame, width: int, height: int, pix_fmt: str | None, name: str) -> tuple[Colour, list[str]]:
    """The job's :class:`~stylempi.colour.Colour` from a decoded frame, and what cannot be kept.

    ``frame`` None (a stream that decodes nothing) gives the guess for ``width`` x ``height``.
    """
    notes: list[str] = []
    if frame is None:
        return colours.decide(width, height, pix_fmt or "yuv420p", matrix=colours.UNSPECIFIED,
                              range_=colours.UNSPECIFIED, primaries=colours.UNSPECIFIED,
                              transfer=colours.UNSPECIFIED, depth=8, chroma="420"), notes
    fmt = frame.format
    depth = max(c.bits for c in fmt.components)
    luma, chroma = fmt.components[0], fmt.components[min(1, len(fmt.components) - 1)]
    shifts = (int(chroma.width < luma.width), int(chroma.height < luma.height))
    mastering = light = None
    for side in frame.side_data:
        kind = side.type.name
        if kind == "MASTERING_DISPLAY_METADATA" and len(bytes(side)) >= 88:
            mastering = colours.mastering_display(struct.unpack("<22i", bytes(side)[:88]))
        elif kind == "CONTENT_LIGHT_LEVEL" and len(bytes(side)) >= 8:
            light = struct.unpack("<2I", bytes(side)[:8])
        elif kind in colours.DYNAMIC_HDR:
            what = "Dolby Vision" if kind.startswith("DOVI") else "dynamic HDR (HDR10+/Vivid)"
            if not any(what in n for n in notes):
                notes.append(f"the input's {what} metadata cannot survive re-encoding and is dropped; "
                             "the static HDR tags and metadata are kept")
    matrix = int(frame.colorspace)
    if matrix not in (0, colours.UNSPECIFIED) and matrix not in colours.SWS_MATRIX \
            and matrix != colours.BT2020_CL:
        notes.append(f"the input's colour matrix {colours.MATRIX_NAMES.get(matrix, matrix)} cannot be "
                     "converted; it is read and tagged as the usual guess for its size")
    try:
        colour = colours.decide(
            width, height, fmt.name, matrix=matrix, range_=int(frame.color_range),
            primaries=int(frame.color_primaries), transfer=int(frame.color_trc), depth=depth,
            chroma=colours.chroma_of(*shifts), is_rgb=fmt.is_rgb, mastering=mastering,
            light=tuple(light) if light else None)
    except ValueError as exc:
        raise VideoOpenFailure(f"{name}: {exc}") from None
    return colour, notes


def probe(path: str | os.PathLike) -> dict:
    """A JSON-ready description of every stream, plus a frame count of the best video stream."""
    with open_input(path) as container:
        best_index = None
        try:
            best_index = pick_video_stream(container).index  # streams die with their container
        except VideoOpenFailure:
            pass
        streams = []
        for s in container.streams:
            ctx = s.codec_context
            entry: dict = {"index": s.index, "type": s.type, "codec": ctx.name if ctx else None,
                           "time_base": str(s.time_base) if s.time_base else None,
                           "start_time": _seconds(s.start_time, s.time_base),
                           "duration": _seconds(s.duration, s.time_base),
                           "language": s.language, "default_pick": s.index == best_index}
            if s.type == "audio":
                entry.update(sample_rate=ctx.sample_rate, channels=ctx.channels,
                             layout=ctx.layout.name if ctx.layout else None)
            streams.append(entry)
        result = {"path": os.fspath(path), "format": container.format.name,
                  "duration": container.duration / av.time_base if container.duration else None,
                  "streams": streams, "video": None,
                  "audio_tracks": sum(1 for s in container.streams if s.type == "audio"),
                  "subtitle_tracks": sum(1 for s in container.streams if s.type == "subtitle")}
    if best_index is not None:
        index = index_frames(path, best_index)
        with open_input(path) as container:
            info = describe_video(container, container.streams[best_index])
        span = index.seconds(index.pts[-1]) - index.seconds(index.pts[0]) if index.pts else 0
        result["video"] = {
            "stream": info.index, "codec": info.codec, "width": info.width, "height": info.height,
            "sample_aspect_ratio": str(info.sample_aspect_ratio) if info.sample_aspect_ratio else None,
            "rotation": info.rotation, "pix_fmt": info.pix_fmt, "colour": info.colour.describe(),
            "frames": len(index.pts), "keyframes": len(index.keyframes),
            "frame_rate": float(info.frame_rate) if info.frame_rate else None,
            "variable_frame_rate": index.is_variable_rate(),
            "start_time": float(index.seconds(index.pts[0])) if index.pts else None,
            "duration": float(span + index.mean_frame_duration()) if index.pts else 0.0,
        }
    return result


def _seconds(value: int | None, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


# ---------------------------------------------------------------------------
# The frame index
# ---------------------------------------------------------------------------

@dataclass
class FrameIndex:
    """Presentation timestamps of every frame a sequential decode yields, and keyframes.

    ``keyframes`` holds only *clean* ones: points a decoder can start from and give
    every later frame exactly as a decode from the start would (see
    :func:`_clean_start_test`).
    """

    time_base: Fraction
    pts: list[int]
    keyframes: list[int] = field(default_factory=list)
    #: (pts, width, height) of the keyframes decoded to see the frame size (see :class:`_SizeProbe`).
    sizes: list[tuple[int, int, int]] = field(default_factory=list)

    def size_change(self) -> tuple[int, tuple[int, int], tuple[int, int]] | None:
        """The first place the frame size changes: (pts, old size, new size), or None."""
        for (_, w0, h0), (pts, w1, h1) in zip(self.sizes, self.sizes[1:]):
            if (w0, h0) != (w1, h1):
                return pts, (w0, h0), (w1, h1)
        return None

    def seconds(self, pts: int) -> Fraction:
        return pts * self.time_base

    def mean_frame_duration(self) -> Fraction:
        if len(self.pts) < 2:
            return Fraction(0)
        return (self.pts[-1] - self.pts[0]) * self.time_base / (len(self.pts) - 1)

    def is_variable_rate(self) -> bool:
        steps = {b - a for a, b in zip(self.pts, self.pts[1:])}
        return len(steps) > 1 and (max(steps) - min(steps)) > 1


def index_frames(path: str | os.PathLike, stream_index: int) -> FrameIndex:
    """List frame timestamps by demuxing packets; decode only when packets lack timestamps.

    Packets flagged for discard (e.g. cut by an MP4 edit list) are left out,
    exactly as the decoder leaves their frames out.
    """
    with open_input(path) as container:
        stream = container.streams[stream_index]
        time_base = Fraction(stream.time_base)
        pts: list[int] = []
        keys: list[int] = []
        complete = True
        clean = _clean_start_test(stream)
        sizes = _SizeProbe(stream)
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    complete = False
                    break
                pts.append(packet.pts)
                if packet.is_keyframe:
                    sizes.feed(packet)
                    if clean(packet):
                        keys.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise VideoOpenFailure(f"{path} is damaged: {_ffmpeg_reason(exc)}") from None
        seen = sizes.finish()
    pts.sort()
    if complete and len(set(pts)) == len(pts) and pts:
        return FrameIndex(time_base, pts, sorted(keys), seen)
    return _index_by_decoding(path, stream_index)


class _SizeProbe:
    """Decode keyframes during the packet scan, to find a frame size that changes mid-stream.

    A stream's size can change only at a keyframe (two MPEG-TS pieces of different
    sizes joined, say), and the whole job needs one size: the encoder is opened
    once. Decoding the keyframes alone costs one frame per GOP; keyframes closer
    than :attr:`MIN_GAP_S` (intra-only codecs) are sampled at that spacing
    instead, and a change between samples is still caught by the rank that
    decodes it.
    """

    MIN_GAP_S = Fraction(1, 4)

    def __init__(self, stream):
        self._stream = stream
        self._gap = int(self.MIN_GAP_S / Fraction(stream.time_base)) if stream.time_base else 0
        self._last: int | None = None
        self.sizes: list[tuple[int, int, int]] = []

    def feed(self, packet: av.Packet) -> None:
        if self._last is not None and packet.pts - self._last < self._gap:
            return
        self._last = packet.pts
        self._take(packet)

    def finish(self) -> list[tuple[int, int, int]]:
        self._take(None)
        return sorted(set(self.sizes))

    def _take(self, packet: av.Packet | None) -> None:
        try:
            frames = self._stream.codec_context.decode(packet)
        except av.error.FFmpegError:
            return  # a damaged keyframe: decoding the chunk will tell
        self.sizes.extend((f.pts, f.width, f.height) for f in frames if f.pts is not None)


#: NAL unit types that start a clean decode: H.264 IDR; HEVC BLA, IDR and CRA (frames
#: after a CRA in presentation order never refer to pictures before it).
_H264_CLEAN = frozenset({5})
_HEVC_CLEAN = frozenset(range(16, 22))


def _clean_start_test(stream) -> Callable[[av.Packet], bool]:
    """A test telling whether a keyframe packet is a clean place to start decoding.

    Containers flag every I-frame they list as a sync sample, but in H.264 only
    an IDR frame cuts references: the P-frames after a plain I-frame may refer
    to frames before it, so decoding from one gives different pixels for the
    rest of the GOP (FFmpeg conceals the missing references) -- so for H.264
    and HEVC the packet's NAL units are read; other codecs' keyframes are taken
    as the container says. (Every keyframe of the clips in ../shared is clean;
    cockatoo.mp4's wrong pixels after a seek had another cause, see
    :func:`_prime_decoder`.)
    """
    codec = stream.codec_context.name
    if codec not in ("h264", "hevc"):
        return lambda packet: True
    hevc = codec == "hevc"
    wanted = _HEVC_CLEAN if hevc else _H264_CLEAN
    extradata = bytes(stream.codec_context.extradata or b"")
    length_size = None  # None: Annex B start codes; else avcC/hvcC length prefixes
    if extradata[:1] == b"\x01":
        offset = 21 if hevc else 4
        if len(extradata) > offset:
            length_size = (extradata[offset] & 3) + 1

    def nal_types(data: bytes) -> Iterator[int]:
        if length_size is None:
            for match in re.finditer(b"\x00\x00\x01", data):
                if match.end() < len(data):
                    yield data[match.end()]
            return
        at = 0
        while at + length_size < len(data):
            size = int.from_bytes(data[at:at + length_size], "big")
            at += length_size
            if size <= 0:
                return
            yield data[at]
            at += size

    def clean(packet) -> bool:
        for header in nal_types(bytes(packet)):
            kind = (header >> 1) & 0x3F if hevc else header & 0x1F
            if kind in wanted:
                return True
        return False

    return clean


def _index_by_decoding(path, stream_index: int) -> FrameIndex:
    """Slow path for streams whose packets carry no timestamps: decode everything once."""
    with open_input(path) as container:
        stream = container.streams[stream_index]
        stream.thread_type = "AUTO"
        pts: list[int] = []
        keys: list[int] = []
        sizes: list[tuple[int, int, int]] = []
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise VideoOpenFailure(f"{path}: video frames carry no timestamps; remux it "
                                           "into MP4 or MKV first")
                pts.append(frame.pts)
                if frame.key_frame:
                    keys.append(frame.pts)
                if not sizes or sizes[-1][1:] != (frame.width, frame.height):
                    sizes.append((frame.pts, frame.width, frame.height))
        except av.error.FFmpegError as exc:
            raise VideoOpenFailure(f"{path} is damaged: {_ffmpeg_reason(exc)}") from None
    if not pts:
        raise VideoOpenFailure(f"{path} holds a video stream with no decodable frames")
    if any(b <= a for a, b in zip(pts, pts[1:])):
        raise VideoOpenFailure(f"{path}: video timestamps are not strictly increasing; remux it first")
    return FrameIndex(Fraction(container.streams[stream_index].time_base), pts, keys, sizes)


# ---------------------------------------------------------------------------
# Decoding exactly one chunk
# ---------------------------------------------------------------------------

def _prime_decoder(container, stream) -> None:
    """Feed the decoder the stream's first packet before seeking away from it.

    Some decoders keep state from the first packet that later keyframes do not
    repeat: FFmpeg's H.264 decoder reads the x264 version from the first
    packet's SEI and, for old x264 builds, decodes 4:4:4 streams with a
    workaround for that encoder's bug. Without it every frame after a seek came
    out wrong (cockatoo.mp4: mean error ~100 levels from its second keyframe
    on). One extra packet per chunk; the frame it gives is before the chunk.
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
                  colour: Colour | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(pts, RGB array)`` for exactly the frames ``pts``, in order.

    The arrays are converted with ``colour`` (the job's matrix and range; 16-bit
    RGB for inputs deeper than 8 bits), or as FFmpeg would when it is None.

    A damaged stretch of the stream is concealed by FFmpeg's decoder (as every
    player does); the timestamps of frames the decoder flags as corrupt are
    appended to ``damaged`` so the job can name them. Frames that are missing
    altogether fail the job instead: that would silently shorten the video.

    ``seek_from`` is the clean keyframe to start decoding from (the chunk's
    :attr:`~stylempi.plan.Chunk.seek_from`, from the index); ``None`` decodes
    from the start of the stream, and the default ``-1`` trusts the container's
    keyframe before the first frame (exact for codecs whose keyframes are all
    clean). Seeking is not exact on every container (on an MPEG-2 program
    stream a backward seek can land *after* the target), so when the first
    decoded frame is already past the wanted one the seek is retried further
    back, then from the very start. So it is when the first wanted frame comes
    out flagged corrupt after a seek: the seek point was not clean, or the
    stream is damaged there, which a decode from further back tells apart.
    Any frame that differs from the plan raises :class:`VideoDecodeFailure`.
    """
    if not pts:
        return
    first = pts[0]
    anchor = first if seek_from == -1 else seek_from
    time_base = None
    for back_seconds in ((0, 1, 4, 16, 64, None) if anchor is not None else (None,)):
        with open_input(path) as container:
            stream = container.streams[stream_index]
            stream.thread_type = "AUTO"
            time_base = Fraction(stream.time_base)
            seeked = False
            if back_seconds is not None:
                target = anchor - int(back_seconds / time_base)
                start = stream.start_time if stream.start_time is not None else target
                if target > start:
                    try:
                        _prime_decoder(container, stream)
                        container.seek(target, stream=stream, backward=True, any_frame=False)
                        seeked = True
                    except av.error.FFmpegError:
                        continue
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
                    yield frame.pts, to_rgb(frame, colour)
                    want += 1
                    if want == len(pts):
                        return
            except av.error.FFmpegError as exc:
                raise VideoDecodeFailure(f"{path} is damaged near {float(pts[want] * time_base):.3f}s: the "
                                         f"decoder gave up ({_ffmpeg_reason(exc)}); repair or re-encode "
                                         "the input") from None
            if want:
                missing = float(pts[want] * time_base)
                raise VideoDecodeFailure(f"{path}: the stream ended or broke before the frame at {missing:.6f}s "
                                         f"({len(pts) - want} frames of this chunk missing); the file is damaged")
    raise VideoDecodeFailure(f"{path}: could not reach the frame at {float(first * time_base):.6f}s by seeking "
                             "or by decoding from the start")


# ---------------------------------------------------------------------------
# Output settings and encoding segments
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodeSettings:
    """Everything that decides the bytes of the encoded video (part of the resume key)."""

    codec: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...]
    width: int
    height: int
    time_base: Fraction
    sample_aspect_ratio: Fraction | None
    #: The output's colour: conversion, tags, depth, HDR metadata (None: stand-in settings).
    colour: Colour | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["time_base"] = str(self.time_base)
        d["sample_aspect_ratio"] = str(self.sample_aspect_ratio) if self.sample_aspect_ratio else None
        d["options"] = dict(self.options)
        return d


def output_format(path: str | os.PathLike) -> Container:
    """OUTPUT's container (accepted types only; see :mod:`stylempi.containers`)."""
    return container_for(path)


#: Frames of rate-control look-ahead for x264/x265 (see :func:`choose_encoding`).
ENCODER_LOOKAHEAD = 10


#: The CRF scale of each encoder that has one (FFmpeg's option ranges; lower is better).
CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63), "libvpx": (0, 63),
              "libsvtav1": (0, 63)}


def check_crf(codec: str, crf: int | None) -> None:
    """Refuse a --crf outside the encoder's scale: x264 silently clamps 99 to 51."""
    if crf is None:
        return
    if codec not in CRF_RANGES:
        raise UsageError(f"--crf does not apply to {codec}; leave it out or choose "
                         f"--codec {', '.join(sorted(CRF_RANGES))}")
    low, high = CRF_RANGES[codec]
    if not low <= crf <= high:
        raise UsageError(f"--crf {crf} is out of range for {codec} ({low} to {high}, lower is better)")


def choose_encoding(output_path: str | os.PathLike, video: VideoStreamInfo, codec: str | None,
                    crf: int | None, preset: str | None) -> EncodeSettings:
    """Pick codec, pixel format, colour and encoder options for OUTPUT's container.

    The output keeps the input's chroma subsampling and bit depth where the
    encoder can (odd sizes need 4:4:4); an input deeper than 8 bits gets
    :data:`DEEP_CODEC` unless --codec says otherwise.
    """
    container = output_format(output_path)
    wanted = video.colour
    if codec is None:
        codec = container.default_codec
        if wanted.depth > 8 and container.holds(DEEP_CODEC):
            codec = DEEP_CODEC
    try:
        enc = av.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError and friends
        raise UsageError(f"unknown video encoder {codec!r}; try libx264, libx265 or libvpx-vp9") from None
    if enc.type != "video":
        raise UsageError(f"{codec} is not a video encoder")
    if not container.holds(codec):
        raise OutputFailure(f"a .{container.extension} file cannot hold {codec} video; choose another "
                            "--codec or name OUTPUT .mkv")
    colour = _encodable_colour(enc, video)
    check_crf(enc.name, crf)
    options: dict[str, str] = {}
    hdr = ":".join(f"{k}={v}" for k, v in colours.encoder_params(enc.name, colour).items())
    if enc.name in ("libx264", "libx265"):
        options["crf"] = str(18 if crf is None else crf)
        options["preset"] = preset or "medium"
        # No B-frames: every segment's decode order equals presentation order,
        # so segments encoded apart join into one stream with monotonic DTS.
        # A short rate-control look-ahead (x264's default is 40 frames, x265's 20):
        # frames held inside the encoder are a rank's largest memory at 1080p, and a
        # chunk's last look-ahead must be encoded after its last frame arrives, which
        # is the job's tail (docs/benchmarks.md, "Memory" and "Scaling"). Measured on
        # flower.mp4 at crf 18: 10 frames gives a file within 2 % of 40's size.
        # x264's threaded look-ahead (on by default with frame threads) made the
        # bytes of a segment's second frame depend on thread timing: the same
        # pixels encoded to different packets in about 1 job in 5 when segments are
        # shorter than the look-ahead (tests/test_run_matrix.py, same-N test;
        # 0 failures in 26 runs with it off). Frame threads stay on.
        if enc.name == "libx264":
            options.update({"bf": "0", "rc-lookahead": str(ENCODER_LOOKAHEAD),
                            "x264-params": ":".join(filter(None, ["sync-lookahead=0", hdr]))})
        else:
            options["x265-params"] = ":".join(filter(None, [
                f"bframes=0:rc-lookahead={ENCODER_LOOKAHEAD}:log-level=error", hdr]))
    elif enc.name in ("libvpx-vp9", "libvpx"):
        options.update({"crf": str(31 if crf is None else crf), "b": "0", "row-mt": "1",
                        "deadline": "good", "cpu-used": "4"})
    elif enc.name == "libsvtav1":
        options.update({"crf": str(35 if crf is None else crf), "preset": preset or "8"})
    return EncodeSettings(enc.name, colour.pix_fmt(), tuple(sorted(options.items())), video.width,
                          video.height, video.time_base, video.sample_aspect_ratio, colour)


def _encodable_colour(enc: av.Codec, video: VideoStreamInfo) -> Colour:
    """The input's colour with the subsampling and depth this encoder can write exactly.

    Depth first (never more than the input's), then subsampling: the input's,
    else 4:4:4 (which holds any picture), else 4:2:0 for even sizes.
    """
    colour = video.colour
    formats = {f.name for f in (enc.video_formats or [])}
    odd = video.width % 2 or video.height % 2
    chromas = [c for c in dict.fromkeys(["444" if odd else colour.chroma, "444", "420"])
               if not (odd and c != "444")]
    for depth in dict.fromkeys([colour.depth, 12, 10, 8]):
        if depth > colour.depth:
            continue
        for chroma in chromas:
            if not formats or colour.pix_fmt(chroma, depth) in formats:
                return replace(colour, depth=depth, chroma=chroma)
    raise UsageError(f"{enc.name} cannot encode {video.width}x{video.height} frames exactly "
                     "(odd sizes need 4:4:4); try --codec libx264")


def encoding_notes(video: VideoStreamInfo, settings: EncodeSettings) -> list[str]:
    """What the chosen encoding does not keep of the input's picture, in the user's words."""
    notes = list(video.colour_notes)
    kept = settings.colour
    if kept is not None and kept.depth < video.colour.depth:
        notes.append(f"{settings.codec} writes {kept.depth}-bit video: the input's {video.colour.depth}-bit "
                     f"depth is reduced (leave --codec out, or use libx265, to keep it)")
    if kept is not None and kept.chroma != video.colour.chroma and video.colour.chroma != "other":
        notes.append(f"chroma {video.colour.chroma} is written as {kept.chroma} ({settings.codec} or the "
                     "frame size needs it)")
    if kept is not None and (video.colour.mastering or video.colour.light) \
            and settings.codec not in ("libx264", "libx265"):
        notes.append(f"{settings.codec} cannot carry the input's HDR mastering display / light level "
                     "metadata; it is dropped (use libx265 to keep it)")
    return notes


def add_video_stream(container: av.container.OutputContainer,
                     settings: EncodeSettings) -> av.video.stream.VideoStream:
    """Add the encoder's stream to ``container``, set up from ``settings``.

    The one place the encoder is configured: :class:`SegmentWriter` and
    :func:`check_encoder` both call it, so the up-front check on rank 0 opens
    exactly the encoder every rank will open.
    """
    stream = container.add_stream(settings.codec, options=dict(settings.options))
    stream.width = settings.width
    stream.height = settings.height
    stream.pix_fmt = settings.pix_fmt
    stream.time_base = settings.time_base
    ctx = stream.codec_context
    ctx.time_base = settings.time_base
    if settings.sample_aspect_ratio:
        ctx.sample_aspect_ratio = settings.sample_aspect_ratio
    if settings.colour is not None:
        tag_colour(ctx, settings.colour)
    return stream


def tag_colour(ctx, colour: Colour) -> None:
    """Write the colour description into a codec context (encoders put it in their headers)."""
    ctx.colorspace = colour.matrix
    ctx.color_range = colour.range
    ctx.color_primaries = colour.primaries
    ctx.color_trc = colour.transfer


def check_encoder(settings: EncodeSettings) -> None:
    """Open the encoder with the final settings and encode one blank frame, in memory.

    Encoders read most options only when they open (x264's preset, a CRF out of
    range), which would otherwise happen on every rank after work started.
    """
    container = av.open(io.BytesIO(), "w", format="nut")
    try:
        with _stderr_captured() as said:  # x264 prints its complaint straight to fd 2
            stream = add_video_stream(container, settings)
            deep = settings.colour is not None and settings.colour.depth > 8
            frame = to_yuv(np.zeros((settings.height, settings.width, 3), np.uint16 if deep else np.uint8),
                           settings)
            frame.pts = 0
            frame.time_base = settings.time_base
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except Exception as exc:  # noqa: BLE001 - ArgumentError, OverflowError, ValueError: all bad settings
        options = " ".join(f"{k}={v}" for k, v in settings.options)
        reason = next((line.strip() for line in said if line.strip()), "") or _ffmpeg_reason(exc)
        raise UsageError(f"the {settings.codec} encoder refuses these settings ({options}): "
                         f"{reason}; check --crf and --preset") from None
    finally:
        try:
            container.close()
        except Exception:  # noqa: BLE001 - closing a container that failed to start
            pass


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Hold what C libraries write to file descriptor 2 meanwhile; yields its lines afterwards.

    Only for short single-threaded steps on rank 0 (the encoder check): the error
    must stay one line, and the library's own words make that line useful.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines.extend(held.read(64 * 1024).decode("utf-8", "replace").splitlines())


class SegmentWriter:
    """Encode one chunk of stylized frames into a NUT file with the input's timestamps."""

    def __init__(self, path: str | os.PathLike, settings: EncodeSettings):
        self.path = os.fspath(path)
        self.settings = settings
        try:
            self._container = av.open(self.path, "w", format="nut")
        except av.error.FFmpegError as exc:
            raise OutputFailure(f"cannot write {self.path}: {_ffmpeg_reason(exc)}") from None
        self._stream = add_video_stream(self._container, settings)
        self.frames = 0

    def write(self, pts: int, rgb: np.ndarray) -> None:
        frame = to_yuv(rgb, self.settings)
        frame.pts = pts
        frame.time_base = self.settings.time_base
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self._mux(self._stream.encode(None))
        self._container.close()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - we are already failing
            pass
        Path(self.path).unlink(missing_ok=True)

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except av.error.FFmpegError as exc:
            raise OutputFailure(f"cannot write {self.path}: {_ffmpeg_reason(exc)}") from None
        except OSError as exc:
            raise OutputFailure(f"cannot write {self.path}: {exc.strerror or exc}") from None


#: swscale flags of the two conversions. Exact rounding and full-resolution chroma on the
#: way in remove the 1-2 level mean shift of swscale's fast paths; an identity round trip
#: of real HD footage is then ~52 dB instead of ~45 (docs/colour.md has the table).
TO_RGB = ("BICUBIC", "ACCURATE_RND", "FULL_CHR_H_INT")
TO_YUV = ("BICUBIC", "ACCURATE_RND")


def to_rgb(frame: av.VideoFrame, colour: Colour | None) -> np.ndarray:
    """A decoded frame as RGB with the job's matrix and range (16-bit for deep inputs)."""
    if colour is None:
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(format=colour.rgb_format, src_colorspace=colour.sws_matrix,
                          src_color_range=colour.sws_range, interpolation=_flags(TO_RGB)).to_ndarray()


def to_yuv(rgb: np.ndarray, settings: EncodeSettings) -> av.VideoFrame:
    """A stylized RGB frame (8- or 16-bit) as the encoder's YUV, with the job's matrix and range."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
    colour = settings.colour
    if colour is None:
        return frame
    if colour.range == colours.RANGE_FULL:
        return _planes_frame(colours.full_range_planes(rgb, colour, colour.chroma, colour.depth), settings.pix_fmt)
    return frame.reformat(format=settings.pix_fmt, dst_colorspace=colour.sws_matrix,
                          dst_color_range=colour.sws_range, interpolation=_flags(TO_YUV))


def _planes_frame(planes: list[np.ndarray], pix_fmt: str) -> av.VideoFrame:
    """A planar frame from whole planes (each plane's rows padded to FFmpeg's line size)."""
    height, width = planes[0].shape
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, data in zip(frame.planes, planes):
        stride = plane.line_size // data.itemsize
        padded = np.zeros((data.shape[0], stride), data.dtype)
        padded[:, :data.shape[1]] = data
        plane.update(padded.tobytes())
    return frame


def _flags(names: tuple[str, ...]) -> int:
    from av.video.reformatter import Interpolation
    flags = 0
    for name in names:
        flags |= Interpolation[name]
    return flags


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------

@dataclass
class CopyPlan:
    """Which input streams go to the output as packet copies, and which are dropped."""

    copy: list[int]
    dropped: list[str]
    #: Audio streams the container cannot hold, re-encoded because --audio-codec asked.
    reencode: list[int] = field(default_factory=list)
    audio_codec: str | None = None


def plan_stream_copy(input_path: str | os.PathLike, output_path: str | os.PathLike, video_index: int,
                     audio_codec: str | None = None, reencode_all: bool = False) -> CopyPlan:
    """Decide which audio/subtitle streams OUTPUT's container can hold, before any work.

    Audio is never silently re-encoded: an audio codec the container cannot hold
    is an error that names a container that can, unless ``audio_codec`` is given;
    then only such tracks are re-encoded with it, or every track with ``reencode_all``.
    """
    container = output_format(output_path)
    ext = f".{container.extension}"
    copy: list[int] = []
    dropped: list[str] = []
    reencode: list[int] = []
    if reencode_all and not audio_codec:
        raise UsageError("--reencode-audio needs --audio-codec to say which encoder")
    if audio_codec:
        try:
            codec = av.Codec(audio_codec, "w")
        except Exception:  # noqa: BLE001 - UnknownCodecError and friends
            raise UsageError(f"unknown audio encoder {audio_codec!r}; try aac, libopus or flac") from None
        if codec.type != "audio" or not container.holds(audio_codec):
            raise UsageError(f"--audio-codec {audio_codec}: a {ext} file cannot hold it")
    with open_input(input_path) as inp:
        for s in inp.streams:
            if s.index == video_index:
                continue
            name = s.codec_context.name if s.codec_context else "unknown"
            if s.type == "video":
                dropped.append(f"video stream {s.index} ({name}): only one video stream is stylized")
            elif s.type == "audio":
                if container.holds(name) and not reencode_all:
                    copy.append(s.index)
                elif audio_codec:
                    reencode.append(s.index)
                    why = "as asked" if container.holds(name) else f"because a {ext} file cannot hold {name}"
                    dropped.append(f"audio stream {s.index} ({name}) is re-encoded to {audio_codec} {why}")
                else:
                    raise OutputFailure(
                        f"a {ext} file cannot hold the input's {name} audio (stream {s.index}); "
                        "name OUTPUT .mkv (it holds any audio), or pass --audio-codec to re-encode")
            elif s.type == "subtitle":
                if container.holds(name):
                    copy.append(s.index)
                else:
                    dropped.append(f"subtitle stream {s.index} ({name}): a {ext} file cannot hold it")
            else:
                dropped.append(f"{s.type} stream {s.index} ({name})")
        earliest = _earliest_time(inp, [video_index, *copy]) if container.muxer == "mpegts" else 0.0
    if earliest < 0:
        dropped.append(f"MPEG-TS cannot store negative times: every frame and packet is shifted by "
                       f"+{-earliest:.6f} s (their spacing is kept exactly)")
    return CopyPlan(copy, dropped, reencode, audio_codec)


def _earliest_time(container, indexes: list[int], at_least: int = 100, at_most: int = 2000) -> float:
    """The earliest timestamp (s) among the first packets of streams ``indexes``.

    Read from packets, not ``stream.start_time``: Matroska reports 0 for audio whose
    first packets (encoder priming) are before zero. A few packets past the first
    of each stream are read too, since B-frames come before earlier pictures.
    """
    earliest: dict[int, float] = {}
    for count, packet in enumerate(container.demux(*[container.streams[i] for i in indexes]), 1):
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None and packet.size:
            seconds = float(ts * packet.time_base)
            earliest[packet.stream_index] = min(earliest.get(packet.stream_index, seconds), seconds)
        if count >= at_most or count >= at_least and len(earliest) == len(indexes):
            break
    return min(earliest.values(), default=0.0)


def assemble(input_path: str | os.PathLike, video: VideoStreamInfo, segments: Sequence[str | os.PathLike],
             streams: CopyPlan, output_path: str | os.PathLike) -> None:
    """Join segment packets and copy the other streams' packets into OUTPUT, atomically.

    Packets from all sources are merged by decode time so the muxer never
    buffers more than a few of them: memory stays flat for any video length.
    """
    output_path = Path(output_path)
    partial = output_path.with_name(f".{output_path.stem}.partial{output_path.suffix}")
    try:
        _assemble_to(input_path, video, segments, streams, partial, output_path.suffix)
        try:
            os.replace(partial, output_path)
        except OSError as exc:
            raise OutputFailure(f"cannot write OUTPUT {output_path}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _assemble_to(input_path, video: VideoStreamInfo, segments, streams: CopyPlan, partial: Path,
                 suffix: str) -> None:
    if not segments:
        raise OutputFailure("no video segments to assemble")
    container = output_format(f"x{suffix}")
    try:
        out = av.open(os.fspath(partial), "w", format=container.muxer, options=dict(container.options))
    except (av.error.FFmpegError, OSError) as exc:
        raise OutputFailure(f"cannot create {partial.parent / partial.name}: {_ffmpeg_reason(exc)}") from None
    inp = open_input(input_path)
    first = av.open(os.fspath(segments[0]))
    try:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        ovideo = out.add_stream_from_template(template)
        ovideo.time_base = video.time_base
        tag_colour(ovideo.codec_context, video.colour)  # NUT segments do not store colour fields
        if video.rotation:
            ovideo.set_display_rotation(video.rotation)
        if video.sample_aspect_ratio:
            ovideo.codec_context.sample_aspect_ratio = video.sample_aspect_ratio
        copies = {}
        for index in streams.copy:
            source = inp.streams[index]
            target = out.add_stream_from_template(source)
            target.time_base = source.time_base
            try:
                target.disposition = source.disposition
            except Exception:  # noqa: BLE001 - dispositions are cosmetic
                pass
            if source.language:
                target.metadata["language"] = source.language
            copies[index] = target
        encoded = {}
        for index in streams.reencode:
            source = inp.streams[index]
            target = out.add_stream(streams.audio_codec, rate=source.codec_context.sample_rate)
            if source.language:
                target.metadata["language"] = source.language
            encoded[index] = target
        out.start_encoding()

        def video_packets() -> Iterator[av.Packet]:
            for path in segments:
                with av.open(os.fspath(path)) as seg:
                    stream = seg.streams.video[0]
                    if stream.codec_context.extradata != extradata:
                        raise OutputFailure(f"segment {path} was encoded with other settings than the first; "
                                            "rerun with --restart")
                    for packet in seg.demux(stream):
                        if packet.size:
                            packet.stream = ovideo
                            yield packet

        def copied_packets() -> Iterator[av.Packet]:
            if not copies and not encoded:
                return
            for packet in inp.demux(*[inp.streams[i] for i in [*copies, *encoded]]):
                if packet.stream_index in encoded:
                    target = encoded[packet.stream_index]
                    for frame in packet.decode():  # a flush packet (size 0) drains the decoder
                        frame.pts = None  # let the encoder count samples from the first
                        yield from target.encode(frame)
                    if packet.size == 0:
                        yield from target.encode(None)
                    continue
                if packet.size == 0 or packet.dts is None and packet.pts is None:
                    continue
                packet.stream = copies[packet.stream_index]
                yield packet

        for packet in heapq.merge(video_packets(), copied_packets(), key=_packet_time):
            out.mux(packet)
        out.close()
    except av.error.FFmpegError as exc:
        raise OutputFailure(f"cannot write {partial}: {_ffmpeg_reason(exc)}") from None
    except OSError as exc:
        raise OutputFailure(f"cannot write {partial}: {exc.strerror or exc}") from None
    finally:
        first.close()
        inp.close()
        try:
            out.close()
        except Exception:  # noqa: BLE001 - already closed, or failing anyway
            pass


def _packet_time(packet: av.Packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * Fraction(packet.time_base)


def _ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words, without the file name it likes to repeat."""
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
