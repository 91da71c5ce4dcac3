"""Output containers: which extensions OUTPUT may have, and what each can hold.

Every container accepted here is tested end to end (tests/e2e/test_colour.py):
exact timestamps, audio packets kept, colour tags kept. Others are refused
before any work, with a message naming one that works, because they cannot
keep what a job promises: AVI and FLV store frames at a fixed rate or on
millisecond ticks without exact timestamps for variable-rate video (a run
once gave every frame 62 ms late with exit 0), MPEG-PS and Ogg hold none of
the encoders used here.

FFmpeg answers "can this muxer hold this codec" from the muxer's codec tag
table; MPEG-TS has none, so what it carries is listed here from its muxer's
stream types.

How far an output's timestamp may stray from the input's and still be the same
(:func:`timestamp_tolerance`) is here too: ``verify`` judges by it, and a job checks
its own OUTPUT by it before it takes OUTPUT's name.

The one list of file extensions taken for videos when a folder is searched,
input side, is here too (:data:`VIDEO_EXTENSIONS`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class Container:
    """An accepted output type: FFmpeg's muxer, its options and the default video encoder."""

    extension: str
    muxer: str
    default_codec: str = "libx264"
    options: tuple[tuple[str, str], ...] = ()

    @property
    def holds_chapters(self) -> bool:
        """Whether this container stores chapters (MPEG-TS has none)."""
        return self.muxer != "mpegts"

    def holds(self, codec: str) -> bool:
        """Whether this container can carry ``codec`` (an encoder or a decoder name)."""
        import av  # here, so that `stylempi --help` does not load FFmpeg
        if self.muxer == "mpegts":
            return _codec_id_name(codec) in MPEGTS_CODECS
        with av.open(os.devnull, "w", format=self.muxer) as probe:
            supported = probe.supported_codecs
        return codec in supported or _codec_id_name(codec) in supported


_NO_NEGATIVE_SHIFT = (("avoid_negative_ts", "disabled"),)  # AAC priming would move every frame

CONTAINERS = {c.extension: c for c in (
    Container("mp4", "mp4"),
    Container("m4v", "mp4"),
    Container("mov", "mov"),
    Container("mkv", "matroska", options=_NO_NEGATIVE_SHIFT),
    Container("webm", "webm", "libvpx-vp9", options=_NO_NEGATIVE_SHIFT),
    Container("ts", "mpegts"),
    Container("m2ts", "mpegts", options=(("mpegts_m2ts_mode", "1"),)),
    Container("mts", "mpegts", options=(("mpegts_m2ts_mode", "1"),)),
)}

#: Why the usual extensions that are refused are refused (the rest are simply unknown).
REFUSED = {
    "avi": "AVI stores frames at a fixed rate: it cannot keep the input's exact timestamps",
    "flv": "FLV stores millisecond ticks and few codecs: it cannot keep exact timestamps",
    "mpg": "an MPEG program stream holds none of the encoders used here",
    "mpeg": "an MPEG program stream holds none of the encoders used here",
    "vob": "an MPEG program stream holds none of the encoders used here",
    "ogv": "Ogg holds none of the encoders used here",
    "ogg": "Ogg holds none of the encoders used here",
    "wmv": "ASF stores millisecond ticks: it cannot keep exact timestamps",
    "asf": "ASF stores millisecond ticks: it cannot keep exact timestamps",
    "3gp": "3GP holds few codecs and audio formats; MP4 is its superset",
    "gif": "GIF is not a video container",
}

#: Codecs FFmpeg's MPEG-TS muxer maps to a stream type (libavformat/mpegtsenc.c).
MPEGTS_CODECS = frozenset({
    "h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "av1", "vc1", "dirac", "cavs", "vvc",
    "aac", "aac_latm", "mp2", "mp3", "ac3", "eac3", "dts", "truehd", "opus", "s302m",
    "dvb_subtitle", "dvb_teletext", "arib_caption", "smpte_klv", "timed_id3",
})

ACCEPTED = ", ".join(f".{e}" for e in CONTAINERS)

#: File names taken for videos where a folder is searched for them (training content, a
#: watched Blob container): wider than the output types, since any file FFmpeg reads will do.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                              ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".nut", ".3gp"})


def container_for(path: str | os.PathLike) -> Container:
    """OUTPUT's container from its extension, or one clear :class:`UsageError`."""
    ext = Path(path).suffix.lstrip(".").lower()
    if not ext:
        raise UsageError(f"OUTPUT {path} has no extension; name it .mp4 or .mkv (accepted: {ACCEPTED})")
    if ext in CONTAINERS:
        return CONTAINERS[ext]
    if ext in REFUSED:
        raise UsageError(f"OUTPUT .{ext}: {REFUSED[ext]}; name it .mkv or .mp4 (accepted: {ACCEPTED})")
    raise UsageError(f"unknown output type .{ext}; name OUTPUT .mp4 or .mkv (accepted: {ACCEPTED})")


#: The coarsest timestamp tick an output container may impose (Matroska, WebM, FLV: 1 ms).
COARSEST_CONTAINER_TICK = Fraction(1, 1000)


def timestamp_tolerance(input_time_base: Fraction, output_time_base: Fraction) -> Fraction:
    """How far an output timestamp may be from the input's and still be the same.

    Half a tick of the input's time base, widened only as far as a container's
    fixed 1 ms tick forces: a coarse time base given to the output by a remux
    (1/26 s moves frames by up to 19 ms) is a difference, not rounding.
    """
    forced = min(Fraction(output_time_base), COARSEST_CONTAINER_TICK)
    return max(Fraction(input_time_base), forced) / 2


def _codec_id_name(codec: str) -> str:
    """The codec an encoder writes ("libx264" -> "h264"); a codec name stays as it is."""
    import av
    for mode in ("w", "r"):
        try:
            return av.Codec(codec, mode).canonical_name
        except Exception:  # noqa: BLE001 - UnknownCodecError: try the other direction
            continue
    return codec
