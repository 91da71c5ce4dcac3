"""The frame index: every frame's timestamp and the clean keyframes, from demuxing alone.

A job plans its chunks on this index, and every decoded frame is checked
against it (:func:`~stylempi.media.decoding.decode_frames`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator

import av

from ..errors import VideoOpenFailure
from ._ffmpeg import ffmpeg_reason
from .inputs import open_input


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
    #: Timestamps of the frames before the first keyframe of a capture that starts mid-GOP: they
    #: refer to pictures before the file's start, so no decoder gives them (left out of ``pts``).
    undecodable: list[int] = field(default_factory=list)

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
        leading: list[int] = []  # packets before the first keyframe
        keyed = False
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
                if not keyed and not packet.is_keyframe:
                    leading.append(packet.pts)
                    continue
                keyed = True
                pts.append(packet.pts)
                if packet.is_keyframe:
                    sizes.feed(packet)
                    if clean(packet):
                        keys.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise VideoOpenFailure(f"{path} is damaged: {ffmpeg_reason(exc)}") from None
        seen = sizes.finish()
    if leading and not pts:  # no packet is flagged a keyframe: the flags say nothing, take every frame
        pts, leading = leading, []
    pts.sort()
    if complete and len(set(pts)) == len(pts) and pts:
        return FrameIndex(time_base, pts, sorted(keys), seen, sorted(leading))
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
    :func:`~stylempi.media.decoding._prime_decoder`.)
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
            raise VideoOpenFailure(f"{path} is damaged: {ffmpeg_reason(exc)}") from None
    if not pts:
        raise VideoOpenFailure(f"{path} holds a video stream with no decodable frames")
    if any(b <= a for a, b in zip(pts, pts[1:])):
        raise VideoOpenFailure(f"{path}: video timestamps are not strictly increasing; remux it first")
    return FrameIndex(Fraction(container.streams[stream_index].time_base), pts, keys, sizes)
