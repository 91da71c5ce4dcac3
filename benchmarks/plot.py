"""A small line plot drawn with Pillow (no matplotlib needed in the venv)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (160, 160, 160), (214, 39, 40), (44, 160, 44)]


def line_plot(path: Path, xs: list[float], series: dict[str, list[float]], *, title: str, xlabel: str,
              ylabel: str, size=(900, 560)) -> None:
    """Plot each series against ``xs`` (x on a log2 axis when it spans powers of two)."""
    import math
    w, h = size
    left, right, top, bottom = 90, 30, 60, 70
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    log_x = all(x > 0 for x in xs) and max(xs) / min(xs) >= 4
    fx = (lambda x: math.log2(x)) if log_x else (lambda x: x)
    x0, x1 = fx(min(xs)), fx(max(xs))
    ymax = max(max(v) for v in series.values()) * 1.1 or 1
    px = lambda x: left + (fx(x) - x0) / ((x1 - x0) or 1) * (w - left - right)  # noqa: E731
    py = lambda y: h - bottom - y / ymax * (h - top - bottom)  # noqa: E731
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(6):
        y = ymax * i / 5
        d.line([left, py(y), w - right, py(y)], fill=(230, 230, 230))
        d.text((left - 8, py(y)), f"{y:.0f}" if ymax > 10 else f"{y:.1f}", fill="black", font=font, anchor="rm")
    for x in xs:
        d.line([px(x), top, px(x), h - bottom], fill=(230, 230, 230))
        d.text((px(x), h - bottom + 8), f"{x:g}", fill="black", font=font, anchor="mt")
    d.text((w / 2, 20), title, fill="black", font=font, anchor="mt")
    d.text((w / 2, h - 25), xlabel, fill="black", font=font, anchor="mt")
    d.text((15, top - 25), ylabel, fill="black", font=font)
    for k, (name, ys) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [(px(x), py(y)) for x, y in zip(xs, ys)]
        d.line(points, fill=colour, width=3)
        for x, y in points:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        d.line([left + 20, top + 20 + 18 * k, left + 50, top + 20 + 18 * k], fill=colour, width=3)
        d.text((left + 58, top + 20 + 18 * k), name, fill="black", font=font, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
