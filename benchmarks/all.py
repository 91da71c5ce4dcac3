"""Every figure of the speed issue in one command, and the targets met or missed.

Runs, one after the other (never at once: they would share the cores), each
script's own tables printed as it goes:

1. ``run.py``      stylempi against the reference method: frames/s, ratio, overhead
2. ``quality.py``  bf16 against fp32: mean PSNR per real clip
3. ``scaling.py``  parallel efficiency at N = 2, 4, 8, 16 with the 100 ms stand-in
4. ``memory.py``   peak resident memory per rank, 10 s and 60 s of 1080p

then one table of the targets with what was measured. Extra arguments go to
``run.py`` (``--widths 32`` for a shorter run).

    python benchmarks/all.py            # 18.9 min on 2 idle cores (measured; run.py is 13.6 of them)
    python benchmarks/all.py --tiny     # a smoke test of the machinery (about a minute)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402


def _run(script: str, args: list[str]) -> float:
    print(f"\n## {script} {' '.join(args)}\n", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / script), *args])
    if done.returncode != 0:
        print(f"(benchmarks/{script} exited with {done.returncode})", flush=True)
    return time.perf_counter() - started


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def targets(run: dict | None, quality: list | None, scaling: list | None, memory: list | None) -> list[tuple]:
    """(target, measured, met) rows from the scripts' JSON results."""
    rows = []
    if run:
        for r in run["rows"]:
            width = r["width"]
            rows.append((f"width {width}: stylempi / baseline frames/s >= 2.5x (warm compile cache)",
                         f"{r['ratio_warm']:.2f}x (cold {r['ratio_cold']:.2f}x)" if r.get("ratio_cold")
                         else f"{r['ratio_warm']:.2f}x", r["ratio_warm"] >= 2.5))
            rows.append((f"width {width}: overhead (end to end / bare network) <= 1.10", f"{r['overhead']:.3f}",
                         r["overhead"] <= 1.10))
    if quality:
        worst = min(q["bf16"]["mean_db"] for q in quality)
        per_clip = ", ".join(f"{q['clip']} {q['bf16']['mean_db']:.1f}" for q in quality)
        rows.append(("bf16 vs fp32 mean PSNR >= 38 dB on every real clip", f"lowest {worst:.1f} dB ({per_clip})",
                     worst >= 38))
    if scaling:
        last = max(scaling, key=lambda r: r["ranks"])
        rows.append((f"parallel efficiency >= 90 % at {last['ranks']} simulated ranks",
                     " / ".join(f"N={r['ranks']} {r['efficiency']:.1%}" for r in scaling), last["efficiency"] >= 0.90))
    if memory and len(memory) >= 2:
        growth = max(memory[-1]["peak_mib"]) / max(memory[0]["peak_mib"]) - 1
        rows.append((f"peak memory per rank flat within 10 % ({memory[0]['seconds']:g} s -> "
                     f"{memory[-1]['seconds']:g} s clip)",
                     f"{max(memory[0]['peak_mib']):.0f} -> {max(memory[-1]['peak_mib']):.0f} MiB ({growth:+.1%})",
                     abs(growth) <= 0.10))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes everywhere: checks the machinery, not speed")
    ap.add_argument("run_args", nargs="*", help="extra arguments for run.py, after --")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    print(f"# stylempi: all benchmarks; {common.machine()}; {common.load_note()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="stylempi-all-") as tmp:
        out = Path(tmp)
        if args.tiny:
            plan = [("run.py", ["--tiny"]), ("quality.py", ["--frames", "2", "--clips", "flower_vfr.mp4"]),
                    ("scaling.py", ["--ranks", "2", "--frames", "24", "--sleep", "0.01", "--plot", str(out / "s.png")]),
                    ("memory.py", ["--size", "160x96", "--seconds", "1,2"])]
        else:
            # Kept under 20 minutes: quality on 10 frames per clip (20 took a minute more),
            # scaling with 120 frames per rank (N=16 still gets 1920; N=2 got 1920 too, 96 s).
            plan = [("run.py", list(args.run_args)), ("quality.py", ["--frames", "10"]), ("scaling.py", []),
                    ("memory.py", [])]
        seconds = {}
        for script, script_args in plan:
            seconds[script] = _run(script, [*script_args, "--json", str(out / f"{script}.json")])
        results = {script: _load(out / f"{script}.json") for script, _ in plan}
    rows = targets(results["run.py"], results["quality.py"], results["scaling.py"], results["memory.py"])
    total = time.perf_counter() - started
    print(f"\n## Targets\n\n{len(rows)} targets; all benchmarks took {total / 60:.1f} min "
          f"({', '.join(f'{k} {v / 60:.1f}' for k, v in seconds.items())}); {common.load_note().split(',')[0]}\n")
    print("| target | measured | met |\n|---|---|---|")
    for name, measured, met in rows:
        print(f"| {name} | {measured} | {'yes' if met else '**no**'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
