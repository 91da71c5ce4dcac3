"""Rank 0, before any rank works: validate everything, index the input, plan chunks, find reusable work.

:func:`prepare` checks every option and file a user can get wrong (so a
mistake fails here, once, not on every rank after work started), reads the
model, indexes the input's frames (a packet scan), cuts them into chunks
(stylempi.job.plan), and names the job by a key over everything that changes
pixels (:func:`stylempi.job.key.job_key`): the work dir of that key holds the chunks a rerun
reuses (stylempi.job.workfiles). Its :class:`Prepared` is broadcast to all ranks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..colour.look import Look, check_scale
from ..colour.matrices import MATRIX_NAMES
from ..errors import OutputFailure, UsageError, VideoOpenFailure
from ..media import (CopyPlan, EncodeSettings, FrameIndex, VideoStreamInfo, check_encoder, check_muxing,
                     choose_encoding, decode_frames, default_codec, describe_video, encoding_notes, index_frames,
                     open_input, output_format, partial_output_path, pick_video_stream, plan_stream_copy,
                     segment_offset)
from ..media.engines import (AUTO_CODEC, DEFAULT_CONVERT, DEFAULT_DECODE, choose_codec, choose_convert, choose_decode,
                             fit_frame_path, nvenc_to_probe)
from ..media.gpu_support import codec_of, probe_capabilities
from ..network.placement import network_width, resolve_device, resolve_precision
from ..network.styles import read_model
from ..network.temporal_filter import FilterSettings
from ..options import RunOptions
from ..storage.safefiles import link_refusal, make_dir, probe_writable, refuse_link, remove_tree
from ..storage.files import sha256_file
from .key import job_key
from .plan import Chunk, auto_chunk_frames, plan_chunks
from .workfiles import PLAN_NAME, reusable, write_json
from .worklock import LOCK_NAME, WorkLock, output_lock_path

if TYPE_CHECKING:
    import torch



@dataclass
class Prepared:
    """What rank 0 decides before any rank works; broadcast to all."""

    input: str
    output: str
    video: VideoStreamInfo
    chunks: list[Chunk]
    pending: list[int]
    settings: EncodeSettings
    copy: CopyPlan
    job_dir: str
    model_bytes: bytes
    model_name: str
    precision: str
    key: str
    device: str
    batch_size: int | None
    total_frames: int
    reused_frames: int
    notices: list[str] = field(default_factory=list)
    plan_seconds: float = 0.0
    compile: str = "auto"
    look: Look = field(default_factory=Look)
    #: Where frames are decoded: "cpu" (FFmpeg) or "gpu" (NVDEC); decided by stylempi.media.engines.
    decode: str = DEFAULT_DECODE
    #: What converts YUV <-> RGB: "ffmpeg" (swscale) or "torch"; decided by stylempi.media.engines.
    convert: str = DEFAULT_CONVERT
    #: Where the input's chroma samples sit, for the torch conversion (stylempi.network.planes).
    chroma_location: str = "left"
    #: The temporal filter's settings, or None when it is off (stylempi.network.temporal_filter).
    temporal: FilterSettings | None = None


def prepare(options: RunOptions) -> Prepared:
    """Validate everything, index the input, plan chunks and find reusable work."""
    started = time.monotonic()
    input_path = Path(options.input)
    output_path = Path(options.output)
    _check_numbers(options)
    scale = check_scale(options.style_scale)
    with open_input(input_path) as container:  # existence, emptiness, format
        video_stream = pick_video_stream(container, options.video_stream)
        video = describe_video(container, video_stream)
    look = Look(scale=scale, preserve_colors=options.preserve_colors,
                matrix=options.color_matrix or MATRIX_NAMES[video.colour.matrix])
    look.as_dict()  # an unknown colour matrix fails here
    _check_output_path(input_path, output_path)
    device = resolve_device(options.device)
    decode, convert, codec, engine_notes = _choose_engines(options, input_path, output_path, video, device,
                                                          look.plain)
    settings, sample = _checked_encoding(options, output_path, video, codec, engine_notes)
    copy = plan_stream_copy(input_path, output_path, video.index, options.audio_codec,
                            options.reencode_audio)
    notices = engine_notes + encoding_notes(video, settings, output_format(output_path)) + list(copy.dropped)
    temporal = _temporal(options, convert, notices)
    _check_writable_dir(output_path.parent, "OUTPUT's directory")

    model_bytes, model_name, precision = _vetted_model(options, device)
    index = index_frames(input_path, video.index)
    _check_one_size(input_path, index)
    if index.undecodable:
        notices.append(mid_gop_note(index))
    if index.pts:  # times before zero are lifted in the segment files (NUT holds none)
        settings = dataclasses.replace(settings, pts_offset=segment_offset(index.pts[0]))
    check_muxing(sample, input_path, video, index.pts, copy, output_path)  # OUTPUT's start, in memory
    chunk_frames = options.chunk_frames or auto_chunk_frames(len(index.pts))
    chunks = plan_chunks(index.pts, index.keyframes, chunk_frames)
    siting = _chroma_location(input_path, video, index.pts[0]) if convert == "torch" and index.pts else "left"
    key = job_key({  # one value for each entry RunOptions' fields declare (stylempi.job.key)
        "input_size": input_path.stat().st_size, "input_sha256": sha256_file(input_path),
        "video_stream": video.index, "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "precision": precision, "encoding": settings.as_dict(), "chunk_frames": chunk_frames,
        "compile": options.compile, "look": look.as_dict(), "engines": {"decode": decode, "convert": convert},
        "temporal": temporal.as_dict() if temporal is not None else None})
    job_dir = _job_dir(options, output_path, key)
    if options.staging is not None:
        options.staging.lock_work(str(job_dir), str(options.output))  # one job per OUTPUT in Blob storage too
        options.staging.pull_chunks(str(job_dir))  # chunks an earlier run left in Blob storage
    pending, reused_frames = reusable(job_dir, chunks)
    write_json(job_dir / PLAN_NAME, {
        "stylempi": __version__, "key": key, "input": str(input_path), "output": str(output_path),
        "model": model_name, "precision": precision, "encoding": settings.as_dict(), "look": look.as_dict(),
        "decode": decode, "convert": convert, "temporal": temporal.as_dict() if temporal else None,
        "chunks": [{"index": c.index, "frames": c.frames, "first_pts": c.first, "last_pts": c.last}
                   for c in chunks]})
    return Prepared(
        # OUTPUT's folder resolved, not OUTPUT: a link there is replaced at the end, never followed
        input=str(input_path.resolve()), output=str(output_path.parent.resolve() / output_path.name),
        video=video, chunks=chunks,
        pending=pending, settings=settings, copy=copy, job_dir=str(job_dir), model_bytes=model_bytes,
        model_name=model_name, precision=precision, key=key, device=options.device,
        batch_size=options.batch_size, total_frames=len(index.pts), compile=options.compile,
        reused_frames=reused_frames, notices=notices, plan_seconds=time.monotonic() - started, look=look,
        decode=decode, convert=convert, chroma_location=siting, temporal=temporal)


def _temporal(options: RunOptions, convert: str, notices: list[str]) -> FilterSettings | None:
    """The temporal filter's settings, or None when it is off. It works on RGB frames, so the
    torch colour path (YUV planes on the device) runs without it, and says so."""
    if options.temporal not in ("on", "off"):
        raise UsageError("--temporal must be on or off")
    if options.temporal == "off":
        return None
    if convert == "torch":
        notices.append("the temporal filter works on RGB frames: off with --convert torch")
        return None
    return FilterSettings()


def _chroma_location(input_path: Path, video: VideoStreamInfo, first_pts: int) -> str:
    """Where the input's chroma sits, for the torch colour path (stylempi.network.planes), read
    off its first frame."""
    from ..network.planes import chroma_location
    return next(decode_frames(input_path, video.index, [first_pts],
                              convert=lambda frame: chroma_location(frame, video.colour)))[1]


def _check_numbers(options: RunOptions) -> None:
    if options.chunk_frames is not None and options.chunk_frames < 1:
        raise UsageError("--chunk-frames must be at least 1")
    if options.batch_size is not None and options.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")


def _check_output_path(input_path: Path, output_path: Path) -> None:
    if output_path.exists() and input_path.exists() and os.path.samefile(output_path, input_path) \
            or output_path.resolve() == input_path.resolve():
        raise UsageError("OUTPUT is the same file as INPUT; write the result to a new file")
    if output_path.is_dir():
        raise OutputFailure(f"OUTPUT {output_path} is a directory; give a file name such as "
                            f"{output_path / (input_path.stem + '.styled.mp4')}")
    # Refused here, before any work, as well as where each is made (stylempi.storage.safefiles).
    refuse_link(partial_output_path(output_path), "the partial OUTPUT")
    refuse_link(output_lock_path(output_path), "OUTPUT's lock file")


def _choose_engines(options: RunOptions, input_path: Path, output_path: Path, video: VideoStreamInfo,
                    device: torch.device, plain_look: bool) -> tuple[str, str, str, list[str]]:
    """(decode, convert, codec, notes): the job's media engines (stylempi.media.engines), probing
    only what was asked for, and a note for each ``auto`` that fell back."""
    container = output_format(output_path)
    depth = video.colour.depth
    default = default_codec(container, depth)
    codec_name = codec_of(video.codec)
    caps = probe_capabilities(device, codec_name, input_path=input_path, video_stream=video.index,
                              decode=options.decode in ("auto", "gpu"),
                              encoders=nvenc_to_probe(options.codec, container, depth, device.type))
    decode, convert = fit_frame_path(choose_decode(options.decode, device.type, codec_name, caps),
                                     choose_convert(options.convert, device.type), options.decode,
                                     options.convert, video.colour.chroma, plain_look)
    choices = (decode, convert, choose_codec(options.codec, default, container, depth, device.type, caps))
    decode, convert, codec = (c.value for c in choices)
    return decode, convert, codec, [c.note for c in choices if c.note]


def _checked_encoding(options: RunOptions, output_path: Path, video: VideoStreamInfo, codec: str,
                      notes: list[str]) -> tuple[EncodeSettings, bytes]:
    """The encoder settings, opened once here (bad --preset/--crf: here, not on every rank after
    work started). An NVENC encoder ``--codec auto`` chose that refuses this job (a frame
    size it cannot take, a preset it lacks) gives way to the default, with a note. Returns
    the settings and the encoder's one-frame sample (for :func:`check_muxing`)."""
    settings = choose_encoding(output_path, video, codec, options.encoder)
    try:
        return settings, check_encoder(settings)
    except UsageError:
        fallback = default_codec(output_format(output_path), video.colour.depth)
        if options.codec != AUTO_CODEC or codec == fallback:
            raise
        notes.append(f"{codec} refuses this job's settings: encoding with {fallback}")
        settings = choose_encoding(output_path, video, fallback, options.encoder)
        return settings, check_encoder(settings)


def _vetted_model(options: RunOptions, device: torch.device) -> tuple[bytes, str, str]:
    """(checkpoint bytes, name, precision): the network loads here, once, or the job fails here
    rather than on every rank."""
    model_bytes, model_name = read_model(options.model)
    from ..network.model import load_network
    network = load_network(model_bytes, trust=options.trust_model, name=model_name)
    precision = resolve_precision(options.precision, device, network_width(network))
    return model_bytes, model_name, precision


def _check_one_size(input_path: Path, index: FrameIndex) -> None:
    """Refuse a video whose frame size changes: one encoder, opened once, takes one size."""
    change = index.size_change()
    if change is not None:
        pts, (w0, h0), (w1, h1) = change
        raise VideoOpenFailure(size_change_message(str(input_path), float(index.seconds(pts)), (w0, h0), (w1, h1)))


def mid_gop_note(index: FrameIndex) -> str:
    """The note for a capture that starts mid-GOP (:attr:`FrameIndex.undecodable`)."""
    first, last = (float(index.seconds(p)) for p in (index.undecodable[0], index.undecodable[-1]))
    start = float(index.seconds(index.pts[0])) if index.pts else last
    return (f"the input starts mid-GOP: its first {len(index.undecodable)} frame(s) ({first:.6f}s to {last:.6f}s) "
            f"refer to pictures before the file's start and cannot be decoded; OUTPUT starts at the first "
            f"keyframe, {start:.6f}s, as players show it")


def size_change_message(name: str, seconds: float, old: tuple[int, int], new: tuple[int, int]) -> str:
    return (f"{name}: the video changes size from {old[0]}x{old[1]} to {new[0]}x{new[1]} at {seconds:.3f}s; "
            "stylempi needs one frame size throughout: cut the input there and stylize each piece")


#: The locks rank 0 holds from planning to the end of the job, OUTPUT's then the work
#: root's (see stylempi.job.worklock).
_held_locks: list[WorkLock] = []


def _job_dir(options: RunOptions, output_path: Path, key: str) -> Path:
    """Lock OUTPUT and its work root, clear work of other settings from it, and make this job's dir.

    The work root and everything in it are made and removed without following a
    link (stylempi.storage.safefiles): a link planted there is refused before anything is touched.
    """
    base = Path(options.work_dir) if options.work_dir else output_path.parent
    root = base / f".{output_path.name}.stylempi"
    job_dir = root / key[:20]
    try:
        base.mkdir(parents=True, exist_ok=True)  # the user's own --work-dir, links and all
    except OSError as exc:
        raise OutputFailure(f"cannot use work dir {base}: {exc.strerror or exc}") from None
    release_work_lock()  # a library caller planning again in the same process
    _held_locks.append(WorkLock.for_output(output_path, str(options.output)))  # whatever the work dir
    make_dir(root, "the work dir")
    _held_locks.append(WorkLock.acquire(root, str(options.output)))  # before anything in root is touched
    try:
        stale = [e for e in os.scandir(root)  # earlier jobs for this OUTPUT with other inputs/settings
                 if e.name != LOCK_NAME and (e.name != job_dir.name or options.restart)]
        linked = next((e for e in stale if e.is_symlink()), None)
        if linked is not None:  # refused before any of the others is removed
            raise link_refusal(linked.path, "an entry of the work dir")
        for entry in stale:
            remove_tree(entry.path, "an entry of the work dir")
    except OSError as exc:
        raise OutputFailure(f"cannot use work dir {root}: {exc.strerror or exc}") from None
    make_dir(job_dir, "the work dir")
    _check_writable_dir(job_dir, "the work dir")
    return job_dir


def release_work_lock(remove: bool = False) -> None:
    """Free the locks :func:`prepare` took (``run_job`` does this at its end); ``remove``
    deletes the work root's lock file too (OUTPUT's goes in any case).

    Only for callers that plan without running, e.g. to inspect the plan.
    """
    while _held_locks:
        _held_locks.pop().release(remove=remove)


def _check_writable_dir(directory: Path, what: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputFailure(f"{what} {directory} is a file, not a directory")
    if not directory.is_dir():
        raise OutputFailure(f"{what} {directory} does not exist")
    try:
        probe_writable(directory)
    except OSError as exc:
        raise OutputFailure(f"cannot write to {what} {directory}: {exc.strerror or exc}") from None
