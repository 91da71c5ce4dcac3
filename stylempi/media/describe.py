"""What a job must keep of the input's video stream, and ``stylempi probe``'s description."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction

import av

from ..colour import matrices as colours
from ..colour.matrices import Colour
from ..errors import VideoOpenFailure
from ._ffmpeg import ffmpeg_reason
from .indexing import index_frames
from .inputs import open_input, pick_video_stream
from .pixels import frame_colour


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
        raise VideoOpenFailure(f"cannot decode video of {container.name}: {ffmpeg_reason(exc)}") from None
    colour, notes = frame_colour(first, width, height, ctx.pix_fmt, container.name)
    notes = notes + picture_notes(first)
    sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
    return VideoStreamInfo(
        index=stream.index, codec=ctx.name, width=width, height=height,
        time_base=Fraction(stream.time_base), start_pts=stream.start_time,
        sample_aspect_ratio=Fraction(sar) if sar else None, rotation=rotation,
        pix_fmt=ctx.pix_fmt, frame_rate=Fraction(stream.average_rate) if stream.average_rate else None,
        colour=colour, colour_notes=notes)


def picture_notes(frame) -> list[str]:
    """What a job drops of the picture beyond its colour (alpha, interlacing), in the user's words."""
    if frame is None:
        return []
    notes = []
    if any(getattr(c, "is_alpha", False) for c in frame.format.components):
        notes.append(f"the input's alpha channel ({frame.format.name}) is dropped: the network sees and "
                     "draws opaque pictures, so OUTPUT's frames are opaque")
    if frame.interlaced_frame:
        notes.append("the input is interlaced: each frame's two fields are stylized as one picture and "
                     "written as progressive video (the interlaced flag is not kept)")
    return notes


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
