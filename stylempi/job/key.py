"""The resume key: a digest of everything that decides a job's pixels and chunk boundaries.

A rerun with the same key reuses the finished chunks in the work dir of that key
(stylempi.job.workfiles); any change of the key starts over in a new one. Keys of
existing work dirs must never change for the same settings, or their work is lost.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import __version__
from ..colour.look import Look
from ..media import EncodeSettings, VideoStreamInfo
from ..media.engines import DEFAULT_CONVERT, DEFAULT_DECODE
from ..network.temporal_filter import FilterSettings
from ..storage.files import sha256_file

#: Bumped when the segment format or chunking changes, so old work is never reused.
WORK_FORMAT = 2


def job_key(input_path: Path, video: VideoStreamInfo, model_bytes: bytes, precision: str,
            settings: EncodeSettings, chunk_frames: int, compile_mode: str = "auto",
            look: Look | None = None, decode: str = DEFAULT_DECODE, convert: str = DEFAULT_CONVERT,
            temporal: FilterSettings | None = None) -> str:
    """A digest of everything that decides the output's pixels and chunk boundaries."""
    identity = {
        "format": WORK_FORMAT, "stylempi": __version__,
        "input_size": input_path.stat().st_size, "input_sha256": sha256_file(input_path),
        "video_stream": video.index, "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "precision": precision, "encoding": settings.as_dict(), "chunk_frames": chunk_frames,
        "compile": compile_mode,  # compiled kernels round differently: never mix their chunks
    }
    if look is not None and not look.plain:  # plain jobs keep the keys they always had
        identity["look"] = look.as_dict()
    if (decode, convert) != (DEFAULT_DECODE, DEFAULT_CONVERT):  # NVDEC and torch round differently
        identity["engines"] = {"decode": decode, "convert": convert}
    if temporal is not None:  # off keeps the keys jobs always had, so their work dirs still resume
        identity["temporal"] = temporal.as_dict()
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
