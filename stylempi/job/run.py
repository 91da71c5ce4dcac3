"""The MPI job: plan on rank 0, stylize chunks on every rank, assemble on rank 0.

::

    rank 0                         every rank (0 included)             rank 0
    probe, index frames,  scatter  decode its chunks (seek+check),  gather  join segments by packet
    plan chunks, load   ───────►   stylize in batches, encode   ───────►  copy, copy audio/subs,
    model, check resume            segment files into work dir            rename onto OUTPUT
    (stylempi.job.prepare)             (stylempi.job.worker)                      (_finish here)

Only chunk *lists* and small records travel over MPI (stylempi.job.comm); frames
never do. Each rank reads the input and writes its encoded segments on the
filesystem all ranks share, so rank 0's serial work is the index (a packet
scan) and the final packet-copy join, both far faster than decoding or
encoding. With Blob URLs and no shared filesystem, a :class:`Staging`
(stylempi.job.staging) gives each rank local copies and moves the
segments through Blob storage instead.

Finished chunks are durable in the work dir with a checksum (stylempi.job.workfiles),
under a directory named by a key over everything that changes pixels (input
content, model, precision, encoder settings, chunking); rerunning the same
command reuses them. Rank 0's progress bar is stylempi.job.progress.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..colour.look import LookStylizer
from ..errors import (InternalError, Interrupted, ModelLoadFailure, OutputFailure, StylempiError, UsageError,
                      VideoDecodeFailure, VideoOpenFailure, memory_failure, one_line, out_of_memory)
from ..media import assemble
from ..media.engines import describe_engines
from ..network.stylize import Stylizer
from ..options import LocalFiles, RunOptions, Staging
from .comm import Comm, get_comm
from .plan import Chunk, assign_chunks
from .prepare import Prepared, prepare, release_work_lock
from .progress import ProgressBar
from .worker import RankStats, build_stylizer, work
from .workfiles import segment_path
from .worklock import LOCK_NAME, output_lock_path

__all__ = ["RunOptions", "Staging", "Summary", "Prepared", "run_job", "prepare", "release_work_lock",
           "build_stylizer"]


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
    #: The media engines, e.g. "decode cpu, convert ffmpeg, encode libx264" (stylempi.media.engines).
    media: str = ""
    #: The temporal filter's seconds, and the frames stylized only to warm it up, summed over ranks:
    #: what ``--temporal off`` would save.
    filter_s: float = 0.0
    warmup_frames: int = 0

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
                f"{' (' + ', '.join(self.engines) + ')' if self.engines else ''}"
                f"{', ' + self.media if self.media else ''}; {self.chunks} chunks, "
                f"{self.reused_chunks} reused; plan {self.plan_s:.1f} s, stylize {self.work_s:.1f} s "
                f"(summed over ranks: decode {self.decode_s:.1f} s, network {self.network_s:.1f} s, "
                f"encode {self.encode_s:.1f} s), assemble {self.assemble_s:.1f} s"
                f"{f', compile {self.compile_s:.1f} s' if self.compile_s else ''}"
                f"{self._filter_part()} -> {self.output}")

    def _filter_part(self) -> str:
        if not (self.filter_s or self.warmup_frames):
            return ""  # --temporal off, or nothing left to stylize
        return (f"; temporal filter {self.filter_s:.1f} s and {self.warmup_frames} warm-up "
                f"frame{'s' if self.warmup_frames != 1 else ''} (summed over ranks)")


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
    staging = options.staging or LocalFiles()
    prepared = comm.on_root(lambda: prepare(options))
    input_, job_dir = staging.rank_paths(prepared.input, prepared.job_dir)  # this rank's own copies
    prepared = dataclasses.replace(prepared, input=input_, job_dir=job_dir)
    warmup = prepared.temporal.warmup if prepared.temporal is not None else 0
    assignments = (assign_chunks([prepared.chunks[i] for i in prepared.pending], comm.size, warmup)
                   if comm.is_root else None)
    mine: list[Chunk] = comm.scatter(assignments)

    work_started = time.monotonic()
    bar = ProgressBar(prepared.reused_frames, prepared.total_frames, prepared.notices,
                      silent=options.quiet or not comm.is_root, callback=progress)
    stats = _work_or_stop(prepared, mine, stylizer_factory, comm, bar, staging)
    comm.finish_progress()
    if comm.is_root:
        while not comm.all_done:
            bar.update(comm.poll_progress(block_until_done=True))
    bar.close()
    gathered = comm.gather(stats)
    work_s = time.monotonic() - work_started
    return comm.on_root(lambda: _summary(prepared, gathered or [], staging, started, work_s, comm.size,
                                         bar.stage))


def _work_or_stop(prepared: Prepared, mine: list[Chunk], stylizer_factory: StylizerFactory | None, comm: Comm,
                  bar: ProgressBar, staging: Staging) -> RankStats:
    """This rank's chunks, done; any failure ends the whole job (one line, naming the rank)."""
    try:
        if stylizer_factory is None:
            stylizer = build_stylizer(prepared, comm, stage=bar.stage)  # bar.stage prints on rank 0 only
        else:
            stylizer = stylizer_factory(prepared, comm)
        if not prepared.look.plain:
            stylizer = LookStylizer(stylizer, prepared.look)
        return work(prepared, mine, stylizer, comm, bar, staging)
    except BaseException as error:  # noqa: BLE001 - every failure must end the whole job
        hint = (f" (finished chunks are kept in {prepared.job_dir}: rerun the same command to resume)")
        if isinstance(error, (VideoOpenFailure, VideoDecodeFailure)):
            _discard_work(prepared)  # the input itself must change: its chunks will never be reused
        if comm.size == 1:
            bar.close()
            if isinstance(error, (StylempiError, KeyboardInterrupt, OSError)) or out_of_memory(error):
                raise _with_hint(error, hint) from None
            raise
        comm.abort(_with_hint(error, hint))
        raise  # abort does not return under MPI


def _summary(prepared: Prepared, ranks: Sequence[RankStats], staging: Staging, started: float, work_s: float,
             size: int, stage: Callable[[str], None]) -> Summary:
    """Rank 0: assemble OUTPUT, then sum up the job."""
    assemble_started = time.monotonic()
    output = _finish(prepared, ranks, staging, stage)
    assembled = time.monotonic() - assemble_started
    return Summary(
        output=output, frames=prepared.total_frames, chunks=len(prepared.chunks),
        reused_chunks=len(prepared.chunks) - len(prepared.pending),
        wall_s=time.monotonic() - started, plan_s=prepared.plan_seconds, work_s=work_s,
        assemble_s=assembled, decode_s=sum(r.decode_s for r in ranks),
        network_s=sum(r.network_s for r in ranks), encode_s=sum(r.encode_s for r in ranks),
        ranks=size, engines=sorted({r.engine for r in ranks if r.engine}),
        compile_s=max((r.compile_s for r in ranks), default=0.0),
        damaged_s=sorted(float(p * prepared.video.time_base) for r in ranks for p in r.damaged),
        media=describe_engines(prepared.decode, prepared.convert, prepared.settings.codec),
        filter_s=sum(r.filter_s for r in ranks), warmup_frames=sum(r.warmup_frames for r in ranks))


def _with_hint(error: BaseException, hint: str) -> BaseException:
    if isinstance(error, (VideoOpenFailure, VideoDecodeFailure, UsageError, ModelLoadFailure)):
        return error  # rerunning cannot help: the input itself must change
    if isinstance(error, StylempiError):
        return StylempiError(f"{error}{hint}", exit_code=error.exit_code)
    if out_of_memory(error):  # the machine's limit, not a bug: NumPy's MemoryError, torch's RuntimeError
        return memory_failure(error, hint)
    if isinstance(error, OSError):
        return OutputFailure(f"{error.strerror or error}{' (' + error.filename + ')' if error.filename else ''}"
                             f"{hint}")
    if isinstance(error, KeyboardInterrupt):
        return Interrupted(f"interrupted{hint}")
    return InternalError(f"internal error: {type(error).__name__}: {error}{hint}")


# ---------------------------------------------------------------------------
# When the input itself is bad
# ---------------------------------------------------------------------------

def _discard_work(prepared: Prepared) -> None:
    """Remove the job's work dir, its lock file and the work root when empty (any rank may call)."""
    job_dir = Path(prepared.job_dir)
    # Renamed first, then removed: the other ranks go on writing chunk files by name until the
    # launcher stops them, and a file one creates while the tree is being removed would keep the
    # dir alive; under the new name no rank can create anything in it.
    doomed = job_dir.with_name(f"{job_dir.name}.discarded-{os.getpid()}")
    try:
        os.rename(job_dir, doomed)
    except OSError:
        doomed = job_dir
    shutil.rmtree(doomed, ignore_errors=True)
    release_work_lock(remove=True)  # rank 0; another rank removes the files below (the job is ending)
    (job_dir.parent / LOCK_NAME).unlink(missing_ok=True)
    output_lock_path(prepared.output).unlink(missing_ok=True)
    try:
        job_dir.parent.rmdir()
    except OSError:
        pass


# ---------------------------------------------------------------------------
# Rank 0: assembling
# ---------------------------------------------------------------------------

def _finish(prepared: Prepared, ranks: Sequence[RankStats], staging: Staging,
            stage: Callable[[str], None]) -> str:
    """Join every chunk into OUTPUT and remove the work; returns OUTPUT as shown to the user.
    STAGE names the join (and the upload, where OUTPUT is in Blob storage) before it starts."""
    job_dir = Path(prepared.job_dir)
    done = {c.index for r in ranks for c in r.chunks}
    missing = [i for i in prepared.pending if i not in done]
    if missing:
        raise StylempiError(f"chunks {missing[:5]} were not produced; rerun the same command to finish them")
    segments = [segment_path(job_dir, c.index) for c in prepared.chunks]
    stage(f"joining {len(segments)} chunk{'s' if len(segments) != 1 else ''} into {one_line(prepared.output)}")
    staging.fetch_chunks(str(job_dir), [c.index for c in prepared.chunks])
    assemble(prepared.input, prepared.video, segments, prepared.copy, prepared.output,
             prepared.settings.pts_offset)
    shown = staging.publish(prepared.output)  # upload, then drop remote chunks
    shutil.rmtree(job_dir, ignore_errors=True)
    release_work_lock(remove=True)
    try:
        job_dir.parent.rmdir()  # the per-OUTPUT work root, when nothing else is in it
    except OSError:
        pass
    return shown
