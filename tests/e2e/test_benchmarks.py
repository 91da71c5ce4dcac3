"""Each benchmark script runs end to end in a tiny mode, so the benchmarks do not rot.

These check that the scripts work and report what they promise; they never
judge speed (timings on shared CI machines mean nothing: see docs/benchmarks.md).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, need_shared

BENCH = ROOT / "benchmarks"
pytestmark = pytest.mark.slow


def bench(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(BENCH / args[0]), *map(str, args[1:])], capture_output=True,
                          text=True, timeout=timeout)  # a liveness deadline, not a speed check
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_run_tiny_compares_baseline_stylempi_and_bare_network(tmp_path):
    need_shared("media", "flower.mp4")
    out = tmp_path / "run.json"
    proc = bench("run.py", "--tiny", "--json", out)
    row = json.loads(out.read_text())["rows"][0]
    assert row["verify_ok"]
    assert row["baseline"]["input_frames"] == 12 and row["baseline"]["dropped_frames"] == 0
    assert row["baseline"]["stylized_frames"] == 12
    assert row["bare"]["frames"] == 12
    assert row["warm"]["frames"] == 12
    assert "overhead" in proc.stdout and "ratio" in proc.stdout


def test_scaling_and_memory_tiny(tmp_path):
    plot = tmp_path / "plot.png"
    proc = bench("scaling.py", "--ranks", "2", "--frames", "16", "--sleep", "0.01", "--plot", plot,
                 "--json", tmp_path / "s.json")
    rows = json.loads((tmp_path / "s.json").read_text())
    assert rows[0]["ranks"] == 2 and rows[0]["frames"] == 16 and rows[0]["window_s"] > 0
    assert plot.stat().st_size > 1000 and "efficiency" in proc.stdout
    bench("memory.py", "--size", "64x48", "--seconds", "0.5,1", "--fps", "12", "--json", tmp_path / "m.json")
    rows = json.loads((tmp_path / "m.json").read_text())
    assert [r["frames"] for r in rows] == [6, 12]
    assert all(len(r["vm_hwm_kib"]) == 2 and min(r["vm_hwm_kib"]) > 0 for r in rows)


def test_temporal_cost_tiny_times_the_job_with_and_without_the_filter(tmp_path):
    out = tmp_path / "cost.json"
    proc = bench("temporal_cost.py", "--tiny", "--cache", tmp_path / "clips", "--json", out)
    [row] = json.loads(out.read_text())
    assert row["frames"] == 24 and row["ranks"] == 2
    assert len(row["off_s"]) == len(row["on_s"]) == 1 and min(row["off_s"] + row["on_s"]) > 0
    assert "on / off" in proc.stdout


def test_x264_repeat_counts_the_runs_whose_frames_differ():
    row = json.loads(bench("x264_repeat.py", "--runs", "2", "--processes", "2").stdout.splitlines()[-1])
    assert row["runs"] == 4 and row["size"] == "32x32" and not row["x264_avx512"]
    assert row["runs_with_other_frames"] == 0  # the same job, the same frames (x264 kept to AVX2)


def test_quality_tiny(tmp_path):
    need_shared("models", "pretrained", "mosaic_nc16.pth")
    bench("quality.py", "--frames", "1", "--clips", "cityCC0.mpg", "--json", tmp_path / "q.json")
    row = json.loads((tmp_path / "q.json").read_text())[0]
    assert row["clip"] == "cityCC0.mpg" and row["size"] == "720x405" and row["bf16"]["mean_db"] > 20


def test_all_py_judges_each_target_from_the_scripts_results():
    sys.path.insert(0, str(BENCH))
    try:
        from all import targets
    finally:
        sys.path.remove(str(BENCH))
    run = {"rows": [{"width": 32, "ratio_warm": 2.6, "ratio_cold": 1.3, "overhead": 1.04},
                    {"width": 8, "ratio_warm": 1.5, "ratio_cold": None, "overhead": 1.16}]}
    quality = [{"clip": "a.mp4", "bf16": {"mean_db": 39.0}}, {"clip": "b.mp4", "bf16": {"mean_db": 37.9}}]
    scaling = [{"ranks": 2, "efficiency": 0.99}, {"ranks": 16, "efficiency": 0.905}]
    memory = [{"seconds": 10, "peak_mib": [700, 690]}, {"seconds": 60, "peak_mib": [780, 700]}]
    rows = {name: (measured, met) for name, measured, met in targets(run, quality, scaling, memory)}
    assert [ok for _, ok in rows.values()] == [True, True, False, False, False, True, False]
    assert "37.9" in rows["bf16 vs fp32 mean PSNR >= 38 dB on every real clip"][0]
    assert "+11.4%" in rows["peak memory per rank flat within 10 % (10 s -> 60 s clip)"][0]
    assert len(rows) == 7


def test_stability_tiny(tmp_path):
    need_shared("media", "flower.mp4")
    pytest.importorskip("cv2", reason="the stability benchmark needs opencv-python-headless")
    bench("stability.py", "--clips", "flower.mp4", "--frames", "3", "--height", "90", "--styles", "scream",
          "--style-frames", "1", "--style-scale", "0.5", "--json", tmp_path / "s.json")
    row = json.loads((tmp_path / "s.json").read_text())[0]
    assert row["frames"] == 3 and row["size"] == "160x90" and row["e_warp"] > 0 and row["mean_abs_diff"] > 0
    bench("stability.py", "--speed", "--speed-frames", "1", "--repeats", "1", "--speed-scales", "1,0.25",
          "--json", tmp_path / "v.json")
    rows = json.loads((tmp_path / "v.json").read_text())
    assert [r["scale"] for r in rows] == [1.0, 0.25] and rows[1]["speedup_vs_scale_1"] > 0


def test_torch_colour_tiny_reports_each_clip_and_the_wrong_choices(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import common
    finally:
        sys.path.remove(str(BENCH))
    clip = common.make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=2)
    proc = bench("torch_colour.py", clip, "--frames", "1", "--speed")
    assert "torch to RGB" in proc.stdout and "swscale to YUV" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| clip.mp4 "))
    torch_db, wrong_siting, wrong_range = (float(c) for c in row.strip(" |").split(" | ")[-3:])
    assert torch_db >= 45 and torch_db > max(wrong_siting, wrong_range), row
