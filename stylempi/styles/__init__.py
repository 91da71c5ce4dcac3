"""Built-in styles shipped inside the package (see docs/styles.md).

``BUILTIN`` maps a style name (usable as ``--model NAME``) to its metadata;
the checkpoint sits beside this file as ``NAME.pth``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class StyleInfo:
    name: str
    painting: str
    licence: str
    width: int


BUILTIN: dict[str, StyleInfo] = {}


def builtin_checkpoint(name: str) -> Path | None:
    """Path of the built-in style ``name``, or None when there is no such style."""
    if name in BUILTIN and (HERE / f"{name}.pth").is_file():
        return HERE / f"{name}.pth"
    return None
