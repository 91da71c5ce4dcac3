"""Scaling without a cluster: parallel efficiency of the real MPI pipeline at N = 2, 4, 8, 16.

Runs benchmarks/scaling_job.py under ``mpirun -n N --oversubscribe``: the real job
(index, plan, scatter, decode, encode, gather, join) on a 320x180 H.264 + AAC clip,
with a stand-in model that sleeps 100 ms per frame (GPU-like: the CPU stays free
for decoding and encoding). For each N it reports

    efficiency = (frames x 0.1 s / N) / (wall time from the scatter to the closed output)

and the start-up (launch until every rank has imported and met: reported apart),
then draws throughput against ranks (docs/benchmarks-scaling.png by default).

The temporal filter is off here unless ``--temporal on``: the stand-in sleeps so
that 16 ranks fit on 2 cores as 16 GPU ranks would on 16 nodes, but the filter is
CPU work on every frame, which here all 16 ranks would do on the same 2 cores.
Its cost on a whole job is benchmarks/temporal_cost.py's measure.

    python benchmarks/scaling.py                       # N = 2,4,8,16, 120 frames per rank (N=16: 1920)
    python benchmarks/scaling.py --ranks 2,4 --frames 96 --sleep 0.02 --plot none
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from plot import line_plot  # noqa: E402

HERE = Path(__file__).resolve().parent


def run_scaling(ranks: list[int], frames: int | None, sleep: float, work: Path, size=(320, 180),
                per_rank: int = 120, temporal: str = "off") -> list[dict]:
    """``frames`` None: ``per_rank`` x N frames for N ranks (every N has the same ideal time)."""
    model = common.random_model(work / "w8.pth", 8)
    rows = []
    for n in ranks:
        count = frames or per_rank * n
        clip = work / f"scaling-{count}.mp4"
        if not clip.exists():
            common.make_clip(clip, width=size[0], height=size[1], frames=count, gop=30)
        frames_n = count
        launched = time.time()
        _, proc = common.run_timed(common.mpirun(n, [sys.executable, HERE / "scaling_job.py", clip,
                                                     work / f"out-{n}.mp4", model, "--sleep", str(sleep),
                                                     "--temporal", temporal, "--launched", str(launched)]),
                                   env=common.mpi_env())
        r = common.last_json(proc.stdout)
        ideal = frames_n * sleep / n
        r.update(ideal_s=ideal, efficiency=ideal / r["window_s"], fps=frames_n / r["window_s"])
        rows.append(r)
        print(f"N={n:2d}: window {r['window_s']:.2f} s (ideal {ideal:.2f} s), efficiency {r['efficiency']:.1%}, "
              f"{r['fps']:.1f} frames/s; start-up {r['startup_s']:.1f} s, plan {r['plan_s']:.2f} s, "
              f"latest first call {r['first_call_s']:.2f} s, latest last return {r['last_return_s']:.2f} s, "
              f"tail {r['tail_s']:.2f} s (assemble {r['assemble_s']:.2f} s)", flush=True)
    return rows


def table(rows: list[dict], sleep: float) -> str:
    lines = ["| ranks N | frames | chunks | ideal (frames x %.2f s / N) s | scatter -> closed output s | efficiency "
             "| frames/s | start-up s (launch -> all ranks ready) | plan s (index, plan, bcast) | assemble s |" % sleep,
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ranks']} | {r['frames']} | {r['chunks']} | {r['ideal_s']:.2f} | {r['window_s']:.2f} | "
                     f"**{r['efficiency']:.1%}** | {r['fps']:.1f} | {r['startup_s']:.1f} | {r['plan_s']:.2f} | "
                     f"{r['assemble_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="2,4,8,16")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames for every N (default: --per-rank x N, the same ideal time for every N)")
    ap.add_argument("--per-rank", type=int, default=120)
    ap.add_argument("--sleep", type=float, default=0.1)
    ap.add_argument("--temporal", choices=("on", "off"), default="off",
                    help="the temporal filter (off: the stand-in's ranks share this machine's cores)")
    ap.add_argument("--plot", default=str(common.ROOT / "docs" / "benchmarks-scaling.png"),
                    help="PNG to draw, or 'none'")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    ranks = [int(n) for n in args.ranks.split(",")]
    amount = f"{args.frames} frames" if args.frames else f"{args.per_rank} frames per rank"
    print(f"# scaling: 320x180, {amount}, stand-in {args.sleep * 1000:.0f} ms/frame, temporal filter "
          f"{args.temporal}; "
          f"{common.machine()}; {common.load_note()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="stylempi-scaling-") as tmp:
        rows = run_scaling(ranks, args.frames, args.sleep, Path(tmp), per_rank=args.per_rank,
                           temporal=args.temporal)
    print("\n" + table(rows, args.sleep), flush=True)
    if args.plot != "none":
        line_plot(Path(args.plot), [r["ranks"] for r in rows],
                  {"measured": [r["fps"] for r in rows], "ideal": [r["ranks"] / args.sleep for r in rows]},
                  title=f"stylempi throughput vs ranks (stand-in model {args.sleep * 1000:.0f} ms/frame, "
                        f"320x180, {amount})", xlabel="MPI ranks", ylabel="frames/s")
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
