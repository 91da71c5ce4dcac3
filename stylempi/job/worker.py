"""Every rank: decode, stylize and encode its chunks, three stages in parallel threads.

::

    decode thread (_Prefetch)        main thread             encoder thread (_EncoderThread)
    seek to the chunk's keyframe,  ─► stylizer(batch)  ─►    SegmentWriter -> chunk-N.partial.nut;
    decode its frames in batches      (the network)          at the chunk's end: rename, record,
                                                             push to Blob storage (the job's Staging)

Queues between the stages are bounded (:func:`_queue_depth`), so a rank's memory
depends on the batch size, never on the video's length.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..colour.look import Look
from ..errors import OutputFailure, StylempiError, VideoDecodeFailure
from ..media import SegmentWriter, decode_frames, to_planes
from ..media.cuts import CutDetector, last_cut
from ..network.placement import default_batch_size, resolve_compile, resolve_device, threads_per_rank
from ..network.stylize import INPUT_KINDS, PLANES, NetworkStylizer, Stylizer
from ..network.temporal_filter import FilterSettings, TemporalFilter
from ..options import Staging
from ..storage.files import sha256_file
from .comm import Comm
from .plan import Chunk, warmup_frames
from .prepare import Prepared, size_change_message
from .progress import ProgressBar
from .workfiles import partial_segment_path, segment_path, write_record


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
    #: Seconds in the temporal filter (flow, masks, blend) and frames stylized only to warm it up.
    filter_s: float = 0.0
    warmup_frames: int = 0
    #: Warm-up frames before a scene cut, which the filter would forget there: not stylized.
    warmup_skipped: int = 0
    damaged: list[int] = field(default_factory=list)
    #: Where and how this rank's network ran, e.g. "cuda fp16 batch 8" (see :func:`describe_stylizer`).
    engine: str = ""
    #: Seconds this rank spent compiling the network or loading it from the compile cache
    #: (part of ``network_s``).
    compile_s: float = 0.0


def build_stylizer(prepared: Prepared, comm: Comm, stage: Callable[[str], None] | None = None) -> Stylizer:
    """The real network on this rank's device (its own GPU among the node's ranks).

    STAGE (rank 0's :meth:`ProgressBar.stage`) is told of the model's load and of the
    compile, before each starts."""
    import torch

    from ..network.model import load_network

    device = resolve_device(prepared.device, comm.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(threads_per_rank(comm.local_size))
    if stage is not None:
        stage(f"loading {prepared.model_name} onto {device.type}")
    network = load_network(prepared.model_bytes, trust=True, name=prepared.model_name)  # vetted on rank 0
    batch = prepared.batch_size or default_batch_size(device)
    # Decided from the video alone (never from N), so every N computes the same pixels.
    compile_ = resolve_compile(prepared.compile, device, prepared.total_frames)
    stylizer = NetworkStylizer(network, device, prepared.precision, batch, compile=compile_,
                               require_compile=prepared.compile == "on", stage=stage)
    if prepared.convert == "torch":
        from ..network.planes import PlanesStylizer
        return PlanesStylizer(stylizer, prepared.video.colour, prepared.settings.colour, prepared.chroma_location)
    return stylizer


def describe_stylizer(stylizer: Stylizer, look: Look) -> str:
    """"cuda fp16 batch 8", "cpu bf16 batch 2 compiled": what a user needs to know the job ran as
    expected (on the GPU, at the precision asked for), and the look around it."""
    text = f"{stylizer.device.type} {stylizer.precision} batch {stylizer.batch_size}"
    text += " compiled" if stylizer.compiled else ""
    return text + ("" if look.plain else f" {look.describe()}")


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


def work(prepared: Prepared, chunks: list[Chunk], stylizer: Stylizer, comm: Comm, bar: ProgressBar,
         staging: Staging) -> RankStats:
    """Decode, stylize and encode this rank's chunks, three stages in parallel threads (module docstring)."""
    _keep_heap_flat()
    stats = RankStats(rank=comm.rank, engine=describe_stylizer(stylizer, prepared.look))
    if stylizer.input_kind not in INPUT_KINDS:
        raise StylempiError(f"the stylizer's input_kind is {stylizer.input_kind!r}, not one of {INPUT_KINDS}")
    batch_size = max(1, stylizer.batch_size)
    sample_bytes = 1 if prepared.video.colour.depth <= 8 else 2  # 16-bit RGB for deep inputs
    depth = _queue_depth(prepared.settings.width * prepared.settings.height * 3 * sample_bytes * batch_size)
    device = stylizer.device
    gpu = device.index if device.type == "cuda" else None
    frame_reader = _frame_reader(prepared, device, stylizer.input_kind)
    batches = _Prefetch(_decoded_batches(prepared, chunks, batch_size, stats, frame_reader), depth=depth)
    encoder = _EncoderThread(prepared, stats, staging, depth=depth, gpu=gpu)
    smoother = _ChunkFilter(prepared.temporal, batch_size) if prepared.temporal is not None else None
    try:
        for chunk, pts, frames, kind in batches:
            if kind == REUSE:  # the warm-up frames are the tail of the chunk this rank just did
                t = time.monotonic()
                smoother.warm_up_again(chunk, pts)
                stats.filter_s += time.monotonic() - t
                continue
            if kind == SKIP:  # warm-up frames before a cut: only the cut detector sees them
                smoother.skip(chunk, pts, frames)
                stats.warmup_skipped += len(frames)
                continue
            if frames is None:
                encoder.put((chunk, None, None))
                continue
            t = time.monotonic()
            styled = stylizer(frames)
            stats.network_s += time.monotonic() - t
            if len(styled) != len(frames):
                raise StylempiError("the stylizer returned a different number of frames than it was given")
            if smoother is not None:
                t = time.monotonic()
                styled = smoother(chunk, pts, frames, styled)
                stats.filter_s += time.monotonic() - t
            if kind == WARM:  # only there to give the filter the state it would have mid-shot
                stats.warmup_frames += len(frames)
                continue
            encoder.put((chunk, pts, styled))
            if comm.is_root:
                bar.update(len(frames) + comm.poll_progress())
            else:
                comm.report_progress(len(frames))
        encoder.close()
    finally:
        batches.stop()
        encoder.stop()
    stats.compile_s = float(stylizer.compile_seconds)
    return stats


def _frame_reader(prepared: Prepared, device, input_kind: str) -> dict:
    """How this rank's frames are decoded and handed over, in the form the stylizer takes: RGB
    arrays, or YUV planes (the torch colour path), CUDA planes when NVDEC decodes (``--decode gpu``).
    A stylizer taking RGB gets RGB under ``--convert torch`` too (swscale converts)."""
    colour = prepared.video.colour
    if prepared.decode == "gpu":
        from ..media.nvdec import cuda_planes, nvdec
        if input_kind == PLANES:
            return {"hwaccel": nvdec(device), "convert": lambda frame: cuda_planes(frame, colour.depth)}
        return {"hwaccel": nvdec(device, keep_on_gpu=False), "convert": None}
    if input_kind == PLANES:
        return {"convert": lambda frame: to_planes(frame, colour)}
    return {}


def picture_size(picture) -> tuple[int, int]:
    """Width and height of an RGB array or of a frame's planes (Y first)."""
    height, width = (picture[0] if isinstance(picture, tuple) else picture).shape[:2]
    return width, height


#: What a decoded batch is for: the chunk's own frames, frames decoded and stylized only to warm
#: the temporal filter up, warm-up frames this rank stylized a moment ago (no pictures sent), or
#: warm-up frames before a scene cut, which only the cut detector needs.
OWN, WARM, REUSE, SKIP = "own", "warm", "reuse", "skip"


class _ChunkFilter:
    """The temporal filter over one chunk's frames (its warm-up first), reset at every new chunk
    and at scene cuts, so a chunk's output depends on the input alone, whichever rank runs it.

    It keeps the last network frames of the chunk it saw, and the filter their flows, enough for
    the next chunk's warm-up (stylempi.plan.warmup_frames): when this rank runs the next chunk
    too, the warm-up costs no network work and no optical flow, only the blends.
    """

    def __init__(self, settings: FilterSettings, batch_size: int):
        self._keep = settings.warmup + batch_size
        self._filter = TemporalFilter(settings, remember=self._keep)
        self._cuts = CutDetector()
        self._chunk: int | None = None
        self._tail: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _start(self, chunk: Chunk) -> None:
        if chunk.index != self._chunk:
            self._chunk = chunk.index
            self._filter.reset()
            self._cuts.reset()

    def _keep_frames(self, pts: list[int], frames: list[np.ndarray], styled: list | None) -> None:
        for i, (p, frame) in enumerate(zip(pts, frames)):
            self._tail[p] = (frame, None if styled is None else styled[i])
        while len(self._tail) > self._keep:
            del self._tail[next(iter(self._tail))]

    def __call__(self, chunk: Chunk, pts: list[int], frames: list[np.ndarray], styled: list[np.ndarray]
                 ) -> list[np.ndarray]:
        self._start(chunk)
        self._keep_frames(pts, frames, styled)
        return [self._filter.step(frame, out, cut=self._cuts.is_cut(frame), key=p)
                for p, frame, out in zip(pts, frames, styled)]

    def skip(self, chunk: Chunk, pts: list[int], frames: list[np.ndarray]) -> None:
        """Warm-up frames before a cut (:func:`~stylempi.media.cuts.last_cut`): the filter resets at
        the cut, so it needs neither them nor their network frames; the cut detector sees them, so
        its decisions are those of a whole warm-up."""
        self._start(chunk)
        self._keep_frames(pts, frames, None)
        for frame in frames:
            self._cuts.is_cut(frame)

    def warm_up_again(self, chunk: Chunk, pts: list[int]) -> None:
        """Warm up for ``chunk`` on frames stylized as the tail of the chunk before it (the filter
        only from the last cut among them, as :meth:`skip`)."""
        missing = [p for p in pts if p not in self._tail]
        if missing:
            raise StylempiError(f"chunk {chunk.index}: warm-up frames {missing[:3]} were not kept")
        self._start(chunk)
        cuts = [self._cuts.is_cut(self._tail[p][0]) for p in pts]
        start = max(i for i, cut in enumerate(cuts) if cut)
        for p, cut in zip(pts[start:], cuts[start:]):
            frame, out = self._tail[p]
            if out is None:  # a frame a warm-up skipped comes after the last cut here: a planning bug
                raise StylempiError(f"chunk {chunk.index}: warm-up frame {p} was never stylized")
            self._filter.step(frame, out, cut=cut, key=p)


def _decoded_batches(prepared: Prepared, chunks: list[Chunk], batch_size: int, stats: RankStats,
                     frame_reader: dict) -> Iterator[tuple[Chunk, list[int] | None, list | None, str]]:
    """Each chunk's frames in batches, after its filter warm-up (:data:`SKIP`, :data:`WARM` or
    :data:`REUSE` batches, see stylempi.plan.warmup_frames), then an end-of-chunk item (frames None)."""
    done: int | None = None  # the chunk this rank decoded last
    warmup = prepared.temporal.warmup if prepared.temporal is not None else 0
    for chunk in chunks:
        wanted, seek_from = warmup_frames(prepared.chunks, chunk.index, warmup, batch_size)
        if wanted and done == chunk.index - 1:
            yield chunk, list(wanted), None, REUSE
        elif wanted:
            t = time.monotonic()
            scratch: list[int] = []  # a damaged warm-up frame is reported by the chunk that owns it
            # decoded as the chunk's own frames are (NVDEC where the job uses it), or a reused
            # warm-up and a decoded one would differ; the chunk's first frame too, for its cut
            warm = list(decode_frames(prepared.input, prepared.video.index, (*wanted, chunk.first), scratch,
                                      seek_from, prepared.video.colour, **frame_reader))
            stats.decode_s += time.monotonic() - t
            # Before the last cut (the chunk's first frame, it may be) the filter forgets all:
            # the network need not paint those frames.
            start = last_cut([picture for _, picture in warm])
            warm.pop()
            if start:
                yield chunk, [q for q, _ in warm[:start]], [w for _, w in warm[:start]], SKIP
            for i in range(start, len(warm), batch_size):
                part = warm[i:i + batch_size]
                yield chunk, [q for q, _ in part], [w for _, w in part], WARM
        pts: list[int] = []
        frames: list = []
        t = time.monotonic()
        for p, picture in decode_frames(prepared.input, prepared.video.index, chunk.pts, stats.damaged,
                                        chunk.seek_from, prepared.video.colour, **frame_reader):
            if picture_size(picture) != (prepared.video.width, prepared.video.height):  # between sampled keyframes
                raise VideoDecodeFailure(size_change_message(
                    prepared.input, float(p * prepared.video.time_base),
                    (prepared.video.width, prepared.video.height), picture_size(picture)))
            pts.append(p)
            frames.append(picture)
            if len(frames) == batch_size:
                stats.decode_s += time.monotonic() - t
                yield chunk, pts, frames, OWN
                pts, frames = [], []
                t = time.monotonic()
        stats.decode_s += time.monotonic() - t
        if frames:
            yield chunk, pts, frames, OWN
        yield chunk, None, None, OWN  # end of chunk
        done = chunk.index


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

    def __init__(self, prepared: Prepared, stats: RankStats, staging: Staging, depth: int = 2,
                 gpu: int | None = None):
        self._prepared = prepared
        self._gpu = gpu  # this rank's GPU, where an NVENC encoder opens its session
        self._stats = stats
        self._staging = staging
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
        partial = partial_segment_path(self._prepared.job_dir, chunk.index)
        if frames is None:  # end of chunk: make it durable
            self._finish_chunk(chunk, partial)
            return
        if self._writer is None:
            self._writer = SegmentWriter(partial, self._prepared.settings, self._gpu)
        for p, picture in zip(pts, frames):
            if picture_size(picture) != (self._prepared.settings.width, self._prepared.settings.height):
                raise StylempiError("the stylizer changed the frame size to {}x{}".format(*picture_size(picture)))
            self._writer.write(p, picture)

    def _finish_chunk(self, chunk: Chunk, partial: Path) -> None:
        """The chunk's last frame is written: rename its segment into place, then record it."""
        writer, self._writer = self._writer, None
        if writer is None or writer.frames != chunk.frames:
            raise StylempiError(f"chunk {chunk.index} produced {writer.frames if writer else 0} frames, "
                                f"planned {chunk.frames}")
        writer.close()
        digest = sha256_file(partial)
        final = segment_path(self._prepared.job_dir, chunk.index)
        try:
            os.replace(partial, final)
        except OSError as exc:
            raise OutputFailure(f"cannot write {final}: {exc.strerror or exc}") from None
        record = write_record(self._prepared.job_dir, chunk, digest)
        self._staging.push_chunk(final, record)
        self._stats.chunks.append(ChunkResult(chunk.index, chunk.frames, digest))
