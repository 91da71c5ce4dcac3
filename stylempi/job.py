"""The MPI job: plan on rank 0, stylize chunks on every rank, assemble on rank 0.

::

    rank 0                         every rank (0 included)             rank 0
    probe, index frames,  scatter  decode its chunks (seek+check),  gather  join segments by packet
    plan chunks, load   ───────►   stylize in batches, encode   ───────►  copy, copy audio/subs,
    model, check resume            segment files into work dir            rename onto OUTPUT

Only chunk *lists* and small records travel over MPI; frames never do. Each
rank reads the input and writes its encoded segments on the filesystem all
ranks share, so rank 0's serial work is the index (a packet scan) and the final
packet-copy join, both far faster than decoding or encoding.

Finished chunks are durable in the work dir with a checksum, under a directory
named by a key over everything that changes pixels (input content, model,
precision, encoder settings, chunking); rerunning the same command reuses them.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from . import __version__
from .colour import MATRIX_NAMES
from .comm import Comm, get_comm
from .errors import (ModelLoadFailure, OutputFailure, StylempiError, UsageError, VideoDecodeFailure,
                     VideoOpenFailure)
from .media import (CopyPlan, EncodeSettings, FrameIndex, SegmentWriter, VideoStreamInfo, assemble,
                    check_encoder, choose_encoding, describe_video, encoding_notes, file_sha256, index_frames,
                    open_input,
                    pick_video_stream, plan_stream_copy, decode_frames)
from .look import Look, LookStylizer, check_scale
from .plan import Chunk, assign_chunks, auto_chunk_frames, plan_chunks
from .stylize import (NetworkStylizer, Stylizer, default_batch_size, network_width, resolve_compile,
                      resolve_device, resolve_precision, threads_per_rank)
from .worklock import LOCK_NAME, WorkLock

#: Bumped when the segment format or chunking changes, so old work is never reused.
WORK_FORMAT = 2


@dataclass
class RunOptions:
    """Everything ``stylempi run`` takes; the CLI fills it from its flags."""

    input: str
    output: str
    model: str
    trust_model: bool = False
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    video_stream: int | None = None
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    audio_codec: str | None = None
    #: Re-encode every audio track with ``audio_codec``, not only those OUTPUT cannot hold.
    reencode_audio: bool = False
    work_dir: str | None = None
    restart: bool = False
    chunk_frames: int | None = None
    quiet: bool = False
    #: torch.compile the network: auto (CPU, long enough videos), on, off (stylize.resolve_compile).
    compile: str = "auto"
    #: The network sees each frame resized by this factor (stroke size); 1 = as it is.
    style_scale: float = 1.0
    #: Keep the input's chroma, take only the stylized luma (stylempi.look).
    preserve_colors: bool = False
    #: The colour matrix for ``preserve_colors`` (a stylempi.look.LUMA_COEFFICIENTS name);
    #: None = the input's own (the one its conversions use).
    color_matrix: str | None = None
    #: Blob storage staging (stylempi.storage.JobStaging) when a path is a Blob URL.
    staging: object | None = None


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
    staging: object | None = None  # set on each rank after the broadcast, never sent
    compile: str = "auto"
    look: Look = field(default_factory=Look)


@dataclass
class ChunkResult:
    index: int
    frames: int
    sha256: str


@dataclass
class RankStats:
    rank: int
    chunks: list[ChunkResult] = field(default_factory=list)
    decode_s: float = 0.0
    network_s: float = 0.0
    encode_s: float = 0.0
    damaged: list[int] = field(default_factory=list)
    #: Where and how this rank's network ran, e.g. "cuda fp16 batch 8" (see :func:`describe_stylizer`).
    engine: str = ""
    #: Seconds this rank spent compiling the network or loading it from the compile cache
    #: (part of ``network_s``).
    compile_s: float = 0.0


@dataclass
class Summary:
    """The outcome of a job, as printed on its last line."""

    output: str
    frames: int
    chunks: int
    reused_chunks: int
    wall_s: float
    plan_s: float
    work_s: float
    assemble_s: float
    decode_s: float
    network_s: float
    encode_s: float
    ranks: int
    #: The distinct :attr:`RankStats.engine` of the ranks, e.g. ["cuda fp16 batch 8"].
    engines: list[str] = field(default_factory=list)
    #: The longest compile (or compile-cache load) of any rank: a one-off per model and size.
    compile_s: float = 0.0
    #: Times (s) of frames the decoder concealed because the input is damaged there.
    damaged_s: list[float] = field(default_factory=list)

    def warnings(self) -> list[str]:
        if not self.damaged_s:
            return []
        times = ", ".join(f"{t:.3f}s" for t in self.damaged_s[:10])
        more = f" and {len(self.damaged_s) - 10} more" if len(self.damaged_s) > 10 else ""
        return [f"the input is damaged: the decoder concealed {len(self.damaged_s)} frame(s) at {times}{more}; "
                "they were stylized as concealed"]

    def line(self) -> str:
        fps = self.frames / self.wall_s if self.wall_s else 0.0
        return (f"stylempi: {self.frames} frames in {self.wall_s:.1f} s ({fps:.2f} frames/s) on "
                f"{self.ranks} rank{'s' if self.ranks != 1 else ''}"
                f"{' (' + ', '.join(self.engines) + ')' if self.engines else ''}; {self.chunks} chunks, "
                f"{self.reused_chunks} reused; plan {self.plan_s:.1f} s, stylize {self.work_s:.1f} s "
                f"(summed over ranks: decode {self.decode_s:.1f} s, network {self.network_s:.1f} s, "
                f"encode {self.encode_s:.1f} s), assemble {self.assemble_s:.1f} s"
                f"{f', compile {self.compile_s:.1f} s' if self.compile_s else ''} -> {self.output}")


StylizerFactory = Callable[[Prepared, Comm], Stylizer]


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------

def run_job(options: RunOptions, stylizer_factory: StylizerFactory | None = None,
            comm: Comm | None = None, progress: Callable[[int, int], None] | None = None) -> Summary:
    """Stylize ``options.input`` into ``options.output`` on every rank of ``comm``.

    ``stylizer_factory`` replaces the network (benchmarks plug in stand-ins);
    ``progress(done, total)`` is called on rank 0 as frames complete.
    """
    comm = comm or get_comm()
    try:
        return _run(options, stylizer_factory, comm, progress)
    finally:
        release_work_lock()  # a no-op after success; keeps the work dir's lock file for a resume


def _run(options: RunOptions, stylizer_factory: StylizerFactory | None, comm: Comm,
         progress: Callable[[int, int], None] | None) -> Summary:
    started = time.monotonic()
    prepared = comm.on_root(lambda: prepare(options))
    if options.staging is not None:
        options.staging.adopt(prepared)  # this rank's own input copy and work dir
    assignments = assign_chunks([prepared.chunks[i] for i in prepared.pending], comm.size) if comm.is_root else None
    mine: list[Chunk] = comm.scatter(assignments)

    work_started = time.monotonic()
    bar = _ProgressBar(prepared, options.quiet or not comm.is_root, progress)
    try:
        stylizer = (stylizer_factory or build_stylizer)(prepared, comm)
        if not prepared.look.plain:
            stylizer = LookStylizer(stylizer, prepared.look)
        stats = _work(prepared, mine, stylizer, comm, bar)
    except BaseException as error:  # noqa: BLE001 - every failure must end the whole job
        hint = (f" (finished chunks are kept in {prepared.job_dir}: rerun the same command to resume)")
        if isinstance(error, (VideoOpenFailure, VideoDecodeFailure)):
            _discard_work(prepared)  # the input itself must change: its chunks will never be reused
        if comm.size == 1:
            bar.close()
            if isinstance(error, (StylempiError, KeyboardInterrupt, OSError)):
                raise _with_hint(error, hint) from None
            raise
        comm.abort(_with_hint(error, hint))
        raise  # abort does not return under MPI
    comm.finish_progress()
    if comm.is_root:
        while not comm.all_done:
            bar.update(comm.poll_progress(block_until_done=True))
    bar.close()
    gathered = comm.gather(stats)
    work_s = time.monotonic() - work_started

    def finish() -> Summary:
        assemble_started = time.monotonic()
        _finish(prepared, gathered or [])
        assembled = time.monotonic() - assemble_started
        ranks = gathered or []
        return Summary(
            output=prepared.output, frames=prepared.total_frames, chunks=len(prepared.chunks),
            reused_chunks=len(prepared.chunks) - len(prepared.pending),
            wall_s=time.monotonic() - started, plan_s=prepared.plan_seconds, work_s=work_s,
            assemble_s=assembled, decode_s=sum(r.decode_s for r in ranks),
            network_s=sum(r.network_s for r in ranks), encode_s=sum(r.encode_s for r in ranks),
            ranks=comm.size, engines=sorted({r.engine for r in ranks if r.engine}),
            compile_s=max((r.compile_s for r in ranks), default=0.0),
            damaged_s=sorted(float(p * prepared.video.time_base) for r in ranks for p in r.damaged))

    return comm.on_root(finish)


def _with_hint(error: BaseException, hint: str) -> BaseException:
    if isinstance(error, (VideoOpenFailure, VideoDecodeFailure, UsageError, ModelLoadFailure)):
        return error  # rerunning cannot help: the input itself must change
    if isinstance(error, StylempiError):
        wrapped = StylempiError(f"{error}{hint}")
        wrapped.exit_code = error.exit_code
        return wrapped
    if isinstance(error, OSError):
        wrapped = OutputFailure(f"{error.strerror or error}{' (' + error.filename + ')' if error.filename else ''}"
                                f"{hint}")
        return wrapped
    if isinstance(error, KeyboardInterrupt):
        wrapped = StylempiError(f"interrupted{hint}")
        wrapped.exit_code = 130
        return wrapped
    wrapped = StylempiError(f"internal error: {type(error).__name__}: {error}{hint}")
    wrapped.exit_code = 70
    return wrapped


# ---------------------------------------------------------------------------
# Rank 0: preparing
# ---------------------------------------------------------------------------

def prepare(options: RunOptions) -> Prepared:
    """Validate everything, index the input, plan chunks and find reusable work."""
    started = time.monotonic()
    input_path = Path(options.input)
    output_path = Path(options.output)
    if options.chunk_frames is not None and options.chunk_frames < 1:
        raise UsageError("--chunk-frames must be at least 1")
    if options.batch_size is not None and options.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    scale = check_scale(options.style_scale)
    with open_input(input_path) as container:  # existence, emptiness, format
        video_stream = pick_video_stream(container, options.video_stream)
        video = describe_video(container, video_stream)
    look = Look(scale=scale, preserve_colors=options.preserve_colors,
                matrix=options.color_matrix or MATRIX_NAMES[video.colour.matrix])
    look.as_dict()  # an unknown colour matrix fails here
    if output_path.exists() and input_path.exists() and os.path.samefile(output_path, input_path) \
            or output_path.resolve() == input_path.resolve():
        raise UsageError("OUTPUT is the same file as INPUT; write the result to a new file")
    if output_path.is_dir():
        raise OutputFailure(f"OUTPUT {output_path} is a directory; give a file name such as "
                            f"{output_path / (input_path.stem + '.styled.mp4')}")
    settings = choose_encoding(output_path, video, options.codec, options.crf, options.preset)
    check_encoder(settings)  # bad --preset/--crf: here, not on every rank after work started
    copy = plan_stream_copy(input_path, output_path, video.index, options.audio_codec,
                            options.reencode_audio)
    notices = encoding_notes(video, settings) + list(copy.dropped)
    _check_writable_dir(output_path.parent, "OUTPUT's directory")

    model_bytes, model_name = read_model(options.model)
    from .model import load_network
    network = load_network(model_bytes, trust=options.trust_model, name=model_name)  # fail here, not on every rank

    precision = resolve_precision(options.precision, resolve_device(options.device), network_width(network))
    index = index_frames(input_path, video.index)
    _check_one_size(input_path, index)
    chunk_frames = options.chunk_frames or auto_chunk_frames(len(index.pts))
    chunks = plan_chunks(index.pts, index.keyframes, chunk_frames)
    key = job_key(input_path, video, model_bytes, precision, settings, chunk_frames, options.compile, look)
    job_dir = _job_dir(options, output_path, key)
    if options.staging is not None:
        options.staging.lock_work(job_dir, str(options.output))  # one job per OUTPUT in Blob storage too
        options.staging.pull_chunks(job_dir)  # chunks an earlier run left in Blob storage
    pending, reused_frames = _find_reusable(job_dir, chunks)
    _write_json(job_dir / "plan.json", {
        "stylempi": __version__, "key": key, "input": str(input_path), "output": str(output_path),
        "model": model_name, "precision": precision, "encoding": settings.as_dict(), "look": look.as_dict(),
        "chunks": [{"index": c.index, "frames": c.frames, "first_pts": c.first, "last_pts": c.last}
                   for c in chunks]})
    return Prepared(
        input=str(input_path.resolve()), output=str(output_path.resolve()), video=video, chunks=chunks,
        pending=pending, settings=settings, copy=copy, job_dir=str(job_dir), model_bytes=model_bytes,
        model_name=model_name, precision=precision, key=key, device=options.device,
        batch_size=options.batch_size, total_frames=len(index.pts), compile=options.compile,
        reused_frames=reused_frames, notices=notices, plan_seconds=time.monotonic() - started, look=look)


def _check_one_size(input_path: Path, index: FrameIndex) -> None:
    """Refuse a video whose frame size changes: one encoder, opened once, takes one size."""
    change = index.size_change()
    if change is not None:
        pts, (w0, h0), (w1, h1) = change
        raise VideoOpenFailure(size_change_message(str(input_path), float(index.seconds(pts)), (w0, h0), (w1, h1)))


def size_change_message(name: str, seconds: float, old: tuple[int, int], new: tuple[int, int]) -> str:
    return (f"{name}: the video changes size from {old[0]}x{old[1]} to {new[0]}x{new[1]} at {seconds:.3f}s; "
            "stylempi needs one frame size throughout: cut the input there and stylize each piece")


def read_model(spec: str) -> tuple[bytes, str]:
    """Checkpoint bytes for ``--model``: a file path or a built-in style name."""
    from .styles import builtin_checkpoint, unknown_model_message
    path = Path(spec)
    if not path.exists():
        builtin = builtin_checkpoint(spec)
        if builtin is not None:
            return builtin.read_bytes(), f"built-in style {builtin.stem}"
        raise ModelLoadFailure(unknown_model_message(spec))
    if path.is_dir():
        raise ModelLoadFailure(f"model {spec} is a directory; give a .pth checkpoint file")
    try:
        return path.read_bytes(), f"model {spec}"
    except OSError as exc:
        raise ModelLoadFailure(f"cannot read model {spec}: {exc.strerror}") from None


def job_key(input_path: Path, video: VideoStreamInfo, model_bytes: bytes, precision: str,
            settings: EncodeSettings, chunk_frames: int, compile_mode: str = "auto",
            look: Look | None = None) -> str:
    """A digest of everything that decides the output's pixels and chunk boundaries."""
    identity = {
        "format": WORK_FORMAT, "stylempi": __version__,
        "input_size": input_path.stat().st_size, "input_sha256": file_sha256(input_path),
        "video_stream": video.index, "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "precision": precision, "encoding": settings.as_dict(), "chunk_frames": chunk_frames,
        "compile": compile_mode,  # compiled kernels round differently: never mix their chunks
    }
    if look is not None and not look.plain:  # plain jobs keep the keys they always had
        identity["look"] = look.as_dict()
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


#: The work-root lock rank 0 holds from planning to the end of the job (see stylempi.worklock).
_held_lock: WorkLock | None = None


def _job_dir(options: RunOptions, output_path: Path, key: str) -> Path:
    """Lock OUTPUT's work root, clear work of other settings from it, and make this job's dir."""
    global _held_lock
    base = Path(options.work_dir) if options.work_dir else output_path.parent
    root = base / f".{output_path.name}.stylempi"
    job_dir = root / key[:20]
    try:
        root.mkdir(parents=True, exist_ok=True)
        release_work_lock()  # a library caller planning again in the same process
        _held_lock = WorkLock.acquire(root, str(options.output))  # before anything in root is touched
        for stale in root.iterdir():  # earlier jobs for this OUTPUT with other inputs/settings
            if stale.name == LOCK_NAME or (stale.name == job_dir.name and not options.restart):
                continue
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
        job_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputFailure(f"cannot use work dir {root}: {exc.strerror or exc}") from None
    _check_writable_dir(job_dir, "the work dir")
    return job_dir


def release_work_lock(remove: bool = False) -> None:
    """Free the work-dir lock :func:`prepare` took (``run_job`` does this at its end).

    Only for callers that plan without running, e.g. to inspect the plan.
    """
    global _held_lock
    if _held_lock is not None:
        _held_lock.release(remove=remove)
        _held_lock = None


def _find_reusable(job_dir: Path, chunks: Sequence[Chunk]) -> tuple[list[int], int]:
    """Indexes of chunks still to do, and the frames already done (checksums verified)."""
    pending: list[int] = []
    reused = 0
    for chunk in chunks:
        record = _read_json(_record_path(job_dir, chunk.index))
        segment = _segment_path(job_dir, chunk.index)
        if (record and record.get("frames") == chunk.frames and record.get("first_pts") == chunk.first
                and record.get("last_pts") == chunk.last and segment.is_file()
                and file_sha256(segment) == record.get("sha256")):
            reused += chunk.frames
        else:
            pending.append(chunk.index)
    return pending, reused


def _check_writable_dir(directory: Path, what: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputFailure(f"{what} {directory} is a file, not a directory")
    if not directory.is_dir():
        raise OutputFailure(f"{what} {directory} does not exist")
    probe = directory / f".stylempi-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputFailure(f"cannot write to {what} {directory}: {exc.strerror or exc}") from None


def _segment_path(job_dir: Path | str, index: int) -> Path:
    return Path(job_dir) / f"chunk-{index:05d}.nut"


def _record_path(job_dir: Path | str, index: int) -> Path:
    return Path(job_dir) / f"chunk-{index:05d}.json"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader sees the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputFailure(f"cannot write {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------
# Every rank: working
# ---------------------------------------------------------------------------

def build_stylizer(prepared: Prepared, comm: Comm) -> Stylizer:
    """The real network on this rank's device (its own GPU among the node's ranks)."""
    import torch

    from .model import load_network

    device = resolve_device(prepared.device, comm.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(threads_per_rank(comm.local_size))
    network = load_network(prepared.model_bytes, trust=True, name=prepared.model_name)  # vetted on rank 0
    batch = prepared.batch_size or default_batch_size(device)
    # Decided from the video alone (never from N), so every N computes the same pixels.
    compile_ = resolve_compile(prepared.compile, device, prepared.total_frames)
    return NetworkStylizer(network, device, prepared.precision, batch, compile=compile_,
                           require_compile=prepared.compile == "on")


def describe_stylizer(stylizer: Stylizer) -> str:
    """"cuda fp16 batch 8", "cpu bf16 batch 2 compiled": what a user needs to know the job ran as
    expected (on the GPU, at the precision asked for); empty for stand-ins."""
    device = getattr(stylizer, "device", None)
    if device is None:
        return ""
    text = f"{device.type} {getattr(stylizer, 'precision', '?')} batch {getattr(stylizer, 'batch_size', '?')}"
    text += " compiled" if getattr(stylizer, "compiled", False) else ""
    look = getattr(stylizer, "look", None)
    return text + (f" {look.describe()}" if isinstance(look, Look) and not look.plain else "")


def _keep_heap_flat() -> None:
    """Serve frame-sized buffers straight from mmap, so memory stays flat over a long video.

    glibc raises its mmap threshold as big blocks are freed; frames (MBs each,
    allocated and freed by three threads) then come from per-thread heaps that
    fragment, and resident memory creeps up with the video's length
    (docs/benchmarks.md, "Memory"). A fixed threshold (256 KiB) stops that.
    """
    try:
        import ctypes
        ctypes.CDLL(None).mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


#: Frames waiting between the stages of a rank are bounded by bytes as well as batches.
QUEUE_BYTES = 64 * 2**20


def _queue_depth(batch_bytes: int) -> int:
    """Batches each queue between decode, network and encode may hold: 2, or 1 for big batches.

    Two batches keep every stage busy; but a GPU batch of 8 frames at 1080p is 50 MB,
    and with the encoder the slowest stage both queues stay full, so the in-flight
    frames -- not the video's length -- set a rank's peak memory (docs/benchmarks.md).
    """
    return 2 if 2 * batch_bytes <= QUEUE_BYTES else 1


def _work(prepared: Prepared, chunks: list[Chunk], stylizer: Stylizer, comm: Comm,
          bar: "_ProgressBar") -> RankStats:
    """Decode, stylize and encode this rank's chunks, three stages in parallel threads."""
    _keep_heap_flat()
    stats = RankStats(rank=comm.rank, engine=describe_stylizer(stylizer))
    batch_size = getattr(stylizer, "batch_size", 1) or 1
    sample_bytes = 1 if prepared.video.colour.depth <= 8 else 2  # 16-bit RGB for deep inputs
    depth = _queue_depth(prepared.settings.width * prepared.settings.height * 3 * sample_bytes * batch_size)
    batches = _Prefetch(_decoded_batches(prepared, chunks, batch_size, stats), depth=depth)
    encoder = _EncoderThread(prepared, stats, depth=depth)
    try:
        for chunk, pts, frames in batches:
            if frames is None:
                encoder.put((chunk, None, None))
                continue
            t = time.monotonic()
            styled = stylizer(frames)
            stats.network_s += time.monotonic() - t
            if len(styled) != len(frames):
                raise StylempiError("the stylizer returned a different number of frames than it was given")
            encoder.put((chunk, pts, styled))
            if comm.is_root:
                bar.update(len(frames) + comm.poll_progress())
            else:
                comm.report_progress(len(frames))
        encoder.close()
    finally:
        batches.stop()
        encoder.stop()
    stats.compile_s = float(getattr(stylizer, "compile_seconds", 0.0) or 0.0)
    return stats


def _decoded_batches(prepared: Prepared, chunks: list[Chunk], batch_size: int,
                     stats: RankStats) -> Iterator[tuple[Chunk, list[int] | None, list[np.ndarray] | None]]:
    for chunk in chunks:
        pts: list[int] = []
        frames: list[np.ndarray] = []
        t = time.monotonic()
        for p, rgb in decode_frames(prepared.input, prepared.video.index, chunk.pts, stats.damaged,
                                    chunk.seek_from, prepared.video.colour):
            if rgb.shape[:2] != (prepared.video.height, prepared.video.width):  # between sampled keyframes
                raise VideoDecodeFailure(size_change_message(
                    prepared.input, float(p * prepared.video.time_base),
                    (prepared.video.width, prepared.video.height), (rgb.shape[1], rgb.shape[0])))
            pts.append(p)
            frames.append(rgb)
            if len(frames) == batch_size:
                stats.decode_s += time.monotonic() - t
                yield chunk, pts, frames
                pts, frames = [], []
                t = time.monotonic()
        stats.decode_s += time.monotonic() - t
        if frames:
            yield chunk, pts, frames
        yield chunk, None, None  # end of chunk


class _Prefetch:
    """Run an iterator in a thread, a few items ahead (decoding overlaps the network)."""

    _END = object()

    def __init__(self, items: Iterator, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fill, args=(items,), daemon=True)
        self._thread.start()

    def _fill(self, items: Iterator) -> None:
        try:
            for item in items:
                while not self._stopped.is_set():
                    try:
                        self._queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stopped.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        self._queue.put(self._END)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def stop(self) -> None:
        self._stopped.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass


class _EncoderThread:
    """Encode stylized batches into segment files while the network runs on the next."""

    def __init__(self, prepared: Prepared, stats: RankStats, depth: int = 2):
        self._prepared = prepared
        self._stats = stats
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._writer: SegmentWriter | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
        if self._writer is not None:
            self._writer.abort()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                t = time.monotonic()
                self._handle(*item)
                self._stats.encode_s += time.monotonic() - t
        except OSError as exc:  # a full disk, a read-only mount...
            self._error = OutputFailure(f"cannot write a chunk in {self._prepared.job_dir}: "
                                        f"{exc.strerror or exc}")
            if self._writer is not None:
                self._writer.abort()
                self._writer = None
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self._error = exc
            if self._writer is not None:
                self._writer.abort()
                self._writer = None

    def _handle(self, chunk: Chunk, pts: list[int] | None, frames: list[np.ndarray] | None) -> None:
        job_dir = Path(self._prepared.job_dir)
        final = _segment_path(job_dir, chunk.index)
        partial = final.with_name(final.stem + ".partial.nut")
        if frames is None:  # end of chunk: make it durable
            writer, self._writer = self._writer, None
            if writer is None or writer.frames != chunk.frames:
                raise StylempiError(f"chunk {chunk.index} produced {writer.frames if writer else 0} frames, "
                                    f"planned {chunk.frames}")
            writer.close()
            digest = file_sha256(partial)
            try:
                os.replace(partial, final)
            except OSError as exc:
                raise OutputFailure(f"cannot write {final}: {exc.strerror or exc}") from None
            _write_json(_record_path(job_dir, chunk.index), {
                "index": chunk.index, "frames": chunk.frames, "first_pts": chunk.first,
                "last_pts": chunk.last, "sha256": digest})
            if self._prepared.staging is not None:
                self._prepared.staging.push_chunk(final, _record_path(job_dir, chunk.index))
            self._stats.chunks.append(ChunkResult(chunk.index, chunk.frames, digest))
            return
        if self._writer is None:
            self._writer = SegmentWriter(partial, self._prepared.settings)
        for p, rgb in zip(pts, frames):
            if rgb.shape[:2] != (self._prepared.settings.height, self._prepared.settings.width):
                raise StylempiError(f"the stylizer changed the frame size to {rgb.shape[1]}x{rgb.shape[0]}")
            self._writer.write(p, rgb)


def _discard_work(prepared: Prepared) -> None:
    """Remove the job's work dir, its lock file and the work root when empty (any rank may call)."""
    job_dir = Path(prepared.job_dir)
    shutil.rmtree(job_dir, ignore_errors=True)
    release_work_lock(remove=True)  # rank 0; another rank removes the file below (the job is ending)
    (job_dir.parent / LOCK_NAME).unlink(missing_ok=True)
    try:
        job_dir.parent.rmdir()
    except OSError:
        pass


# ---------------------------------------------------------------------------
# Rank 0: assembling
# ---------------------------------------------------------------------------

def _finish(prepared: Prepared, ranks: Sequence[RankStats]) -> None:
    job_dir = Path(prepared.job_dir)
    done = {c.index for r in ranks for c in r.chunks}
    missing = [i for i in prepared.pending if i not in done]
    if missing:
        raise StylempiError(f"chunks {missing[:5]} were not produced; rerun the same command to finish them")
    segments = [_segment_path(job_dir, c.index) for c in prepared.chunks]
    if prepared.staging is not None:
        prepared.staging.fetch_chunks(job_dir, [c.index for c in prepared.chunks])
    assemble(prepared.input, prepared.video, segments, prepared.copy, prepared.output)
    if prepared.staging is not None:
        prepared.output = prepared.staging.publish(prepared.output)  # upload, then drop remote chunks
    shutil.rmtree(job_dir, ignore_errors=True)
    release_work_lock(remove=True)
    try:
        job_dir.parent.rmdir()  # the per-OUTPUT work root, when nothing else is in it
    except OSError:
        pass


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------

#: ``STYLEMPI_PROGRESS`` values that force one style or the other.
_LIVE_VALUES = {"1", "live", "bar", "on", "yes", "true"}
_LINE_VALUES = {"0", "lines", "log", "off", "no", "false"}
#: Variables of batch services whose output always goes to a log, whatever a tty test says.
_BATCH_VARS = ("AZUREML_RUN_ID", "AZ_BATCH_TASK_ID")


def progress_style(env: Mapping[str, str], stderr_is_tty: bool, launcher_on_tty: bool) -> str:
    """``"live"`` (a redrawn bar) or ``"lines"`` (a plain line now and then), from the environment.

    Under ``mpirun`` a rank's stderr is a pipe to the launcher even when the launcher
    writes to a terminal, so the launcher's own stderr counts too (``launcher_on_tty``);
    a batch job's launcher writes to a log file, which keeps the plain lines there.
    """
    forced = env.get("STYLEMPI_PROGRESS", "").strip().lower()
    if forced in _LIVE_VALUES:
        return "live"
    if forced in _LINE_VALUES:
        return "lines"
    if any(env.get(var) for var in _BATCH_VARS):
        return "lines"
    return "live" if stderr_is_tty or launcher_on_tty else "lines"


def _launcher_on_tty(env: Mapping[str, str]) -> bool:
    """Whether the MPI launcher that started this rank writes its stderr to a terminal.

    Open MPI starts local ranks as children of ``prterun`` (remote ones under ``prted``,
    whose stderr is no terminal) and forwards their output to its own stderr.
    """
    if not any(var in env for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK")):
        return False
    try:
        target = os.readlink(f"/proc/{os.getppid()}/fd/2")
    except OSError:
        return False
    return target.startswith(("/dev/pts/", "/dev/tty"))


class _ProgressBar:
    """One bar on rank 0 for frames done over all ranks, with rate and ETA.

    On a terminal (also under ``mpirun`` run from one) it is a live tqdm bar; in a
    log file (Slurm, Azure ML) it is a plain line every :attr:`LOG_EVERY` seconds
    (``STYLEMPI_PROGRESS_EVERY``), so logs show progress without carriage-return
    noise. ``STYLEMPI_PROGRESS=1`` forces the live bar, ``=0`` the plain lines.
    """

    LOG_EVERY = 30.0

    def __init__(self, prepared: Prepared, silent: bool, callback: Callable[[int, int], None] | None):
        self._callback = callback
        self._done = prepared.reused_frames
        self._start_done = self._done
        self._total = prepared.total_frames
        self._bar = None
        self._log = False
        self._started = self._last_log = time.monotonic()
        if not silent:
            for notice in prepared.notices:
                print(f"stylempi: note: {notice}", file=sys.stderr)
            env = os.environ
            if progress_style(env, sys.stderr.isatty(), _launcher_on_tty(env)) == "live":
                from tqdm import tqdm
                self._bar = tqdm(total=self._total, initial=self._done, unit="frame", desc="stylize",
                                 file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
            else:
                self._log = True
                self._every = _seconds(os.environ.get("STYLEMPI_PROGRESS_EVERY"), self.LOG_EVERY)

    def update(self, frames: int) -> None:
        if not frames:
            return
        self._done += frames
        if self._bar is not None:
            self._bar.update(frames)
        elif self._log and time.monotonic() - self._last_log >= self._every:
            self._last_log = time.monotonic()
            rate = (self._done - self._start_done) / max(1e-9, self._last_log - self._started)
            eta = (self._total - self._done) / rate if rate else float("inf")
            print(f"stylempi: progress: {self._done}/{self._total} frames "
                  f"({100 * self._done // max(1, self._total)}%), {rate:.2f} frames/s, ETA {eta:.0f} s",
                  file=sys.stderr, flush=True)
        if self._callback is not None:
            self._callback(self._done, self._total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _seconds(text: str | None, default: float) -> float:
    """A positive number of seconds from an environment variable, else ``default``."""
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value > 0 else default
