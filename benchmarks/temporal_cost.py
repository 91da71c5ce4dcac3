"""What the temporal filter costs a whole job: ``--temporal off`` against the default, in one run.

On ``benchmarks/run.py``'s clip (640x360 at 30 fps, flower's footage looped, H.264 + AAC) at
each ``--frames`` length, with random width-32 weights (timing does not depend on them), it
runs the default job

    mpirun -n RANKS stylempi run clip.mp4 out.mp4 --model w32.pth --restart [--temporal off]

once untimed (the compile cache is filled), then ``--rounds`` times each, off and on
alternated so that a machine that slows down slows both alike, and prints every wall time and
the ratio of the medians, on / off (the target is 1.3x or less, docs/benchmarks.md, "The
temporal filter").

    python benchmarks/temporal_cost.py [--frames 300,900] [--rounds 2] [--ranks 2]
    python benchmarks/temporal_cost.py --tiny      # seconds: a smoke test of the machinery
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def timed_job(clip: Path, model: Path, out: Path, ranks: int, temporal: str) -> float:
    argv = common.mpirun(ranks, [*common.stylempi_cli(), "run", clip, out, "--model", model, "--restart",
                                 "--quiet", "--temporal", temporal])
    seconds, _ = common.run_timed(argv, env=common.mpi_env())
    return seconds


def measure(frames: int, rounds: int, ranks: int, work: Path, cache: Path, size: tuple[int, int]) -> dict:
    clip = common.cached_clip(cache, width=size[0], height=size[1], frames=frames)
    model = common.random_model(work / "w32.pth", 32)
    out = work / "out.mp4"
    timed_job(clip, model, out, ranks, "off")  # fills the compile cache
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for mode in ("off", "on"):
            times[mode].append(timed_job(clip, model, out, ranks, mode))
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    return {"frames": frames, "ranks": ranks, "off_s": times["off"], "on_s": times["on"], "ratio": ratio}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="300,900", help="clip lengths, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "stylempi-bench-clips")
    ap.add_argument("--tiny", action="store_true", help="a 24-frame 64x48 clip, one round")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    lengths = [24] if args.tiny else [int(n) for n in args.frames.split(",")]
    size = (64, 48) if args.tiny else (640, 360)
    rounds = 1 if args.tiny else args.rounds
    print(f"# {common.machine()}; {common.load_note()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames in lengths:
            row = measure(frames, rounds, args.ranks, Path(tmp), args.cache, size)
            rows.append(row)
            print(f"{frames} frames, {args.ranks} ranks: off {', '.join(f'{s:.1f}' for s in row['off_s'])} s; "
                  f"on {', '.join(f'{s:.1f}' for s in row['on_s'])} s; on / off {row['ratio']:.2f}x", flush=True)
    print(f"# {common.load_note()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
