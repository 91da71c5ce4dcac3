"""Output settings and encoding: which encoder, with what options, and a rank's segment writer.

:func:`choose_encoding` decides every setting once (:class:`EncodeSettings`,
part of the resume key; the options themselves are in :func:`encoder_options`),
:func:`check_encoder` tries them on rank 0 before any work, and
:func:`add_video_stream` is the one place an encoder is opened with them.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import av
import numpy as np

from ..colour import matrices as colours
from ..colour.matrices import Colour
from ..errors import OutputFailure, UsageError
from ..storage.safefiles import create_file, fd_name
from . import cpu
from ._ffmpeg import ffmpeg_log, ffmpeg_reason, stderr_captured
from .containers import CONTAINERS, Container, container_for
from .describe import VideoStreamInfo
from .engines import NVENC_ENCODERS as NVENC
from .pixels import encoder_frame, to_yuv
from .settings import EncodeSettings

#: Encoder for inputs deeper than 8 bits when --codec is not given: HEVC Main 10 is what
#: HDR players and TVs decode (x264's High 10 is barely supported in hardware).
DEEP_CODEC = "libx265"


def output_format(path: str | os.PathLike) -> Container:
    """OUTPUT's container (accepted types only; see :mod:`stylempi.media.containers`)."""
    return container_for(path)


#: Frames of rate-control look-ahead for x264/x265 (see :func:`encoder_options`).
ENCODER_LOOKAHEAD = 10


#: The CRF scale of each encoder that has one (FFmpeg's option ranges; lower is better).
#: NVENC's is its constant-quality target ``cq``, whose 0 means "let the encoder choose",
#: not lossless as x264's CRF 0: --crf starts at 1 there.
CRF_RANGES = {"libx264": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63), "libvpx": (0, 63),
              "libsvtav1": (0, 63), **{name: (1, 51) for name in NVENC}}
#: The CRF each encoder gets when --crf is not given (see :func:`encoder_options`). NVENC's
#: 19 is the usual advice for x264-18-like quality, not a measurement (no GPU measured it).
DEFAULT_CRF = {"libx264": 18, "libx265": 18, "libvpx-vp9": 31, "libvpx": 31, "libsvtav1": 35,
               **{name: 19 for name in NVENC}}
#: The preset each encoder that has one gets when --preset is not given (NVENC: p1 fastest
#: .. p7 best; p5 is FFmpeg's "slow (good quality)").
DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libsvtav1": "8", **{name: "p5" for name in NVENC}}


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


@dataclass(frozen=True)
class EncoderRequest:
    """What a user asks of the video encoder beyond its name, as one value: ``stylempi run``'s flag
    of each field's name (stylempi.cli.run) fills it (RunOptions.from_args), the job carries it
    whole (RunOptions.encoder), and :func:`encoder_options` turns it into the encoder's options,
    which are in the resume key (:class:`EncodeSettings`). A new encoder option is a field here,
    its use in :func:`encoder_options`, and its flag in stylempi.cli.run."""

    #: Quality, lower is better (:data:`CRF_RANGES`); None = :data:`DEFAULT_CRF`.
    crf: int | None = None
    #: Speed against size; None = :data:`DEFAULT_PRESET`.
    preset: str | None = None

    @classmethod
    def from_args(cls, args) -> EncoderRequest:
        """The request of parsed ``stylempi run`` arguments: each field from the flag of its name."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def choose_encoding(output_path: str | os.PathLike, video: VideoStreamInfo, codec: str | None,
                    request: EncoderRequest = EncoderRequest()) -> EncodeSettings:
    """Pick codec, pixel format, colour and encoder options for OUTPUT's container.

    The output keeps the input's chroma subsampling and bit depth where the
    encoder can (odd sizes need 4:4:4); an input deeper than 8 bits gets
    :data:`DEEP_CODEC` unless --codec says otherwise.
    """
    enc = _video_encoder(output_format(output_path), video.colour, codec)
    colour = _encodable_colour(enc, video)
    check_crf(enc.name, request.crf)
    options = encoder_options(enc.name, colour, request)
    pix_fmt = _encoder_pix_fmt(_formats(enc), colour.pix_fmt())
    return EncodeSettings(enc.name, pix_fmt, tuple(sorted(options.items())), video.width,
                          video.height, video.time_base, video.sample_aspect_ratio, colour)


def default_codec(container: Container, depth: int) -> str:
    """The encoder a job gets without --codec: the container's, or :data:`DEEP_CODEC` for
    inputs deeper than 8 bits where the container holds it."""
    if depth > 8 and container.holds(DEEP_CODEC):
        return DEEP_CODEC
    return container.default_codec


def _video_encoder(container: Container, wanted: Colour, codec: str | None) -> av.Codec:
    """The encoder --codec names (default: :func:`default_codec`), refused unless it is a
    video encoder the container can hold."""
    if codec is None:
        codec = default_codec(container, wanted.depth)
    try:
        enc = av.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError and friends
        raise UsageError(f"unknown video encoder {codec!r}; try libx264, libx265 or libvpx-vp9") from None
    if enc.type != "video":
        raise UsageError(f"{codec} is not a video encoder")
    if not container.holds(codec):
        others = [c.extension for c in dict.fromkeys(CONTAINERS.values()) if c.muxer != container.muxer
                  and c.holds(codec)]
        fix = f" or name OUTPUT .{others[0]}" if others else ""
        raise OutputFailure(f"a .{container.extension} file cannot hold {codec} video; choose another "
                            f"--codec{fix}")
    return enc


def encoder_options(encoder: str, colour: Colour, request: EncoderRequest = EncoderRequest()) -> dict[str, str]:
    """The options each encoder is opened with: quality, speed, and what keeps segments joinable.

    This is the place to change encoder settings. They are part of a job's
    resume key (:class:`EncodeSettings`): after a change, an interrupted job
    starts afresh instead of joining segments encoded two ways.
    """
    crf, preset = request.crf, request.preset
    options: dict[str, str] = {}
    hdr = ":".join(f"{k}={v}" for k, v in colours.encoder_params(encoder, colour).items())
    if encoder in ("libx264", "libx265"):
        options["crf"] = str(DEFAULT_CRF[encoder] if crf is None else crf)
        options["preset"] = preset or DEFAULT_PRESET[encoder]
        # No B-frames: every segment's decode order equals presentation order,
        # so segments encoded apart join into one stream with monotonic DTS.
        # A short rate-control look-ahead (x264's default is 40 frames, x265's 20):
        # frames held inside the encoder are a rank's largest memory at 1080p, and a
        # chunk's last look-ahead must be encoded after its last frame arrives, which
        # is the job's tail; a shorter one barely changes the file's size.
        # x264's threaded look-ahead (on by default with frame threads) made the
        # bytes of a segment's second frame depend on thread timing, so the same
        # pixels could encode to different packets (tests/e2e/test_run_matrix.py, same-N
        # test): it is off. Its threads stay on, as many as :func:`encoder_threads` says.
        # Figures: docs/benchmarks.md, "Why the media code does what it does".
        if encoder == "libx264":
            options.update({"bf": "0", "rc-lookahead": str(ENCODER_LOOKAHEAD), "threads": str(encoder_threads()),
                            "x264-params": ":".join(filter(None, ["sync-lookahead=0", hdr]))})
        else:
            options["x265-params"] = ":".join(filter(None, [
                f"bframes=0:rc-lookahead={ENCODER_LOOKAHEAD}:log-level=error", hdr]))
    elif encoder in ("libvpx-vp9", "libvpx"):
        options.update({"crf": str(DEFAULT_CRF[encoder] if crf is None else crf), "b": "0", "row-mt": "1",
                        "deadline": "good", "cpu-used": "4", "threads": str(encoder_threads())})
    elif encoder == "libsvtav1":
        options.update({"crf": str(DEFAULT_CRF[encoder] if crf is None else crf),
                        "preset": preset or DEFAULT_PRESET[encoder]})
    elif encoder in NVENC:
        # Constant quality, as CRF elsewhere: VBR rate control with a quality target (cq)
        # and no bitrate target (b 0: FFmpeg's NVENC default of 2 Mb/s would be an average
        # the quality is held to). No B-frames, for the joinable segments x264 gets them
        # off for. Option names: FFmpeg's nvenc encoders (libavcodec/nvenc_h264.c,
        # nvenc_hevc.c, nvenc_av1.c: preset p1..p7, rc vbr, cq 0..51 with 0 = automatic)
        # and the generic b and bf. Not yet run on a GPU.
        options.update({"rc": "vbr", "cq": str(DEFAULT_CRF[encoder] if crf is None else crf), "b": "0",
                        "bf": "0", "preset": preset or DEFAULT_PRESET[encoder]})
    return options


def encoder_threads() -> int:
    """x264's and libvpx's thread count: every CPU of this node (rank 0's, for the whole job).

    The count changes pixels. PyAV opens encoders with slice threading, so x264 cuts
    each frame into one slice per thread (at most one per 4 macroblock rows), and the
    slices change the bitstream and the decoded picture (the same frames at 320x240
    decode three ways with 1, 2 and 3 or more threads); libvpx's VP9 output changes
    with its thread count too (1280x720: 1 thread and 2 differ). Left to themselves
    both count the CPUs in the process's affinity mask, which a launcher narrows
    (Slurm's --cpus-per-task, mpirun's binding), so the output depended on N and on
    the cluster. The node's CPU count is what that auto count is on an unbound
    process, so an unbound job keeps its pixels; every rank then encodes alike, and a
    rank beside a GPU may use the whole node. (x265 and SVT-AV1 gave the same bytes
    bound to one CPU or not.)
    """
    return os.cpu_count() or 1


def _encodable_colour(enc: av.Codec, video: VideoStreamInfo) -> Colour:
    """The input's colour with the subsampling and depth this encoder can write exactly.

    Depth first (never more than the input's), then subsampling: the input's,
    else 4:4:4 (which holds any picture), else 4:2:0 for even sizes.
    """
    colour = video.colour
    formats = _formats(enc)
    odd = video.width % 2 or video.height % 2
    chromas = [c for c in dict.fromkeys(["444" if odd else colour.chroma, "444", "420"])
               if not (odd and c != "444")]
    for depth in dict.fromkeys([colour.depth, 12, 10, 8]):
        if depth > colour.depth:
            continue
        for chroma in chromas:
            if _encoder_pix_fmt(formats, colour.pix_fmt(chroma, depth)) is not None:
                return replace(colour, depth=depth, chroma=chroma)
    if odd and not any(_encoder_pix_fmt(formats, colour.pix_fmt("444", d)) for d in (8, 10, 12)):
        why = "odd sizes need 4:4:4, which it does not take"
    else:  # RGB-only encoders (png, libx264rgb), or only deeper formats than the input's (prores_ks)
        shown = ", ".join(sorted(formats)[:6]) + (", ..." if len(formats) > 6 else "")
        why = (f"it takes {shown}, and stylempi gives an encoder the input's own YUV, at most "
               f"{colour.depth}-bit")
    raise UsageError(f"{enc.name} cannot encode this {video.width}x{video.height} {colour.depth}-bit video "
                     f"exactly ({why}); try --codec libx264")


#: Planar formats some encoders take only as a semi-planar twin with the samples in the
#: high bits (NVENC's 10-bit 4:2:0 is p010le): the same samples, which swscale repacks
#: exactly, so such an encoder keeps the input's depth.
SEMI_PLANAR = {"yuv420p10le": "p010le"}


def _formats(enc: av.Codec) -> set[str]:
    return {f.name for f in (enc.video_formats or [])}


def _encoder_pix_fmt(formats: set[str], planar: str) -> str | None:
    """The format the encoder is fed for the planar ``planar``: itself, its twin, or None."""
    if not formats or planar in formats:
        return planar
    twin = SEMI_PLANAR.get(planar)
    return twin if twin in formats else None


def encoding_notes(video: VideoStreamInfo, settings: EncodeSettings,
                   container: Container | None = None) -> list[str]:
    """What the chosen encoding does not keep of the input's picture, in the user's words;
    ``container`` (OUTPUT's) decides what the advice may suggest."""
    notes = list(video.colour_notes)
    kept = settings.colour
    holds_deep = container is None or container.holds(DEEP_CODEC)
    if kept is not None and kept.depth < video.colour.depth:
        fix = (f"leave --codec out, or use {DEEP_CODEC}, to keep it" if holds_deep else
               f"a .{container.extension} file cannot hold {DEEP_CODEC}: name OUTPUT .mkv to keep it")
        notes.append(f"{settings.codec} writes {kept.depth}-bit video: the input's {video.colour.depth}-bit "
                     f"depth is reduced ({fix})")
    if kept is not None and kept.chroma != video.colour.chroma and video.colour.chroma != "other":
        notes.append(f"chroma {video.colour.chroma} is written as {kept.chroma} "
                     f"({_chroma_reason(video, settings)})")
    if kept is not None and (video.colour.mastering or video.colour.light) \
            and settings.codec not in ("libx264", "libx265"):
        fix = f"use {DEEP_CODEC} to keep it" if holds_deep else f"name OUTPUT .mkv and use {DEEP_CODEC} to keep it"
        notes.append(f"{settings.codec} cannot carry the input's HDR mastering display / light level "
                     f"metadata; it is dropped ({fix})")
    return notes


def _chroma_reason(video: VideoStreamInfo, settings: EncodeSettings) -> str:
    """Which of the two reasons changed the subsampling (:func:`_encodable_colour`): an odd
    frame size (4:2:0 and 4:2:2 need even sizes), or an encoder without the input's."""
    if video.width % 2 or video.height % 2:
        return f"the frame size {video.width}x{video.height} is odd, and {video.colour.chroma} needs even sizes"
    return f"{settings.codec} cannot write {video.colour.chroma}"


def add_video_stream(container: av.container.OutputContainer, settings: EncodeSettings,
                     gpu: int | None = None) -> av.video.stream.VideoStream:
    """Add the encoder's stream to ``container``, set up from ``settings``.

    The one place the encoder is configured: :class:`SegmentWriter` and
    :func:`check_encoder` both call it, so the up-front check on rank 0 opens
    exactly the encoder every rank will open. ``gpu``: the CUDA device index an NVENC
    encoder runs on (this rank's GPU; FFmpeg's own default is the first GPU of the
    node for every rank); not part of the settings, since it changes no pixels.
    x264 is kept to the kernels up to AVX2 on a CPU with AVX-512 (:mod:`.cpu`): a
    choice of each rank's own node, where a CPU without AVX2 must not be told to use it.
    """
    options = dict(settings.options)
    if gpu is not None and settings.codec in NVENC:
        options["gpu"] = str(gpu)
    if settings.codec == "libx264":
        options["x264-params"] = cpu.x264_params(options.get("x264-params", ""))
    stream = container.add_stream(settings.codec, options=options)
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


def check_encoder(settings: EncodeSettings) -> bytes:
    """Open the encoder with the final settings and encode one blank frame, in memory; returns
    the NUT segment that frame makes (a sample for the muxer check,
    :func:`~stylempi.media.assembly.check_muxing`).

    Encoders read most options only when they open (x264's preset, a CRF out of
    range), which would otherwise happen on every rank after work started.
    """
    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="nut", options=dict(SEGMENT_OPTIONS))
    try:
        with stderr_captured() as said, ffmpeg_log() as logged:  # x264 prints to fd 2, FFmpeg logs
            stream = add_video_stream(container, settings)
            deep = settings.colour is not None and settings.colour.depth > 8
            frame = to_yuv(np.zeros((settings.height, settings.width, 3), np.uint16 if deep else np.uint8),
                           settings)
            frame.pts = 0
            frame.time_base = settings.time_base
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        container.close()
        return buffer.getvalue()
    except Exception as exc:  # noqa: BLE001 - ArgumentError, OverflowError, ValueError: all bad settings
        options = " ".join(f"{k}={v}" for k, v in settings.options)
        reason = (next((line.strip() for line in said if line.strip()), "")
                  or next((m.strip() for _, _, m in logged if m.strip()), "") or ffmpeg_reason(exc)).rstrip(".")
        if settings.codec in CRF_RANGES or settings.codec in DEFAULT_PRESET:
            raise UsageError(f"the {settings.codec} encoder refuses these settings ({options}): "
                             f"{reason}; check --crf and --preset") from None
        # --crf and --preset do not reach this encoder: its refusal is of the frames themselves
        raise UsageError(f"the {settings.codec} encoder refuses this video's {settings.pix_fmt} frames: "
                         f"{reason}; choose another --codec, such as libx264") from None
    finally:
        try:
            container.close()
        except Exception:  # noqa: BLE001 - closing a container that failed to start
            pass


#: The segment muxer's options. FFmpeg's default (avoid_negative_ts auto) moved a chunk that
#: starts before zero (an MPEG-TS capture just before its 33-bit wrap reads as negative times)
#: to start at 0, silently: every timestamp came out wrong. NUT cannot store times before zero
#: at all, so a job lifts them by :attr:`EncodeSettings.pts_offset`; should a negative time
#: still reach the muxer, it is refused (a loud failure), never shifted.
SEGMENT_OPTIONS = (("avoid_negative_ts", "disabled"),)


def segment_offset(first_pts: int) -> int:
    """The :attr:`EncodeSettings.pts_offset` of a video whose earliest frame is at ``first_pts``:
    what lifts it to zero, or 0 when it is not before zero."""
    return max(0, -first_pts)


class SegmentWriter:
    """Encode one chunk of stylized frames into a NUT file with the input's timestamps.

    ``gpu``: this rank's CUDA device index, for an NVENC encoder (:func:`add_video_stream`).
    """

    def __init__(self, path: str | os.PathLike, settings: EncodeSettings, gpu: int | None = None):
        self.path = os.fspath(path)
        self.settings = settings
        self._fd = create_file(self.path, "a chunk file")  # never through a planted link (stylempi.storage.safefiles)
        try:
            self._container = av.open(fd_name(self._fd, self.path), "w", format="nut",
                                      options=dict(SEGMENT_OPTIONS))
        except av.error.FFmpegError as exc:
            os.close(self._fd)
            raise OutputFailure(f"cannot write {self.path}: {ffmpeg_reason(exc)}") from None
        self._stream = add_video_stream(self._container, settings, gpu)
        self.frames = 0

    def write(self, pts: int, picture: np.ndarray | tuple[np.ndarray, ...]) -> None:
        """Encode one frame: an RGB array (converted here), or the encoder's own Y, Cb, Cr
        planes (converted already, by the torch colour path)."""
        if isinstance(picture, tuple):
            frame = encoder_frame(list(picture), self.settings)
        else:
            frame = to_yuv(picture, self.settings)
        frame.pts = pts + self.settings.pts_offset
        frame.time_base = self.settings.time_base
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self._mux(self._stream.encode(None))
        self._container.close()
        self._close_fd()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - we are already failing
            pass
        self._close_fd()
        Path(self.path).unlink(missing_ok=True)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except av.error.FFmpegError as exc:
            raise OutputFailure(f"cannot write {self.path}: {ffmpeg_reason(exc)}") from None
        except OSError as exc:
            raise OutputFailure(f"cannot write {self.path}: {exc.strerror or exc}") from None
