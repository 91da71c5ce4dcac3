"""The speed benchmark: stylempi against the reference method, in one run.

On one generated clip (640x360, 300 frames at 30 fps, H.264 + AAC: flower.mp4's
footage scaled and looped, nasa_13013.mp4's real sound), with the same network
and the same number of ranks, it times

1. **baseline**: the reference architecture's method (benchmarks/baseline.py:
   ffmpeg to JPEG files, a static split over MPI ranks, one fp32 frame at a time
   through PIL, ffmpeg re-encode and audio remux);
2. **stylempi**: ``mpirun -n N stylempi run CLIP OUT --model M`` at its defaults,
   twice: *cold* (an empty compile cache; the job prints its compile time) and
   *warm* (the cache the cold run left: the steady state of a machine that has
   run a job before); widths without a cold run compile in the bare run's warm-up;
3. **bare**: the network alone on the same frames with the same settings and
   ranks (benchmarks/bare_job.py), timed after an untimed warm-up (the compile,
   or the load of the package the cold run left).

and prints frames/s for each, stylempi/baseline ratios, and the **overhead**
(stylempi's end-to-end wall time, warm, divided by the bare network's time).
Width 32 uses random weights (timing does not depend on them); widths 16 and 8
use the real mosaic checkpoints of ../shared when present.

    python benchmarks/run.py                    # the full benchmark (~14 min on 2 idle cores)
    python benchmarks/run.py --widths 32        # width 32 only
    python benchmarks/run.py --tiny             # seconds: a smoke test of the machinery
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from baseline import run_baseline  # noqa: E402

HERE = Path(__file__).resolve().parent
SUMMARY = re.compile(r"stylempi: (\d+) frames in ([\d.]+) s .*plan ([\d.]+) s, stylize ([\d.]+) s "
                     r"\(summed over ranks: decode ([\d.]+) s, network ([\d.]+) s, encode ([\d.]+) s\), "
                     r"assemble ([\d.]+) s")
COMPILE = re.compile(r"assemble [\d.]+ s, compile ([\d.]+) s")


def run_stylempi(clip: Path, model: Path, out: Path, ranks: int, cache: Path, extra: list[str]) -> dict:
    env = common.mpi_env({"STYLEMPI_COMPILE_CACHE": str(cache)})
    argv = common.mpirun(ranks, [*common.stylempi_cli(), "run", clip, out, "--model", model, *extra])
    wall, proc = common.run_timed(argv, env=env)
    match = SUMMARY.search(proc.stdout)
    result = {"wall_s": wall}
    if match:
        keys = ("frames", "job_s", "plan_s", "stylize_s", "decode_s", "network_s", "encode_s", "assemble_s")
        result.update({k: float(v) for k, v in zip(keys, match.groups())})
    compiled = COMPILE.search(proc.stdout)
    result["compile_s"] = float(compiled.group(1)) if compiled else 0.0
    return result


def run_bare(clip: Path, model: Path, ranks: int, cache: Path, extra: list[str]) -> dict:
    env = common.mpi_env({"STYLEMPI_COMPILE_CACHE": str(cache)})
    _, proc = common.run_timed(common.mpirun(ranks, [sys.executable, HERE / "bare_job.py", clip, model,
                                                     *extra]), env=env)
    return common.last_json(proc.stdout)


def verify(clip: Path, out: Path) -> bool:
    _, proc = common.run_timed([*common.stylempi_cli(), "verify", clip, out], env=common.mpi_env())
    return json.loads(proc.stdout)["ok"]


def bench_width(width: int, clip: Path, work: Path, ranks: int, cold: bool, extra: list[str]) -> dict:
    model = common.pretrained(width) if width != 32 else None
    weights = "mosaic (real)" if model else "random"
    if model is None:
        model = common.random_model(work / f"random-w{width}.pth", width)
    cache = work / f"inductor-w{width}"
    shutil.rmtree(cache, ignore_errors=True)
    row: dict = {"width": width, "weights": weights}
    print(f"## width {width} ({weights} weights)", flush=True)

    row["baseline"] = run_baseline(clip, model, work / f"baseline-w{width}", ranks)
    print(f"  baseline: {row['baseline']['wall_s']:.1f} s, {row['baseline']['fps']:.2f} frames/s "
          f"({row['baseline']['dropped_frames']} frames dropped by the static split)", flush=True)

    out = work / f"stylempi-w{width}.mp4"
    if cold:
        # The cold run first, on the empty cache: it compiles and leaves the package that
        # the bare run and the warm run then load (one compile per width, not two).
        row["cold"] = run_stylempi(clip, model, out, ranks, cache, extra)
        row["cold"]["fps"] = row["baseline"]["input_frames"] / row["cold"]["wall_s"]
        print(f"  stylempi (cold cache): {row['cold']['wall_s']:.1f} s, {row['cold']['fps']:.2f} frames/s "
              f"(compile {row['cold']['compile_s']:.1f} s)", flush=True)

    # The bare network's untimed warm-up is the compile (or, after a cold run, the package load).
    row["bare"] = run_bare(clip, model, ranks, cache, extra)
    print(f"  bare network: {row['bare']['bare_s']:.1f} s, {row['bare']['frames'] / row['bare']['bare_s']:.2f} "
          f"frames/s (compiled {row['bare']['compiled']}; first call {row['bare']['warmup_s']:.1f} s)",
          flush=True)

    row["warm"] = run_stylempi(clip, model, out, ranks, cache, extra)
    row["warm"]["fps"] = row["baseline"]["input_frames"] / row["warm"]["wall_s"]
    print(f"  stylempi (warm cache): {row['warm']['wall_s']:.1f} s, {row['warm']['fps']:.2f} frames/s",
          flush=True)
    row["verify_ok"] = verify(clip, out)
    row["compile_s"] = row["cold"]["compile_s"] if "cold" in row else row["bare"]["warmup_s"]
    row["ratio_warm"] = row["warm"]["fps"] / row["baseline"]["fps"]
    row["ratio_cold"] = row["cold"]["fps"] / row["baseline"]["fps"] if "cold" in row else None
    row["overhead"] = row["warm"]["wall_s"] / row["bare"]["bare_s"]
    row["overhead_in_job"] = row["warm"].get("job_s", row["warm"]["wall_s"]) / row["bare"]["bare_s"]
    return row


def report(rows: list[dict], args, header: str) -> str:
    lines = [header, "",
             "| width | baseline frames/s | stylempi frames/s (warm) | ratio (warm) | stylempi frames/s (cold) "
             "| ratio (cold) | bare network frames/s | overhead (end to end / bare) | overhead (job / bare) "
             "| compile (cold, first call) | verify |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cold = f"{r['cold']['fps']:.2f}" if "cold" in r else "-"
        ratio_cold = f"{r['ratio_cold']:.2f}x" if r["ratio_cold"] else "-"
        bare_fps = r["bare"]["frames"] / r["bare"]["bare_s"]
        compile_s = f"{r['compile_s']:.1f} s" if r["bare"]["compiled"] else "not compiled"
        lines.append(f"| {r['width']} ({r['weights']}) | {r['baseline']['fps']:.2f} | {r['warm']['fps']:.2f} | "
                     f"**{r['ratio_warm']:.2f}x** | {cold} | {ratio_cold} | {bare_fps:.2f} | "
                     f"**{r['overhead']:.3f}** | {r['overhead_in_job']:.3f} | {compile_s} | "
                     f"{'ok' if r['verify_ok'] else 'FAILED'} |")
    lines += ["", "| width | baseline: ffmpeg split / stylize / join s | stylempi warm: wall / in-job / plan / "
              "stylize / assemble s | summed over ranks: decode / network / encode s |", "|---|---|---|---|"]
    for r in rows:
        b, w = r["baseline"], r["warm"]
        lines.append(f"| {r['width']} | {b['split_s']:.1f} / {b['stylize_s']:.1f} / {b['join_s']:.1f} | "
                     f"{w['wall_s']:.1f} / {w.get('job_s', 0):.1f} / {w.get('plan_s', 0):.1f} / "
                     f"{w.get('stylize_s', 0):.1f} / {w.get('assemble_s', 0):.1f} | "
                     f"{w.get('decode_s', 0):.1f} / {w.get('network_s', 0):.1f} / {w.get('encode_s', 0):.1f} |")
    dropped = rows[0]["baseline"]["dropped_frames"] if rows else 0
    lines += ["", f"Baseline frames/s counts the input's {rows[0]['baseline']['input_frames'] if rows else 0} "
              f"frames; its static split dropped {dropped} of them here (len % ranks)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--widths", default="32,16,8")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache stylempi runs")
    ap.add_argument("--cold-widths", default="32",
                    help="widths that also get a cold-cache stylempi run (default 32: keeps the run under 20 min)")
    ap.add_argument("--tiny", action="store_true", help="64x48, 12 frames, width 8, no cold run: a smoke test")
    ap.add_argument("--work", type=Path, default=None, help="keep the clip and outputs here")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    ap.add_argument("stylempi_args", nargs="*", help="extra `stylempi run` flags after --, e.g. -- --compile off")
    args = ap.parse_args(argv)
    if args.tiny:
        args.frames, args.size, args.widths, args.no_cold = 12, "64x48", "8", True
    width_px, height_px = map(int, args.size.split("x"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stylempi-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        header = (f"# stylempi benchmark: {width_px}x{height_px}, {args.frames} frames at 30 fps, H.264 + AAC, "
                  f"{args.ranks} ranks; {common.machine()}; {common.load_note()}")
        print(header, flush=True)
        clip = common.make_clip(work / "clip.mp4", width=width_px, height=height_px, frames=args.frames)
        cold = set() if args.no_cold else set(args.cold_widths.split(","))
        rows = [bench_width(int(w), clip, work, args.ranks, w in cold, args.stylempi_args)
                for w in args.widths.split(",")]
    text = report(rows, args, header + f"; benchmark took {time.perf_counter() - started:.0f} s, "
                                       f"{common.load_note().split(',')[0].replace('at start', 'at end')}")
    print("\n" + text, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "header": header}, indent=1, default=str))
    return 0 if all(r["verify_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
