"""What a job is asked to do: :class:`RunOptions` (everything ``stylempi run`` takes), and the
:class:`Staging` protocol through which a job gets and gives its files (local paths here,
Blob storage in stylempi.storage.staging).

It sits between the engines it names defaults of (stylempi.network, stylempi.media) and the job
(stylempi.job) that reads it; it imports nothing from stylempi.job, stylempi.storage or above.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .media.engines import DEFAULT_CONVERT, DEFAULT_DECODE
from .network.placement import DEFAULT_COMPILE, DEFAULT_DEVICE, DEFAULT_PRECISION


class Staging(Protocol):
    """What the job needs from Blob staging (stylempi.storage.staging.JobStaging), in the order it asks.

    Rank 0 calls :meth:`lock_work` and :meth:`pull_chunks` while planning; every
    rank calls :meth:`rank_paths` after the plan's broadcast and :meth:`push_chunk`
    for each chunk it finishes; rank 0 calls :meth:`fetch_chunks` and
    :meth:`publish` around the join.
    """

    def lock_work(self, job_dir: str, output: str) -> None:
        """Hold the work root for this job's life (one job per OUTPUT)."""

    def pull_chunks(self, job_dir: str) -> None:
        """Bring an earlier run's finished chunks into JOB_DIR."""

    def rank_paths(self, input: str, job_dir: str) -> tuple[str, str]:
        """The input file and the job dir this rank reads and writes."""

    def push_chunk(self, segment: Path, record: Path) -> None:
        """Make a chunk finished on this rank durable where every rank finds it."""

    def fetch_chunks(self, job_dir: str, indexes: list[int]) -> None:
        """Bring every rank's segments of INDEXES into JOB_DIR, checked."""

    def publish(self, local_output: str) -> str:
        """Put the assembled OUTPUT where the user asked; returns the name to show."""


class LocalFiles:
    """The :class:`Staging` of a job on local (or shared) paths: nothing to move."""

    def lock_work(self, job_dir: str, output: str) -> None:
        pass

    def pull_chunks(self, job_dir: str) -> None:
        pass

    def rank_paths(self, input: str, job_dir: str) -> tuple[str, str]:
        return input, job_dir

    def push_chunk(self, segment: Path, record: Path) -> None:
        pass

    def fetch_chunks(self, job_dir: str, indexes: list[int]) -> None:
        pass

    def publish(self, local_output: str) -> str:
        return local_output


@dataclass
class RunOptions:
    """Everything ``stylempi run`` takes; the CLI fills it from its flags."""

    input: str
    output: str
    model: str
    trust_model: bool = False
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    #: Where frames are decoded: cpu, gpu (NVDEC) or auto (stylempi.media.engines.choose_decode).
    decode: str = DEFAULT_DECODE
    #: What converts YUV <-> RGB: ffmpeg, torch or auto (stylempi.media.engines.choose_convert).
    convert: str = DEFAULT_CONVERT
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
    #: torch.compile the network: auto (CPU, long enough videos), on, off (network.placement.resolve_compile).
    compile: str = DEFAULT_COMPILE
    #: The network sees each frame resized by this factor (stroke size); 1 = as it is.
    style_scale: float = 1.0
    #: Keep the input's chroma, take only the stylized luma (stylempi.colour.look).
    preserve_colors: bool = False
    #: The colour matrix for ``preserve_colors`` (a stylempi.colour.look.LUMA_COEFFICIENTS name);
    #: None = the input's own (the one its conversions use).
    color_matrix: str | None = None
    #: The flow-guided temporal filter after the network (stylempi.network.temporal_filter): on or off.
    temporal: str = "on"
    #: Blob storage staging (stylempi.storage.staging.staged_run sets it) when a path is a Blob URL.
    staging: Staging | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options of parsed ``stylempi run`` arguments: each field from the flag of its
        name (``stylempi run`` and ``watch --run-args`` both build them this way)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})
