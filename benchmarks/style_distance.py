"""Gram-matrix style distance of stylized frames to their painting.

For K frames spread over a video (default ../shared/media/flower.mp4, native size) it computes,
on the loss network's style layers (SqueezeNet v1.0, the network the styles were trained with),

    d(frame) = sum_l w_l * ||G_l(frame) - G_l(painting)||^2 / ||G_l(painting)||^2

(the relative Gram distance of :func:`stylempi.training.lossnet.style_distance`, the training objective's
style term, layer weights summing to 1) for the input frames and for the frames stylized by each
built-in style, and prints the mean distances and their ratio (output / input; acceptance needs
<= 0.5). The painting is scaled to the training ``--style-size`` (long side 256 px).

    python benchmarks/style_distance.py [--video V] [--frames 8] [--json out.json] [STYLE ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from stylempi.training.lossnet import build_lossnet, gram, style_distance  # noqa: E402
from stylempi.network.model import open_model  # noqa: E402
from stylempi.tools.preview import sample_frames, stylize_image  # noqa: E402
from stylempi.network.styles import BUILTIN  # noqa: E402
from stylempi.training.trainset import load_image  # noqa: E402


def _grams(net, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        feats = net(rgb)
    return {k: gram(feats[k]) for k in net.style_layers}


def measure(style: str, painting: Path, frames, lossnet, style_size: int = 256) -> dict:
    weights = {k: w / sum(lossnet.style_layers.values()) for k, w in lossnet.style_layers.items()}
    target = {k: g[0] for k, g in _grams(lossnet, load_image(painting, style_size)).items()}
    net = open_model(style)
    d_in, d_out = [], []
    for _, rgb in frames:
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0).float()
        y = torch.from_numpy(stylize_image(net, rgb)).permute(2, 0, 1).unsqueeze(0).float()
        d_in.append(float(style_distance(_grams(lossnet, x), target, weights)[0]))
        d_out.append(float(style_distance(_grams(lossnet, y), target, weights)[0]))
    mi, mo = sum(d_in) / len(d_in), sum(d_out) / len(d_out)
    return {"style": style, "painting": painting.name, "input": mi, "output": mo, "ratio": mo / mi,
            "frames": len(d_in)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("styles", nargs="*", help="built-in style names (default: all)")
    p.add_argument("--video", default=str(SHARED / "media" / "flower.mp4"))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--loss-weights", default=str(SHARED / "models" / "lossnet" / "squeezenet1_0_caffe_bgr_fp16.pth"))
    p.add_argument("--style-size", type=int, default=256)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--pair", action="append", default=[], metavar="CHECKPOINT=PAINTING",
                   help="measure a checkpoint file against a painting file instead of the built-ins")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lossnet = build_lossnet("squeezenet", args.loss_weights)
    frames = sample_frames(args.video, args.frames)
    rows = []
    jobs = [tuple(pair.split("=", 1)) for pair in args.pair] or [
        (name, str(SHARED / "styles" / BUILTIN[name].image)) for name in (args.styles or sorted(BUILTIN))]
    for name, painting in jobs:
        row = measure(name, Path(painting), frames, lossnet, args.style_size)
        rows.append(row)
        print(f"{name:14s} painting {row['painting']:24s} input {row['input']:.3f}  "
              f"output {row['output']:.3f}  ratio {row['ratio']:.3f}  "
              f"{'PASS' if row['ratio'] <= 0.5 else 'FAIL'} (<= 0.5)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ratio"] <= 0.5 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
