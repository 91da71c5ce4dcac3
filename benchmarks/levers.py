"""The bare network's speed under each lever, one at a time (docs/benchmarks.md, "Levers").

Times :class:`stylempi.network.stylize.NetworkStylizer` (the code `stylempi run` uses) on
real frames of the benchmark clip, after one untimed warm-up call (which holds
the compile when compiling; its time is reported apart). Each configuration runs
in fresh processes: ``--procs 2 --threads 1`` runs two processes of one thread
at once (the layout of `mpirun -n 2` here) and reports their combined rate.

    python benchmarks/levers.py                   # the whole table, 640x360, width 32
    python benchmarks/levers.py --frames 4 --size 64x48 --configs eager-bf16-cl-b2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: name -> (precision, channels_last, batch, compile)
CONFIGS = {
    "eager-fp32-b1": ("fp32", False, 1, False),
    "eager-fp32-cl-b1": ("fp32", True, 1, False),
    "eager-bf16-b1": ("bf16", False, 1, False),
    "eager-bf16-cl-b1": ("bf16", True, 1, False),
    "eager-bf16-cl-b2": ("bf16", True, 2, False),
    "eager-bf16-cl-b4": ("bf16", True, 4, False),
    "compile-bf16-cl-b1": ("bf16", True, 1, True),
    "compile-bf16-cl-b2": ("bf16", True, 2, True),
    "compile-bf16-cl-b4": ("bf16", True, 4, True),
}
DEFAULT_LAYOUTS = ("2x1",)  # procs x threads


def worker(args: argparse.Namespace) -> None:
    """One process: time one configuration on the clip's first frames; print JSON."""
    import torch
    from stylempi.media import decode_frames, index_frames
    from stylempi.network.model import load_network
    from stylempi.network.stylize import NetworkStylizer
    torch.set_num_threads(args.threads)
    precision, channels_last, batch, compile_ = CONFIGS[args.config]
    index = index_frames(args.clip, 0)
    frames = [rgb for _, rgb in decode_frames(args.clip, 0, index.pts[:args.frames])]
    network = load_network(Path(args.model).read_bytes())
    stylizer = NetworkStylizer(network, torch.device("cpu"), precision, batch, compile=compile_,
                               channels_last=channels_last)
    t = time.perf_counter()
    stylizer(frames[:batch])  # warm-up: first call (the compile, when compiling)
    warm = time.perf_counter() - t
    if args.barrier:  # start the timed part together with the other processes
        Path(args.barrier, f"ready-{os.getpid()}").touch()
        while len(list(Path(args.barrier).glob("ready-*"))) < args.procs:
            time.sleep(0.01)
    t = time.perf_counter()
    for start in range(0, len(frames), batch):
        stylizer(frames[start:start + batch])
    elapsed = time.perf_counter() - t
    print(json.dumps({"config": args.config, "frames": len(frames), "seconds": elapsed,
                      "warmup_s": warm}), flush=True)


def measure(config: str, clip: Path, model: Path, frames: int, procs: int, threads: int,
            cache: Path | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if cache is not None:
        env["STYLEMPI_COMPILE_CACHE"] = str(cache)
    with tempfile.TemporaryDirectory() as barrier:
        argv = [sys.executable, __file__, "--worker", "--config", config, "--clip", str(clip),
                "--model", str(model), "--frames", str(frames), "--threads", str(threads),
                "--procs", str(procs), "--barrier", barrier]
        running = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                   for _ in range(procs)]
        results = []
        for proc in running:
            out, err = proc.communicate(timeout=1800)
            if proc.returncode:
                raise RuntimeError(f"{config} failed:\n{err[-3000:]}")
            results.append(common.last_json(out))
    total = sum(r["frames"] for r in results)
    slowest = max(r["seconds"] for r in results)
    return {"config": config, "layout": f"{procs}x{threads}", "frames": total,
            "ms_per_frame": 1000 * slowest / total, "fps": total / slowest,
            "warmup_s": max(r["warmup_s"] for r in results)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--barrier", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--procs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=16, help="frames per process (default 16)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--width", type=int, default=32, help="network width (random weights)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--layouts", default=",".join(DEFAULT_LAYOUTS),
                    help="comma-separated PROCSxTHREADS, e.g. 2x1,1x2 (default 2x1)")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "stylempi" / "bench"),
                    help="clip, model and compiled networks kept between runs")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    cache = Path(args.cache_dir)
    w, h = map(int, args.size.split("x"))
    clip = common.cached_clip(cache, width=w, height=h, frames=max(30, args.frames * 2))
    model = common.random_model(cache / f"random-w{args.width}.pth", args.width)
    print(f"# levers: bare network, {w}x{h}, width {args.width}, {args.frames} frames per process; "
          f"{common.machine()}; {common.load_note()}", flush=True)
    print("| configuration | procs x threads | ms/frame | frames/s | first call s (compile, or cache load) |")
    print("|---|---|---|---|---|", flush=True)
    rows = []
    for layout in args.layouts.split(","):
        procs, threads = map(int, layout.split("x"))
        for config in args.configs.split(","):
            row = measure(config, clip, model, args.frames, procs, threads, cache / "inductor")
            rows.append(row)
            print(f"| {config} | {row['layout']} | {row['ms_per_frame']:.0f} | {row['fps']:.2f} | "
                  f"{row['warmup_s']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
