"""The quality cost of lower precision: bf16 (the CPU default) or fp16 (the GPU default) against fp32.

For every clip in ../shared/media it stylizes ~20 evenly spaced frames with a real
checkpoint (mosaic_nc16 by default) through :class:`stylempi.network.stylize.NetworkStylizer`
in fp32 and in bf16 (eager, and compiled as `stylempi run` does by default with
``--compiled``), and reports the mean PSNR (RGB, uint8, before any encoding) of
each bf16 output against the fp32 one (target >= 38 dB on every clip).

    python benchmarks/quality.py [--model PATH] [--frames 20] [--compiled]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

CLIPS = ("flower.mp4", "flower_vfr.mp4", "nasa_13013.mp4", "cockatoo.mp4", "cityCC0.mpg")


def sample(path: Path, count: int) -> list[np.ndarray]:
    from stylempi.media import decode_frames, index_frames, open_input, pick_video_stream
    with open_input(path) as container:
        stream = pick_video_stream(container).index
    pts = index_frames(path, stream).pts
    step = max(1, len(pts) // count)
    wanted = set(pts[::step][:count])
    return [rgb for p, rgb in decode_frames(path, stream, pts[:max(wanted) + 1 if wanted else 0]) if p in wanted]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=common.pretrained(16))
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--clips", default=",".join(CLIPS))
    ap.add_argument("--compiled", action="store_true", help="also the compiled bf16 step (`stylempi run`'s default)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="cuda: fp16 (the GPU default) and bf16 against fp32 (TF32 off) on the GPU")
    args = ap.parse_args(argv)
    import torch
    from stylempi.network.model import load_network
    from stylempi.network.stylize import NetworkStylizer
    if args.model is None or not args.model.exists():
        print("quality: no real checkpoint (../shared/models/pretrained/mosaic_nc16.pth); skipped")
        return 0
    data = args.model.read_bytes()
    device = torch.device(args.device)
    if device.type == "cuda":
        variants = {p: NetworkStylizer(load_network(data), device, p, 8) for p in ("fp16", "bf16")}
        reference = NetworkStylizer(load_network(data), device, "fp32", 8)
        where = torch.cuda.get_device_name(0)
    else:
        variants = {"bf16": NetworkStylizer(load_network(data), device, "bf16", 2)}
        if args.compiled:
            variants["bf16 compiled"] = NetworkStylizer(load_network(data), device, "bf16", 2, compile=True,
                                                        require_compile=True)
        reference = NetworkStylizer(load_network(data), device, "fp32", 2)
        where = common.machine()
    print(f"# quality: {' and '.join(variants)} vs fp32 on {device.type}, {args.model.name}, {args.frames} frames "
          f"per clip; {where}", flush=True)
    print("| clip | size | frames | " + " | ".join(f"{v}: mean PSNR dB (min)" for v in variants) + " |")
    print("|---|---|---|" + "---|" * len(variants), flush=True)
    rows = []
    for name in args.clips.split(","):
        path = common.MEDIA / name
        if not path.exists():
            continue
        frames = sample(path, args.frames)
        ref = reference(frames)
        row = {"clip": name, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "frames": len(frames)}
        for label, stylizer in variants.items():
            t = time.perf_counter()
            out = stylizer(frames)
            values = [psnr(a, b) for a, b in zip(out, ref)]
            row[label] = {"mean_db": float(np.mean(values)), "min_db": float(np.min(values)),
                          "seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"| {name} | {row['size']} | {row['frames']} | " + " | ".join(
            f"**{row[v]['mean_db']:.1f}** ({row[v]['min_db']:.1f})" for v in variants) + " |", flush=True)
    worst = min(row[v]["mean_db"] for row in rows for v in variants) if rows else float("nan")
    print(f"\nlowest mean PSNR over clips: {worst:.1f} dB (target >= 38 dB: {'met' if worst >= 38 else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
