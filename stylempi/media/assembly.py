"""Assembly: OUTPUT from the ranks' segments and the input's other streams, atomically.

:func:`plan_stream_copy` decides before any work which audio and subtitle
streams OUTPUT's container can hold; :func:`assemble` joins the segments by
packet copy and muxes those streams' packets untouched (or re-encoded, where
--audio-codec asked), interleaved by time.
"""
from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av

from ..errors import OutputFailure, UsageError
from ._ffmpeg import ffmpeg_reason
from .containers import Container
from .describe import VideoStreamInfo
from .encoding import output_format, tag_colour
from .inputs import open_input


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
    if reencode_all and not audio_codec:
        raise UsageError("--reencode-audio needs --audio-codec to say which encoder")
    if audio_codec:
        _check_audio_encoder(container, audio_codec)
    plan = CopyPlan([], [], [], audio_codec)
    with open_input(input_path) as inp:
        for s in inp.streams:
            if s.index != video_index:
                _plan_stream(plan, s, container, reencode_all)
        earliest = _earliest_time(inp, [video_index, *plan.copy]) if container.muxer == "mpegts" else 0.0
    if earliest < 0:
        plan.dropped.append(f"MPEG-TS cannot store negative times: every frame and packet is shifted by "
                            f"+{-earliest:.6f} s (their spacing is kept exactly)")
    return plan


def _check_audio_encoder(container: Container, audio_codec: str) -> None:
    """Refuse an --audio-codec that is no audio encoder, or that OUTPUT's container cannot hold."""
    try:
        codec = av.Codec(audio_codec, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError and friends
        raise UsageError(f"unknown audio encoder {audio_codec!r}; try aac, libopus or flac") from None
    if codec.type != "audio" or not container.holds(audio_codec):
        raise UsageError(f"--audio-codec {audio_codec}: a .{container.extension} file cannot hold it")


def _plan_stream(plan: CopyPlan, s, container: Container, reencode_all: bool) -> None:
    """Add input stream ``s`` (not the stylized one) to ``plan``: copied, re-encoded or dropped."""
    ext = f".{container.extension}"
    name = s.codec_context.name if s.codec_context else "unknown"
    if s.type == "video":
        plan.dropped.append(f"video stream {s.index} ({name}): only one video stream is stylized")
    elif s.type == "audio":
        if container.holds(name) and not reencode_all:
            plan.copy.append(s.index)
        elif plan.audio_codec:
            plan.reencode.append(s.index)
            why = "as asked" if container.holds(name) else f"because a {ext} file cannot hold {name}"
            plan.dropped.append(f"audio stream {s.index} ({name}) is re-encoded to {plan.audio_codec} {why}")
        else:
            raise OutputFailure(
                f"a {ext} file cannot hold the input's {name} audio (stream {s.index}); "
                "name OUTPUT .mkv (it holds any audio), or pass --audio-codec to re-encode")
    elif s.type == "subtitle":
        if container.holds(name):
            plan.copy.append(s.index)
        else:
            plan.dropped.append(f"subtitle stream {s.index} ({name}): a {ext} file cannot hold it")
    else:
        plan.dropped.append(f"{s.type} stream {s.index} ({name})")


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
        raise OutputFailure(f"cannot create {partial.parent / partial.name}: {ffmpeg_reason(exc)}") from None
    inp = open_input(input_path)
    first = av.open(os.fspath(segments[0]))
    try:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        ovideo = _add_video_output(out, template, video)
        copies, encoded = _add_other_outputs(out, inp, streams)
        out.start_encoding()
        video_packets = _segment_packets(segments, extradata, ovideo)
        other_packets = _other_packets(inp, copies, encoded)
        for packet in heapq.merge(video_packets, other_packets, key=_packet_time):
            out.mux(packet)
        out.close()
    except av.error.FFmpegError as exc:
        raise OutputFailure(f"cannot write {partial}: {ffmpeg_reason(exc)}") from None
    except OSError as exc:
        raise OutputFailure(f"cannot write {partial}: {exc.strerror or exc}") from None
    finally:
        first.close()
        inp.close()
        try:
            out.close()
        except Exception:  # noqa: BLE001 - already closed, or failing anyway
            pass


def _add_video_output(out, template, video: VideoStreamInfo):
    """OUTPUT's video stream: the first segment's, with the input's time base, colour, rotation, aspect."""
    ovideo = out.add_stream_from_template(template)
    ovideo.time_base = video.time_base
    tag_colour(ovideo.codec_context, video.colour)  # NUT segments do not store colour fields
    if video.rotation:
        ovideo.set_display_rotation(video.rotation)
    if video.sample_aspect_ratio:
        ovideo.codec_context.sample_aspect_ratio = video.sample_aspect_ratio
    return ovideo


def _add_other_outputs(out, inp, streams: CopyPlan) -> tuple[dict, dict]:
    """OUTPUT's streams for the input's copied and re-encoded ones: ({input index: stream}, same)."""
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
    return copies, encoded


def _segment_packets(segments, extradata, ovideo) -> Iterator[av.Packet]:
    """Every segment's video packets in order, for ``ovideo``; segments must share the first's
    encoder headers (``extradata``), or they would not join into one stream."""
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


def _other_packets(inp, copies: dict, encoded: dict) -> Iterator[av.Packet]:
    """The input's packets of the copied streams, and the re-encoded streams' new packets."""
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


def _packet_time(packet: av.Packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * Fraction(packet.time_base)
