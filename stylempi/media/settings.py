"""The encoder's settings as one value: :class:`EncodeSettings` decides the bytes of the encoded
video, and is part of the resume key. Chosen in stylempi.media.encoding, used by
stylempi.media.pixels to make the encoder's frames.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from ..colour.matrices import Colour


@dataclass(frozen=True)
class EncodeSettings:
    """Everything that decides the bytes of the encoded video (part of the resume key)."""

    codec: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...]
    width: int
    height: int
    time_base: Fraction
    sample_aspect_ratio: Fraction | None
    #: The output's colour: conversion, tags, depth, HDR metadata (None: stand-in settings).
    colour: Colour | None = None
    #: Ticks added to every timestamp in the segment files, and taken off again when they are
    #: joined: NUT cannot store times before zero (see stylempi.media.encoding.segment_offset).
    pts_offset: int = 0

    def as_dict(self) -> dict:
        d = asdict(self)
        if not self.pts_offset:
            del d["pts_offset"]  # jobs that start at or after zero keep the keys they always had
        d["time_base"] = str(self.time_base)
        d["sample_aspect_ratio"] = str(self.sample_aspect_ratio) if self.sample_aspect_ratio else None
        d["options"] = dict(self.options)
        return d
