"""``stylempi preview`` and ``stylempi models``.

``preview`` decodes only K frames spread over the video (one seek each),
stylizes them at full size (``--fast``: scaled down first) with the stylizer
``stylempi run`` uses at its defaults (device and precision ``auto``; never
compiled: that would take longer than the preview), so the pixels are the
run's, and writes a before/after contact sheet: the input frames on the top
row, the stylized frames below, K columns. With several ``--style-scale``
values (and ``--compare-colors``) there is one stylized row per choice, each
labelled, so a stroke size and colour option can be picked side by side. It
takes seconds, so a style can be judged before paying for the whole video.

``models`` lists the built-in styles (:mod:`stylempi.network.styles`).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..colour.look import Look, check_scale
from ..errors import OutputFailure, UsageError, VideoDecodeFailure, VideoOpenFailure
from ..media.cuts import CutDetector
from ..network.model import open_model
from ..network.placement import (DEFAULT_DEVICE, DEFAULT_PRECISION, default_batch_size, network_width, resolve_device,
                                 resolve_precision)
from ..network.stylize import NetworkStylizer
from ..network.temporal_filter import FilterSettings, TemporalFilter
from .stability import read_frames

#: Pixels between and around the tiles of a contact sheet.
GAP = 4
BACKGROUND = (24, 24, 24)
#: Frames sampled, and the height of a tile, when --frames and --height are not given.
DEFAULT_FRAMES = 4
DEFAULT_HEIGHT = 270


def preview_stylizer(net: torch.nn.Module, device: str = DEFAULT_DEVICE,
                     precision: str = DEFAULT_PRECISION) -> NetworkStylizer:
    """The stylizer ``stylempi run`` builds for NET with these ``--device``/``--precision``
    values (eager), so a preview shows the pixels a run will give."""
    where = resolve_device(device)
    return NetworkStylizer(net, where, resolve_precision(precision, where, network_width(net)),
                           default_batch_size(where))


def stylize_image(net: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    """Stylize one ``H x W x 3`` uint8 RGB image on the CPU in fp32, as ``stylempi run --device
    cpu --precision fp32`` would; same size out."""
    return preview_stylizer(net, "cpu", "fp32")([np.ascontiguousarray(rgb, dtype=np.uint8)])[0]


# --------------------------------------------------------------------------
# Frame sampling: seek + decode only the frames we need
# --------------------------------------------------------------------------

def sample_frames(path: str | Path, count: int, *, max_height: int | None = None,
                  notes: list[str] | None = None) -> list[tuple[float, np.ndarray]]:
    """``count`` frames spread evenly over the video as ``(time_s, RGB uint8)``.

    One seek per frame (to the keyframe before the target), then decode up to
    the target. Seeks are not trusted: each decoded frame's own timestamp
    decides, and a seek that lands after the target is answered by the
    first frame after it. No more frames than the video has are taken (100000
    asked of a 72-frame clip once ran for 10 minutes); ``notes`` gets a line
    saying so.
    """
    from ..media import index_frames, open_input

    if count < 1:
        raise UsageError("--frames must be at least 1")
    with open_input(path) as container:
        if not container.streams.video:
            raise VideoOpenFailure(f"{path} has no video stream")
        stream = container.streams.video[0]
        if count > (stream.frames or 0):  # the header's count is missing or smaller: count packets
            total = len(index_frames(path, stream.index).pts)
            if count > total:
                if notes is not None:
                    notes.append(f"--frames {count} is more than the video's {total} frames: taking {total}")
                count = total
        tb = stream.time_base or Fraction(1, 1000000)
        start = float(stream.start_time * tb) if stream.start_time is not None else (
            (container.start_time or 0) / 1e6)
        if stream.duration:
            duration = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / 1e6
        else:
            duration = 0.0
        targets = [start + duration * (i + 0.5) / count for i in range(count)]
        out: list[tuple[float, np.ndarray]] = []
        for target in targets:
            frame = _frame_at(container, stream, target, tb)
            if frame is None:
                if out:
                    break  # the stream ends earlier than its header said
                raise VideoDecodeFailure(f"{path}: no frame could be decoded")
            img = frame.to_image()
            if max_height and img.height > max_height:
                img = img.resize((max(1, round(img.width * max_height / img.height)), max_height),
                                 Image.BICUBIC)
            out.append((float(frame.time if frame.time is not None else target),
                        np.asarray(img.convert("RGB"))))
    return out


def _frame_at(container, stream, target: float, tb: Fraction):
    """The last frame whose time is <= target (or the first frame after a late seek)."""
    offset = int(target / tb)
    try:
        container.seek(offset, stream=stream, backward=True, any_frame=False)
    except Exception:  # noqa: BLE001 - unseekable input: decode from where we are
        pass
    previous = None
    try:
        for frame in container.decode(stream):
            if frame.time is None:
                previous = frame
                continue
            if frame.time > target + 1e-6:
                return previous if previous is not None else frame
            previous = frame
    except Exception as exc:  # noqa: BLE001
        if previous is None:
            raise VideoDecodeFailure(f"decoding failed near {target:.2f} s: {exc}") from None
    return previous


# --------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------

def contact_sheet(before: list[np.ndarray], after: list[np.ndarray], *, gap: int = GAP) -> Image.Image:
    """Two rows (before on top, after below) of K equal tiles, ``gap`` pixels apart and around."""
    return contact_grid([before, after], gap=gap)


def contact_grid(rows: list[list[np.ndarray]], labels: list[str] | None = None, *,
                 gap: int = GAP) -> Image.Image:
    """Rows of K equal tiles (the first row's size), ``gap`` pixels apart and around; each
    label is written over the first tile of its row."""
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("need as many stylized frames as input frames")
    h, w = rows[0][0].shape[:2]
    k = len(rows[0])
    sheet = Image.new("RGB", (k * w + (k + 1) * gap, len(rows) * h + (len(rows) + 1) * gap), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for j, row in enumerate(rows):
        y = gap + j * (h + gap)
        for i, tile in enumerate(row):
            sheet.paste(Image.fromarray(tile).resize((w, h)), (gap + i * (w + gap), y))
        if labels and labels[j]:
            box = draw.textbbox((gap + 3, y + 3), labels[j])
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=BACKGROUND)
            draw.text((gap + 3, y + 3), labels[j], fill=(255, 255, 255))
    return sheet


def _fit(rgb: np.ndarray, height: int) -> np.ndarray:
    """Scale down (never up) to ``height`` rows, keeping the aspect ratio."""
    h, w = rgb.shape[:2]
    if h <= height:
        return rgb
    img = Image.fromarray(rgb).resize((max(1, round(w * height / h)), height), Image.BICUBIC)
    return np.asarray(img)


def preview_looks(scales: list[float], preserve_colors: bool, compare_colors: bool) -> list[Look]:
    """One stylized row per scale, and per colour choice when comparing them."""
    choices = (False, True) if compare_colors else (preserve_colors,)
    return [Look(scale=check_scale(s), preserve_colors=c) for s in scales for c in choices]


def look_label(look: Look) -> str:
    return f"scale {look.scale:g}" + (", colours kept" if look.preserve_colors else "")


def preview(input_path: str | Path, model: str, out: str | Path, *, frames: int = DEFAULT_FRAMES,
            height: int = DEFAULT_HEIGHT, trust: bool = False, full_size: bool = True,
            looks: list[Look] | None = None, device: str = DEFAULT_DEVICE,
            precision: str = DEFAULT_PRECISION) -> dict:
    """Write the contact sheet; returns ``{"out", "frames": [times], "size": (w, h)}``.

    ``looks``: one stylized row each (default: the plain network, unlabelled);
    ``device``, ``precision``: as ``stylempi run``'s flags."""
    looks = looks or [Look()]
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UsageError(f"--out {out}: give a .png (or .jpg/.webp) file name")
    if not out.parent.is_dir():
        raise OutputFailure(f"--out {out}: folder {out.parent} does not exist")
    network = preview_stylizer(open_model(model, trust=trust), device, precision)
    # Stylize at the video's own size (strokes as `stylempi run` will draw them), then shrink.
    notes: list[str] = []
    shots = sample_frames(input_path, frames, max_height=None if full_size else height, notes=notes)
    originals = [img for _, img in shots]
    rows = [[_fit(img, height) for img in originals]]
    for look in looks:
        rows.append([_fit(img, height) for img in look.apply(network, originals)])
    labels = None if looks == [Look()] else ["input"] + [look_label(look) for look in looks]
    sheet = contact_grid(rows, labels)
    try:
        sheet.save(out)
    except OSError as exc:
        raise OutputFailure(f"cannot write {out}: {exc.strerror or exc}") from None
    return {"out": str(out), "frames": [t for t, _ in shots], "size": sheet.size, "notes": notes}


def temporal_preview(input_path: str | Path, model: str, out: str | Path, *, frames: int = DEFAULT_FRAMES,
                     height: int = DEFAULT_HEIGHT, trust: bool = False, full_size: bool = True,
                     device: str = DEFAULT_DEVICE, precision: str = DEFAULT_PRECISION) -> dict:
    """A sheet of K *consecutive* frames without and with the temporal filter (rows: input,
    ``--temporal off``, ``--temporal on``), after the filter has warmed up on the frames before
    them as a job's chunk does; returns ``{"out", "frames": [times], "size": (w, h)}``.

    Shimmer shows as strokes that change between neighbouring tiles of the middle row."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UsageError(f"--out {out}: give a .png (or .jpg/.webp) file name")
    if not out.parent.is_dir():
        raise OutputFailure(f"--out {out}: folder {out.parent} does not exist")
    if frames < 1:
        raise UsageError("--frames must be at least 1")
    network = preview_stylizer(open_model(model, trust=trust), device, precision)
    settings = FilterSettings()
    decoded = read_frames(str(input_path), settings.warmup + frames, None if full_size else height)
    styled: list[np.ndarray] = []
    for i in range(0, len(decoded), 2):
        styled += network(decoded[i:i + 2])
    steady, cuts = TemporalFilter(settings), CutDetector()
    filtered = [steady.step(f, s, cut=cuts.is_cut(f)) for f, s in zip(decoded, styled)]
    shown = slice(max(0, len(decoded) - frames), len(decoded))
    rows = [[_fit(img, height) for img in group[shown]] for group in (decoded, styled, filtered)]
    sheet = contact_grid(rows, ["input", "--temporal off", "--temporal on"])
    try:
        sheet.save(out)
    except OSError as exc:
        raise OutputFailure(f"cannot write {out}: {exc.strerror or exc}") from None
    return {"out": str(out), "frames": list(range(shown.start, len(decoded))), "size": sheet.size}


# --------------------------------------------------------------------------
# stylempi models
# --------------------------------------------------------------------------

def list_models() -> list[dict]:
    from ..network.styles import BUILTIN, builtin_checkpoint

    rows = []
    for name, info in sorted(BUILTIN.items()):
        path = builtin_checkpoint(name)
        rows.append({"name": name, "size": path.stat().st_size if path else 0, "width": info.width,
                     "painting": info.painting, "licence": info.licence,
                     "path": str(path) if path else None})
    return rows
