"""Assembly: OUTPUT from the ranks' segments and the input's other streams, atomically.

:func:`plan_stream_copy` decides before any work which audio and subtitle
streams OUTPUT's container can hold, and :func:`check_muxing` writes the start
of OUTPUT in memory (the encoder's sample frame at the video's first times, the
first packets of every copied stream) and reads it back, so that a container
that refuses the codec or cannot keep the input's first timestamps is refused
before any work; :func:`assemble` joins the segments by packet copy and muxes
those streams' packets untouched (or re-encoded, where --audio-codec asked),
interleaved by time, then reads OUTPUT's timestamps back before it takes
OUTPUT's name (:func:`_check_times`).
"""
from __future__ import annotations

import heapq
import io
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av

from ..errors import OutputFailure, UsageError
from ._ffmpeg import ffmpeg_log, ffmpeg_reason
from .containers import CONTAINERS, Container, timestamp_tolerance
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
        chapters = len(inp.chapters())
    if chapters and not container.holds_chapters:
        plan.dropped.append(f"the input's {chapters} chapter(s) are dropped: a .{container.extension} file has "
                            "no chapters (name OUTPUT .mkv or .mp4 to keep them)")
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
             streams: CopyPlan, output_path: str | os.PathLike, pts_offset: int = 0) -> None:
    """Join segment packets and copy the other streams' packets into OUTPUT, atomically.

    Packets from all sources are merged by decode time so the muxer never
    buffers more than a few of them: memory stays flat for any video length.
    ``pts_offset``: the ticks (of the video's time base) the segments' times were
    lifted by (:attr:`~stylempi.media.encoding.EncodeSettings.pts_offset`), taken off here.
    """
    output_path = Path(output_path)
    partial = output_path.with_name(f".{output_path.stem}.partial{output_path.suffix}")
    try:
        _assemble_to(input_path, video, segments, streams, partial, output_path.suffix, pts_offset)
        try:
            os.replace(partial, output_path)
        except OSError as exc:
            raise OutputFailure(f"cannot write OUTPUT {output_path}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _assemble_to(input_path, video: VideoStreamInfo, segments, streams: CopyPlan, partial: Path,
                 suffix: str, pts_offset: int = 0) -> None:
    if not segments:
        raise OutputFailure("no video segments to assemble")
    container = output_format(f"x{suffix}")
    inp = open_input(input_path)
    time_bases = [video.time_base, *(Fraction(inp.streams[i].time_base) for i in streams.copy)]
    inp.close()
    try:
        out = av.open(os.fspath(partial), "w", format=container.muxer,
                      options=muxer_options(container, time_bases))
    except (av.error.FFmpegError, OSError) as exc:
        raise OutputFailure(f"cannot create {partial.parent / partial.name}: {ffmpeg_reason(exc)}") from None
    inp = open_input(input_path)
    first = av.open(os.fspath(segments[0]))
    try:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        ovideo = _add_video_output(out, template, video)
        copies, encoded = _add_other_outputs(out, inp, streams)
        if container.holds_chapters and inp.chapters():
            out.set_chapters(inp.chapters())  # titles and times, as they are (plan_stream_copy notes a drop)
        out.start_encoding()
        video_packets = _segment_packets(segments, extradata, ovideo, pts_offset * video.time_base)
        other_packets = _other_packets(inp, copies, encoded)
        sent = _SentTimes(ovideo, copies)
        for packet in heapq.merge(video_packets, other_packets, key=_packet_time):
            sent.note(packet)
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
    problem = _check_times(os.fspath(partial), container, sent)
    if problem:
        raise OutputFailure(f"the {container.muxer} muxer did not keep the input's timestamps ({problem}); "
                            f"OUTPUT was not written: name it {_better_extension(container)} and rerun the "
                            "same command (finished chunks are reused)")


#: The largest movie timescale an MP4/MOV header holds (a 32-bit field).
MAX_MOVIE_TIMESCALE = 2**31 - 1


def muxer_options(container: Container, time_bases: Sequence[Fraction]) -> dict[str, str]:
    """The muxer's options for OUTPUT: the container's own, and for MP4/MOV a movie clock that
    counts every stream's ticks.

    An MP4 edit list says where each track starts in the movie's clock, which FFmpeg sets to
    1 ms: a start that is not a whole millisecond (MPEG-TS captures count 90 kHz ticks) was
    rounded, by up to half a millisecond. A clock that is a common multiple of the streams'
    own keeps every start exact.
    """
    options = dict(container.options)
    if container.muxer in ("mp4", "mov"):
        scale = 1000
        for tb in time_bases:
            if tb:
                scale = scale * Fraction(tb).denominator // math.gcd(scale, Fraction(tb).denominator)
        if scale <= MAX_MOVIE_TIMESCALE:
            options["movie_timescale"] = str(scale)
    return options


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


def _segment_packets(segments, extradata, ovideo, offset: Fraction = Fraction(0)) -> Iterator[av.Packet]:
    """Every segment's video packets in order, for ``ovideo``, moved back by ``offset`` seconds
    (what the segment writer lifted them by); segments must share the first's encoder headers
    (``extradata``), or they would not join into one stream."""
    for path in segments:
        with av.open(os.fspath(path)) as seg:
            stream = seg.streams.video[0]
            if stream.codec_context.extradata != extradata:
                raise OutputFailure(f"segment {path} was encoded with other settings than the first; "
                                    "rerun with --restart")
            ticks = offset / Fraction(stream.time_base)
            if ticks.denominator != 1:  # the segment muxer chose a coarser clock than the input's
                raise OutputFailure(f"segment {path} cannot be moved back by {float(offset):.6f}s exactly; "
                                    "rerun with --restart")
            for packet in seg.demux(stream):
                if packet.size:
                    if ticks:
                        packet.pts = None if packet.pts is None else packet.pts - int(ticks)
                        packet.dts = None if packet.dts is None else packet.dts - int(ticks)
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


# ---------------------------------------------------------------------------
# Timestamps, checked: before any work on a sample, and on OUTPUT before it is named
# ---------------------------------------------------------------------------

#: Packets of each copied stream the check before any work sends through the muxer.
SAMPLE_PACKETS = 64


class _SentTimes:
    """The time of every packet given to the muxer, and its clock: the video's, and each copied
    audio stream's by OUTPUT stream index, as verify compares them (re-encoded streams get new
    times; subtitles are compared by their bytes, and MP4 adds empty cues between them)."""

    def __init__(self, ovideo, copies: dict):
        self._video_index = ovideo.index
        self.video: list[Fraction] = []
        self.video_tb = Fraction(1)
        self.copied: dict[int, list[Fraction | None]] = {t.index: [] for t in copies.values() if t.type == "audio"}
        self.tbs: dict[int, Fraction] = {}

    def note(self, packet: av.Packet) -> None:
        index, tb = packet.stream.index, Fraction(packet.time_base)
        if index == self._video_index:
            self.video_tb = tb
            if packet.pts is not None:
                self.video.append(packet.pts * tb)
        elif index in self.copied:
            self.tbs[index] = tb
            ts = packet.pts if packet.pts is not None else packet.dts
            self.copied[index].append(None if ts is None else ts * tb)


def _check_times(path: str | bytes, container: Container, sent: _SentTimes) -> str | None:
    """Read back a muxed file's timestamps and compare them with those ``sent``, as ``stylempi
    verify`` does (the video frames a player shows, every copied packet, within
    :func:`~stylempi.media.containers.timestamp_tolerance`; MPEG-TS may move everything alike);
    returns what differs first, or None."""
    try:
        with av.open(path if isinstance(path, str) else io.BytesIO(path)) as back:
            video_index = back.streams.video[0].index
            out_tbs = {s.index: Fraction(s.time_base) for s in back.streams}
            got: dict[int, list[Fraction | None]] = {video_index: [], **{i: [] for i in sent.copied}}
            for packet in back.demux():
                if packet.size == 0 or packet.stream_index not in got:
                    continue
                if packet.stream_index == video_index and packet.is_discard:
                    continue  # a frame an edit list hides is not shown
                ts = packet.pts if packet.pts is not None or packet.stream_index == video_index else packet.dts
                got[packet.stream_index].append(None if ts is None else ts * Fraction(packet.time_base))
    except (av.error.FFmpegError, IndexError) as exc:
        return f"the file cannot be read back: {ffmpeg_reason(exc)}"
    firsts = [t for t in [*sent.video[:1], *(times[0] for times in sent.copied.values() if times)] if t is not None]
    shift = -min(firsts) if container.muxer == "mpegts" and firsts and min(firsts) < 0 else Fraction(0)
    shown = sorted(t for t in got[video_index] if t is not None) + [None] * got[video_index].count(None)
    problem = _compare("video frame", sorted(sent.video), shown, sent.video_tb, out_tbs[video_index], shift)
    for index, times in sent.copied.items():
        problem = problem or _compare(f"stream {index} packet", times, got[index], sent.tbs.get(index, out_tbs[index]),
                                      out_tbs[index], shift)
    return problem


def _compare(what: str, sent: list, got: list, in_tb: Fraction, out_tb: Fraction, shift: Fraction) -> str | None:
    """How ``got`` differs from ``sent`` (moved by ``shift``), in words, or None."""
    if len(got) < len(sent):
        return f"{len(sent) - len(got)} of {len(sent)} {what}s would be lost or hidden"
    if len(got) > len(sent):
        return f"{len(got)} {what}s came back where {len(sent)} were written"
    tolerance = timestamp_tolerance(in_tb, out_tb)
    for want, have in zip(sent, got):
        if want is None:
            continue
        if have is None:
            return f"the {what} at {float(want):.6f}s would lose its time"
        if abs(want + shift - have) > tolerance:
            return f"the {what} at {float(want):.6f}s would come out at {float(have - shift):.6f}s"
    return None


def _better_extension(container: Container) -> str:
    """The output type to suggest when ``container`` cannot keep a job's times: MPEG-TS stores
    90 kHz ticks and moves a video that starts before zero as a whole (verify allows for it)."""
    return ".mkv" if container.muxer == "mpegts" else ".ts"


def check_muxing(sample: bytes, input_path: str | os.PathLike, video: VideoStreamInfo, first_pts: Sequence[int],
                 streams: CopyPlan, output_path: str | os.PathLike) -> None:
    """Before any work: write the start of OUTPUT in memory and read its timestamps back.

    ``sample`` is the encoder's one-frame NUT segment (:func:`~stylempi.media.encoding.check_encoder`),
    muxed at the video's first times ``first_pts``, with the first packets of every copied
    stream. A muxer that refuses the codec (rawvideo in Matroska), or that would move a
    timestamp (a video that starts before zero, which MP4 and Matroska cannot show), fails
    here, in one line that says so and names a type that works, not after the whole job.
    """
    container = output_format(output_path)
    problem = _trial(sample, input_path, video, first_pts, streams, container)
    if problem is None:
        return
    kind, detail = problem
    codec = _sample_codec(sample)
    start = first_pts[0] * video.time_base if first_pts else 0
    if kind == "times" and start < 0:
        detail = f"the video starts before zero, at {float(start):.6f}s: {detail}"
    if kind == "header":
        raise OutputFailure(f"a .{container.extension} file cannot hold {codec} video ({detail}); choose "
                            f"another --codec or another OUTPUT type")
    works = [c for c in _alternatives(container)
             if _trial(sample, input_path, video, first_pts, streams, c) is None]
    fix = f"name OUTPUT .{works[0].extension}" if works else "cut the input so that it starts at zero"
    raise OutputFailure(f"a .{container.extension} file cannot keep the input's timestamps exactly ({detail}); {fix}")


def _alternatives(container: Container) -> list[Container]:
    names = [e for e in ("mkv", "mp4", "ts") if CONTAINERS[e].muxer != container.muxer]
    return [CONTAINERS[e] for e in names]


def _sample_codec(sample: bytes) -> str:
    with av.open(io.BytesIO(sample), format="nut") as seg:
        return seg.streams.video[0].codec_context.name


def _trial(sample: bytes, input_path, video: VideoStreamInfo, first_pts: Sequence[int], streams: CopyPlan,
           container: Container) -> tuple[str, str] | None:
    """Mux the start of OUTPUT into memory as ``container``; ("header", why) when the muxer
    refuses its streams, ("times", what) when a timestamp came back moved, None when all is kept."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(sample), format="nut") as seg, open_input(input_path) as inp:
        template = seg.streams.video[0]
        packet = next(p for p in seg.demux(template) if p.size)
        time_bases = [video.time_base, *(Fraction(inp.streams[i].time_base) for i in streams.copy)]
        try:
            out = av.open(buffer, "w", format=container.muxer, options=muxer_options(container, time_bases))
        except av.error.FFmpegError as exc:
            return "header", ffmpeg_reason(exc)
        try:
            try:
                with ffmpeg_log() as logged:  # a muxer says why only in its log
                    ovideo = _add_video_output(out, template, video)
                    copies, encoded = _add_other_outputs(out, inp, streams)
                    out.start_encoding()
            except (av.error.FFmpegError, ValueError) as exc:
                return "header", (next((m.strip() for _, _, m in logged if m.strip()), "")
                                  or ffmpeg_reason(exc)).rstrip(".")
            video_packets = []
            for pts in first_pts[:SAMPLE_PACKETS]:  # the sample frame, at each of the first times
                clone = av.Packet(bytes(packet))
                clone.pts = clone.dts = pts
                clone.time_base = video.time_base
                clone.is_keyframe = True
                clone.stream = ovideo
                video_packets.append(clone)
            sent = _SentTimes(ovideo, copies)
            for p in heapq.merge(video_packets, _first_packets(inp, copies), key=_packet_time):
                sent.note(p)
                out.mux(p)
            out.close()
        except av.error.FFmpegError as exc:
            return "times", f"the muxer refused the first packets: {ffmpeg_reason(exc)}"
        finally:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - already closed, or failing anyway
                pass
    problem = _check_times(buffer.getvalue(), container, sent)
    return ("times", problem) if problem else None


def _first_packets(inp, copies: dict) -> Iterator[av.Packet]:
    """The first :data:`SAMPLE_PACKETS` packets of each copied stream, by decode time."""
    if not copies:
        return iter(())
    counts = {i: 0 for i in copies}
    taken = []
    for packet in inp.demux(*[inp.streams[i] for i in copies]):
        if packet.size == 0 or packet.dts is None and packet.pts is None or counts[packet.stream_index] >= SAMPLE_PACKETS:
            if all(n >= SAMPLE_PACKETS for n in counts.values()):
                break
            continue
        counts[packet.stream_index] += 1
        packet.stream = copies[packet.stream_index]
        taken.append(packet)
    return iter(sorted(taken, key=_packet_time))
