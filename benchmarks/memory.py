"""Peak resident memory per rank must not grow with video length (frames are streamed).

Runs the real job (benchmarks/scaling_job.py: real decode, encode, join; the
stand-in model by default, ``--network`` for the real width-8 network) under
``mpirun -n 2`` on a short and a long 1080p clip, and reads each rank's VmHWM
(/proc/self/status) at the end of the job.

    python benchmarks/memory.py                      # 1920x1080, 10 s and 60 s at 24 fps
    python benchmarks/memory.py --size 320x180 --seconds 1,3    # a quick check
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent


def measure(seconds: list[float], size: tuple[int, int], fps: int, ranks: int, network: bool, sleep: float,
            work: Path, chunk_frames: int | None = None) -> list[dict]:
    model = common.pretrained(8) or common.random_model(work / "w8.pth", 8)
    rows = []
    for s in seconds:
        frames = int(round(s * fps))
        clip = common.make_clip(work / f"mem-{s:g}s.mp4", width=size[0], height=size[1], frames=frames, fps=fps,
                                gop=2 * fps)
        argv = [sys.executable, HERE / "scaling_job.py", clip, work / f"mem-out-{s:g}s.mp4", model,
                "--sleep", str(sleep)]
        if network:
            argv += ["--network", "--batch-size", "2"]
        if chunk_frames:
            argv += ["--chunk-frames", str(chunk_frames)]
        wall, proc = common.run_timed(common.mpirun(ranks, argv), env=common.mpi_env())
        r = common.last_json(proc.stdout)
        r.update(seconds=s, wall_s=wall, peak_mib=[k / 1024 for k in r["vm_hwm_kib"]])
        rows.append(r)
        print(f"{s:g} s ({frames} frames): peak RSS per rank {', '.join(f'{m:.0f}' for m in r['peak_mib'])} MiB "
              f"(job {wall:.0f} s); rank 0's resident memory along the job: "
              f"{' '.join(str(m) for m in r.get('rss_mib_rank0', []))} MiB", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", default="10,60")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--network", action="store_true", help="the real width-8 network instead of the stand-in")
    ap.add_argument("--sleep", type=float, default=0.0, help="stand-in seconds per frame")
    ap.add_argument("--chunk-frames", type=int, default=None, help="the same chunk length for every clip")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    size = tuple(map(int, args.size.split("x")))
    seconds = [float(s) for s in args.seconds.split(",")]
    model = "the real width-8 network" if args.network else f"the stand-in ({args.sleep * 1000:.0f} ms/frame)"
    print(f"# memory: {size[0]}x{size[1]} at {args.fps} fps, {args.ranks} ranks, {model}; {common.machine()}; "
          f"{common.load_note()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="stylempi-memory-") as tmp:
        rows = measure(seconds, size, args.fps, args.ranks, args.network, args.sleep, Path(tmp),
                       args.chunk_frames)
    print("\n| clip | frames | peak RSS per rank (VmHWM) MiB | max MiB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['seconds']:g} s | {r['frames']} | {' / '.join(f'{m:.0f}' for m in r['peak_mib'])} | "
              f"{max(r['peak_mib']):.0f} |")
    growth = max(rows[-1]["peak_mib"]) / max(rows[0]["peak_mib"]) - 1
    print(f"\ngrowth of the largest rank's peak from {rows[0]['seconds']:g} s to {rows[-1]['seconds']:g} s: "
          f"{growth:+.1%} (target: within 10%)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
