"""Temporal stability, strength and stroke-size speed of styles, per clip.

For each clip (default: every real clip of ../shared/media; first --frames frames, scaled to
--height rows at most) and each style it stylizes the frames with the network itself (CPU, fp32,
eager: the same pixels on every run) and prints

* E_warp of the stylized frames and of the input (stylempi.tools.stability: Lai et al. 2018, DIS
  MEDIUM flow on the input, Ruder et al. 2016 mask, MSE of RGB on [0, 1]) and their ratio;
* the mean absolute difference from the input on [0, 1] (how strongly the frames are changed);
* the Gram style distance to the style's painting on the loss network the styles were trained
  with (stylempi.training.lossnet.style_distance, SqueezeNet v1.0), mean over --style-frames frames
  spread over the clip.

``--baseline-rev REV`` also measures the built-in styles as they were at git revision REV
(``git show REV:stylempi/network/styles/NAME.pth``) and prints new/old ratios (also for a
``--pair NAME+TAG=...`` candidate whose NAME is a built-in): the issue's acceptance
(E_warp <= 0.5x on average, <= 0.7x on every clip; difference >= 0.9x; style distance <= 1.1x).

``--speed`` instead times the network on --speed-frames frames of a 1280x720 clip at each
--speed-scales value (``--style-scale``: resize, network, resize back), alternating the scales,
and prints ms/frame and the speed-up against scale 1, all in one run.

    python benchmarks/stability.py [--clips flower.mp4,...] [--frames 90] [--height 360]
        [--styles scream,wave] [--pair NAME[+TAG]=CHECKPOINT:PAINTING] [--baseline-rev REV]
        [--style-scale S] [--preserve-colors] [--json out.json]
    python benchmarks/stability.py --speed [--speed-scales 1,0.5] [--speed-frames 6]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import MEDIA, ROOT, SHARED, load_note, machine  # also puts ROOT on sys.path

import stylempi  # noqa: E402,F401 - before torch, as in a job (it turns on torch's huge pages)
import torch  # noqa: E402

from stylempi.training.lossnet import build_lossnet, gram, style_distance  # noqa: E402
from stylempi.colour.look import Look  # noqa: E402
from stylempi.network.model import load_network  # noqa: E402
from stylempi.tools.stability import DEFAULT_FRAMES, DEFAULT_HEIGHT, read_frames, warping_error  # noqa: E402
from stylempi.network.styles import BUILTIN, builtin_checkpoint  # noqa: E402
from stylempi.network.stylize import NetworkStylizer  # noqa: E402
from stylempi.training.trainset import load_image  # noqa: E402

CLIPS = ("flower.mp4", "flower_vfr.mp4", "nasa_13013.mp4", "cockatoo.mp4", "cityCC0.mpg")
LOSS_WEIGHTS = SHARED / "models" / "lossnet" / "squeezenet1_0_caffe_bgr_fp16.pth"


def stylizer(model_bytes: bytes, name: str, precision: str = "fp32") -> NetworkStylizer:
    network = load_network(model_bytes, name=name)
    return NetworkStylizer(network, torch.device("cpu"), precision, batch_size=2, compile=False)


class StyleJudge:
    """Gram distance of frames to a painting on the training loss network."""

    def __init__(self, painting: Path, style_size: int = 256):
        self.net = build_lossnet("squeezenet", str(LOSS_WEIGHTS))
        total = sum(self.net.style_layers.values())
        self.weights = {k: w / total for k, w in self.net.style_layers.items()}
        self.target = {k: g[0] for k, g in self._grams(load_image(painting, style_size)).items()}

    def _grams(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            feats = self.net(rgb)
        return {k: gram(feats[k]) for k in self.net.style_layers}

    def __call__(self, frames: list[np.ndarray]) -> float:
        d = [float(style_distance(self._grams(torch.from_numpy(f.copy()).permute(2, 0, 1)[None].float()),
                                  self.target, self.weights)[0]) for f in frames]
        return sum(d) / len(d)


def spread(frames: list, count: int) -> list:
    return [frames[round(i * (len(frames) - 1) / max(1, count - 1))] for i in range(min(count, len(frames)))]


def measure(inputs: list[np.ndarray], model_bytes: bytes, name: str, look: Look, judge: StyleJudge | None,
            style_frames: int) -> dict:
    net = stylizer(model_bytes, name)
    outputs = look.apply(net, inputs)
    stab = warping_error(inputs, outputs)
    diff = float(np.mean([np.abs(o.astype(np.float32) - i).mean() for o, i in zip(outputs, inputs)]) / 255)
    return {"e_warp": stab.output, "e_warp_input": stab.input, "ratio": stab.ratio, "mean_abs_diff": diff,
            "style_distance": judge(spread(outputs, style_frames)) if judge else None,
            "mask_coverage": stab.coverage}


def git_bytes(rev: str, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True,
                          check=True).stdout


def models(args) -> list[tuple[str, bytes, Path | None, bytes | None]]:
    """(name, checkpoint bytes, painting, baseline checkpoint bytes or None)."""
    out = []
    for pair in args.pair:
        name, rest = pair.split("=", 1)
        ckpt, _, painting = rest.partition(":")
        base = name.split("+")[0]  # "wave+w100" is a candidate for the built-in "wave"
        old = git_bytes(args.baseline_rev, f"stylempi/network/styles/{base}.pth") if args.baseline_rev and base in BUILTIN else None
        out.append((name, Path(ckpt).read_bytes(), Path(painting) if painting else None, old))
    if not args.pair or args.styles:
        for name in (args.styles.split(",") if args.styles else sorted(BUILTIN)):
            old = git_bytes(args.baseline_rev, f"stylempi/network/styles/{name}.pth") if args.baseline_rev else None
            out.append((name, builtin_checkpoint(name).read_bytes(), SHARED / "styles" / BUILTIN[name].image, old))
    return out


def stability_main(args) -> list[dict]:
    look = Look(scale=args.style_scale, preserve_colors=args.preserve_colors)
    rows = []
    judges: dict[Path, StyleJudge] = {}
    baselines: dict[tuple[str, bytes], dict] = {}
    for clip in args.clips.split(","):
        path = Path(clip) if Path(clip).exists() else MEDIA / clip
        inputs = read_frames(str(path), args.frames, args.height)
        h, w = inputs[0].shape[:2]
        for name, data, painting, old in models(args):
            judge = None
            if painting is not None and LOSS_WEIGHTS.exists() and args.style_frames:
                judge = judges.setdefault(painting, StyleJudge(painting))
            row = {"clip": path.name, "size": f"{w}x{h}", "frames": len(inputs), "style": name,
                   "look": look.as_dict(), **measure(inputs, data, name, look, judge, args.style_frames)}
            line = (f"{path.name:15s} {w}x{h} {len(inputs):3d} fr  {name:14s} E_warp {row['e_warp']:.5f} "
                    f"(input {row['e_warp_input']:.5f}, x{row['ratio']:.1f})  diff {row['mean_abs_diff']:.3f}")
            if row["style_distance"] is not None:
                line += f"  style {row['style_distance']:.3f}"
            if old is not None:
                key = (path.name, old)  # candidates for one built-in share its baseline measurement
                if key not in baselines:
                    baselines[key] = measure(inputs, old, name + "@" + args.baseline_rev, look, judge,
                                             args.style_frames)
                row["old"] = baselines[key]
                o = row["old"]
                row["vs_old"] = {"e_warp": row["e_warp"] / o["e_warp"],
                                 "mean_abs_diff": row["mean_abs_diff"] / o["mean_abs_diff"],
                                 "style_distance": (row["style_distance"] / o["style_distance"]
                                                    if row["style_distance"] is not None else None)}
                v = row["vs_old"]
                line += (f"  | old E_warp {o['e_warp']:.5f} -> x{v['e_warp']:.2f}, diff x{v['mean_abs_diff']:.2f}"
                         + (f", style x{v['style_distance']:.2f}" if v["style_distance"] is not None else ""))
            print(line, flush=True)
            rows.append(row)
    compared = [r for r in rows if "vs_old" in r]
    if compared:
        mean = sum(r["vs_old"]["e_warp"] for r in compared) / len(compared)
        worst = max(r["vs_old"]["e_warp"] for r in compared)
        diff = min(r["vs_old"]["mean_abs_diff"] for r in compared)
        style = max((r["vs_old"]["style_distance"] or 0) for r in compared)
        print(f"vs {args.baseline_rev}: E_warp x{mean:.2f} on average (<= 0.5 wanted), worst x{worst:.2f} "
              f"(<= 0.7); difference from input >= x{diff:.2f} (>= 0.9); style distance <= x{style:.2f} (<= 1.1)")
    return rows


def speed_main(args) -> list[dict]:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    clip = MEDIA / "cockatoo.mp4"
    frames = read_frames(str(clip), args.speed_frames, None)
    name = args.styles.split(",")[0] if args.styles else "scream"
    data = builtin_checkpoint(name).read_bytes() if builtin_checkpoint(name) else Path(name).read_bytes()
    scales = [float(s) for s in args.speed_scales.split(",")]
    best = {s: float("inf") for s in scales}
    nets = {s: stylizer(data, name, args.precision) for s in scales}
    for s in scales:  # warm-up: first calls allocate
        Look(scale=s).apply(nets[s], frames[:2])
    for _ in range(args.repeats):
        for s in scales:
            t = time.perf_counter()
            out = Look(scale=s).apply(nets[s], frames)
            best[s] = min(best[s], (time.perf_counter() - t) / len(frames))
            assert out[0].shape == frames[0].shape
    base = best.get(1.0)
    rows = []
    h, w = frames[0].shape[:2]
    for s in scales:
        row = {"clip": clip.name, "size": f"{w}x{h}", "style": name, "precision": args.precision, "scale": s,
               "ms_per_frame": best[s] * 1000, "speedup_vs_scale_1": base / best[s] if base else None}
        rows.append(row)
        print(f"{clip.name} {w}x{h} {name} {args.precision} --style-scale {s:g}: {best[s] * 1000:.0f} ms/frame"
              + (f", x{row['speedup_vs_scale_1']:.2f} against scale 1" if base else ""), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", default=",".join(CLIPS), help="clip names in ../shared/media or paths")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    p.add_argument("--styles", default="", help="built-in styles, comma-separated (default: all)")
    p.add_argument("--pair", action="append", default=[], metavar="NAME=CHECKPOINT[:PAINTING]",
                   help="measure a checkpoint file (and its distance to a painting)")
    p.add_argument("--baseline-rev", default=None, metavar="REV",
                   help="also measure the built-in styles of this git revision and print new/old ratios")
    p.add_argument("--style-frames", type=int, default=8, help="frames for the style distance (0: skip)")
    p.add_argument("--style-scale", type=float, default=1.0)
    p.add_argument("--preserve-colors", action="store_true")
    p.add_argument("--speed", action="store_true", help="time --style-scale values instead")
    p.add_argument("--speed-scales", default="1,0.5")
    p.add_argument("--speed-frames", type=int, default=6)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="for --speed")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    print(f"# {machine()}; {load_note()}", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = speed_main(args) if args.speed else stability_main(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
