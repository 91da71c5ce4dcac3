"""What ``stylempi train`` learns from: the painting and the content images.

Content comes from image folders, image files or videos (about
``--frames-per-video`` frames sampled evenly with PyAV, through
:func:`stylempi.media.open_input` like every other input), resized to a short
side a little over the crop size; each step takes random square crops with
random flips. The crops of step N depend only on the seed and N, which is what
lets ``--resume`` follow the path of an uninterrupted run.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UsageError, VideoOpenFailure
from ..media.containers import VIDEO_EXTENSIONS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _resize_short(img: Image.Image, short: int) -> Image.Image:
    w, h = img.size
    scale = short / min(w, h)
    return img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 CHW tensor of an RGB PIL image."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An image file as a float ``[1, 3, H, W]`` RGB tensor in 0..255, long side ``size``."""
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from None
    if size:
        w, h = img.size
        scale = size / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return _to_tensor(img).float().unsqueeze(0)


def sample_video_frames(path: str | Path, count: int) -> list[Image.Image]:
    """About ``count`` frames spread evenly over the (largest) video stream of ``path``."""
    from ..media import open_input

    with open_input(path) as container:
        if not container.streams.video:
            raise VideoOpenFailure(f"{path} has no video stream")
        stream = max(container.streams.video, key=lambda s: (s.codec_context.width or 0))
        stream.thread_type = "AUTO"
        total = stream.frames
        if not total:
            duration = (float(stream.duration * stream.time_base) if stream.duration
                        else (container.duration or 0) / 1e6)
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            total = max(1, int(duration * rate))
        every = max(1, total // max(1, count))
        frames = []
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i % every == 0:
                    frames.append(frame.to_image())
                    if len(frames) >= count:
                        break
        except Exception as exc:  # noqa: BLE001
            if not frames:
                raise VideoOpenFailure(f"cannot decode video {path}: {exc}") from None
    return frames


def collect_content(paths: list[str], image_size: int, frames_per_video: int) -> list[torch.Tensor]:
    """Content images (uint8 CHW, short side a little over ``image_size``) from files, folders, videos."""
    short = int(math.ceil(image_size * 1.15))
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"--content {p}: no such file or folder")
    images: list[torch.Tensor] = []
    for f in files:
        if f.suffix.lower() in IMAGE_SUFFIXES:
            try:
                pics = [Image.open(f).convert("RGB")]
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read content image {f}: {exc}") from None
        else:
            pics = sample_video_frames(f, frames_per_video)
        images += [_to_tensor(_resize_short(pic, short)) for pic in pics]
    if not images:
        raise UsageError("no content images found in --content (give image folders, images or videos)")
    return images


def make_batch(images: list[torch.Tensor], batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """A float batch of random ``size``-square crops (random flips) of the content images."""
    out = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        _, h, w = img.shape
        top = int(torch.randint(h - size + 1, (1,), generator=gen))
        left = int(torch.randint(w - size + 1, (1,), generator=gen))
        crop = img[:, top:top + size, left:left + size]
        if bool(torch.randint(2, (1,), generator=gen)):
            crop = crop.flip(2)
        out.append(crop)
    return torch.stack(out).float()
