"""Built-in styles shipped inside the package (see docs/styles.md).

``BUILTIN`` maps a style name (usable as ``--model NAME``) to its metadata;
the checkpoint sits beside this file as ``NAME.pth``. Every one was trained by
this project with ``stylempi train`` (docs/styles.md has the exact commands)
from a public-domain painting and frames of CC0/public-domain footage; the
weights are under the project's licence (MIT).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

_WEIGHTS = "weights MIT (trained by stylempi)"


@dataclass(frozen=True)
class StyleInfo:
    name: str
    painting: str
    licence: str
    width: int
    #: File name of the painting in the reference data (``../shared/styles``).
    image: str = ""


BUILTIN: dict[str, StyleInfo] = {
    info.name: info for info in (
        StyleInfo("starry-night", "Vincent van Gogh, The Starry Night (1889)",
                  f"painting public domain; {_WEIGHTS}", 16, "starry_night.jpg"),
        StyleInfo("wave", "Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831)",
                  f"painting public domain; {_WEIGHTS}", 16, "wave.jpg"),
        StyleInfo("scream", "Edvard Munch, The Scream (1893)",
                  f"painting public domain; {_WEIGHTS}", 16, "the_scream.jpg"),
    )
}


def builtin_checkpoint(name: str) -> Path | None:
    """Path of the built-in style ``name``, or None when there is no such style."""
    if name in BUILTIN and (HERE / f"{name}.pth").is_file():
        return HERE / f"{name}.pth"
    return None
