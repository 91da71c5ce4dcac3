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

from ...errors import ModelLoadFailure

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


def builtin_name(name: str) -> str | None:
    """The built-in style ``name`` spelled as listed, ignoring case (``Scream`` -> ``scream``);
    None when no installed style has that name."""
    wanted = name.strip().casefold()
    for candidate in BUILTIN:
        if candidate.casefold() == wanted and (HERE / f"{candidate}.pth").is_file():
            return candidate
    return None


def builtin_checkpoint(name: str) -> Path | None:
    """Path of the built-in style ``name`` (any case), or None when there is no such style."""
    found = builtin_name(name)
    return HERE / f"{found}.pth" if found is not None else None


def closest_style(name: str) -> str | None:
    """The built-in style a mistyped ``name`` most likely meant (``sream`` -> ``scream``)."""
    import difflib

    matches = difflib.get_close_matches(name.strip().casefold(), list(BUILTIN), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_model_message(spec: str) -> str:
    """The one wording every command uses for a --model that names nothing."""
    names = ", ".join(sorted(BUILTIN)) or "none installed"
    guess = closest_style(spec)
    hint = f"did you mean {guess}? " if guess else ""
    return (f"--model {spec}: no such file and no built-in style of that name ({hint}built-in "
            f"styles: {names}; see `stylempi models`)")


def resolve_model(spec: str) -> Path:
    """The checkpoint file a ``--model`` value names, the same way for every command
    (``run``, ``preview``, ``export``, ``watch``): a path that exists wins (a file
    the user points at is never shadowed by a style of the same name), then a
    built-in style name in any case. Raises :class:`ModelLoadFailure` for a
    directory, or for a value that names neither (with a "did you mean")."""
    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise ModelLoadFailure(f"model {spec} is a directory; give a .pth checkpoint file")
        return path
    builtin = builtin_checkpoint(spec)
    if builtin is None:
        raise ModelLoadFailure(unknown_model_message(spec))
    return builtin


def read_model(spec: str) -> tuple[bytes, str]:
    """The checkpoint bytes ``--model`` names (:func:`resolve_model`), and the name messages
    give it: ``model PATH`` or ``built-in style NAME``."""
    path = resolve_model(spec)
    name = f"model {spec}" if path == Path(spec) else f"built-in style {path.stem}"
    try:
        return path.read_bytes(), name
    except OSError as exc:
        raise ModelLoadFailure(f"cannot read {name}: {exc.strerror or exc}") from None
