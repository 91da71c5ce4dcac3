"""What a job is asked to do: :class:`RunOptions` (everything ``stylempi run`` takes), and the
:class:`Staging` protocol through which a job gets and gives its files (local paths here,
Blob storage in stylempi.job.staging).

It sits between the engines it names defaults of (stylempi.network, stylempi.media) and the job
(stylempi.job) that reads it; it imports nothing from stylempi.job, stylempi.storage or above.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .colour.look import Look
from .media.encoding import EncoderRequest
from .media.engines import DEFAULT_CONVERT, DEFAULT_DECODE
from .network.placement import DEFAULT_COMPILE, DEFAULT_DEVICE, DEFAULT_PRECISION


#: The ``metadata`` key by which each :class:`RunOptions` field says how it enters the resume key.
KEY = "resume_key"
#: ``omitted_at`` of an entry that is always in the key.
ALWAYS = "always in the key"
#: The key entries added after keys existed, at the values that leave them out: a plain look and
#: the default engines (so jobs without them keep the keys they always had).
PLAIN_LOOK = Look().as_dict()
DEFAULT_ENGINES = {"decode": DEFAULT_DECODE, "convert": DEFAULT_CONVERT}


@dataclass(frozen=True)
class KeyEntry:
    """A field that changes pixels: the resume key entries (stylempi.job.key) it decides, through the
    values rank 0 resolves from it. An entry whose value equals ``omitted_at`` is left out of the key,
    so that keys made before the entry existed stay the same (old work dirs still resume)."""

    entries: tuple[str, ...]
    omitted_at: Any = ALWAYS


@dataclass(frozen=True)
class NotInKey:
    """A field that does not change pixels or chunk boundaries, and why."""

    why: str


def in_key(*entries: str, omitted_at: Any = ALWAYS) -> dict:
    """Field metadata: this option decides the resume key ``entries``. ``omitted_at``: the value at
    which they are left out (a new option's default, so keys made before it stay valid)."""
    return {KEY: KeyEntry(entries, omitted_at)}


def not_in_key(why: str) -> dict:
    """Field metadata: this option changes no pixel and no chunk boundary (``why`` says why)."""
    return {KEY: NotInKey(why)}


class Staging(Protocol):
    """What the job needs from Blob staging (stylempi.job.staging.JobStaging), in the order it asks.

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

    # Each field declares how it enters the resume key (stylempi.job.key; tests/unit/test_key.py
    # fails on a field that does not): the entries it decides, or why it changes no pixel.
    input: str = field(metadata=in_key("input_size", "input_sha256"))  # its content, not its name
    #: OUTPUT's extension picks the container, whose default codec and options are the encoding.
    output: str = field(metadata=in_key("encoding"))
    model: str = field(metadata=in_key("model_sha256"))
    trust_model: bool = field(default=False, metadata=not_in_key("lets a TorchScript file load; the model's "
                                                                 "bytes are in the key"))
    #: Where the network runs: it decides the ``auto`` precision, converter and codec.
    device: str = field(default=DEFAULT_DEVICE, metadata=in_key("precision", "engines", "encoding"))
    precision: str = field(default=DEFAULT_PRECISION, metadata=in_key("precision"))
    #: Where frames are decoded: cpu, gpu (NVDEC) or auto (stylempi.media.engines.choose_decode).
    decode: str = field(default=DEFAULT_DECODE, metadata=in_key("engines", omitted_at=DEFAULT_ENGINES))
    #: What converts YUV <-> RGB: ffmpeg, torch or auto (stylempi.media.engines.choose_convert).
    convert: str = field(default=DEFAULT_CONVERT, metadata=in_key("engines", omitted_at=DEFAULT_ENGINES))
    batch_size: int | None = field(default=None, metadata=not_in_key("frames per network call: a frame's "
                                                                      "pixels do not depend on its batch"))
    video_stream: int | None = field(default=None, metadata=in_key("video_stream"))
    codec: str | None = field(default=None, metadata=in_key("encoding"))
    #: --crf, --preset...: what is asked of the encoder, as one value (its fields are run's flags).
    encoder: EncoderRequest = field(default_factory=EncoderRequest, metadata=in_key("encoding"))
    audio_codec: str | None = field(default=None, metadata=not_in_key("audio is copied or re-encoded at the "
                                                                       "join, after every chunk"))
    #: Re-encode every audio track with ``audio_codec``, not only those OUTPUT cannot hold.
    reencode_audio: bool = field(default=False, metadata=not_in_key("audio: see audio_codec"))
    work_dir: str | None = field(default=None, metadata=not_in_key("where the chunks are kept"))
    restart: bool = field(default=False, metadata=not_in_key("whether earlier chunks are looked at at all"))
    chunk_frames: int | None = field(default=None, metadata=in_key("chunk_frames"))
    quiet: bool = field(default=False, metadata=not_in_key("what is printed"))
    #: torch.compile the network: auto (CPU, long enough videos), on, off (network.placement.resolve_compile).
    compile: str = field(default=DEFAULT_COMPILE, metadata=in_key("compile"))  # compiled kernels round differently
    #: The network sees each frame resized by this factor (stroke size); 1 = as it is.
    style_scale: float = field(default=1.0, metadata=in_key("look", omitted_at=PLAIN_LOOK))
    #: Keep the input's chroma, take only the stylized luma (stylempi.colour.look).
    preserve_colors: bool = field(default=False, metadata=in_key("look", omitted_at=PLAIN_LOOK))
    #: The colour matrix for ``preserve_colors`` (a stylempi.colour.look.LUMA_COEFFICIENTS name);
    #: None = the input's own (the one its conversions use).
    color_matrix: str | None = field(default=None, metadata=in_key("look", omitted_at=PLAIN_LOOK))
    #: The flow-guided temporal filter after the network (stylempi.network.temporal_filter): on or off;
    #: its settings enter the key only when on (off keeps the keys jobs always had).
    temporal: str = field(default="on", metadata=in_key("temporal", omitted_at=None))
    #: Blob storage staging (stylempi.job.staging.staged_run sets it) when a path is a Blob URL.
    staging: Staging | None = field(default=None, metadata=not_in_key("how files move; the input's content "
                                                                      "is in the key"))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options of parsed ``stylempi run`` arguments: each field from the flag of its
        name (``stylempi run`` and ``watch --run-args`` both build them this way)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"encoder"}
        return cls(**{k: v for k, v in vars(args).items() if k in names}, encoder=EncoderRequest.from_args(args))
