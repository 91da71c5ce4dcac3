"""benchmarks/gpu.py in its CPU mode, so the GPU benchmark works when a GPU is lent.

The whole script runs on the CPU at 160x90 (the network, x264's ceiling, ``stylempi
run`` on 1 and 2 ranks, the reference method); the helpers that read a run's summary
line and turn engine choices into flags are checked on their own, and so is the
reference's path without an ``ffmpeg`` command (a lent GPU machine may have none).
Nothing here judges speed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT

BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def gpu():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu as module
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.mark.slow
def test_cpu_mode_reports_network_x264_runs_and_reference(tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("the reference method needs the ffmpeg command (apt-get install ffmpeg)")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--device", "cpu", "--size", "160x90",
                           "--frames", "12", "--ranks", "1,2", "--engines", "cpu,convert=torch", "--json",
                           str(out)],
                          capture_output=True, text=True, timeout=180)  # a liveness deadline: ~25 s idle
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["nvenc"] == {} and report["nvdec"] == "n/a"
    assert [(r["width"], r["precision"], r["compiled"]) for r in report["bare"]] == [(32, "fp32", False)]
    assert report["bare_denominator"]["fps"] == report["bare"][0]["gpu_fps"] > 0

    assert [r["encoders"] for r in report["x264"]] == [1, 2]
    for r in report["x264"]:
        assert r["frames"] == 12 and r["fps"] > 0 and r["codec"] == "libx264"
        assert r["options"]["bf"] == "0" and r["options"]["preset"] == "medium"  # the job's own options

    assert [(r["label"], r["ranks"]) for r in report["jobs"]] == [("cpu", 1), ("cpu", 2), ("convert=torch", 1),
                                                                  ("convert=torch", 2)]
    for r in report["jobs"]:
        torch_path = r["label"] == "convert=torch"
        assert r["verify_ok"] and r["frames"] == 12
        assert r["flags"] == ["--device", "cpu", "--precision", "fp32"] + (["--convert", "torch"] if torch_path else [])
        assert r["engines"] == "cpu fp32 batch 2" and r["encoder"] == "libx264" and r["x264"].startswith("libx264")
        assert r["engine_fields"] == {"decode": "cpu", "convert": "torch" if torch_path else "ffmpeg",
                                      "encode": "libx264"}
        assert r["gpu_pct"] is None and r["gpu_source"] == "n/a"
        assert r["ratio_bare"] > 0 and r["ratio_reference"] > 0 and r["wall_s"] > 0

    assert [r["ranks"] for r in report["reference"]] == [1, 2] and report["reference_tool"] == "ffmpeg command"
    for r in report["reference"]:
        assert r["device"] == "cpu" and r["input_frames"] == 12 and r["stylized_frames"] == 12 and r["fps"] > 0
        assert r["tool"] == "ffmpeg command"

    table = out.with_suffix(".md").read_text()
    assert table.strip() in proc.stdout
    assert "| cpu | 2 |" in table and "stylempi / reference >= 3x" in table and "n/a" in table


def test_engine_choices_become_run_flags(gpu):
    specs = gpu.parse_engines("cpu,convert=torch,decode=gpu+convert=torch+codec=auto")
    assert specs == [("cpu", []), ("convert=torch", ["--convert", "torch"]),
                     ("decode=gpu+convert=torch+codec=auto",
                      ["--decode", "gpu", "--convert", "torch", "--codec", "auto"])]
    for bad in ("decode", "decode=", "=gpu", "Decode=gpu", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            gpu.parse_engines(bad)


def test_summary_lines_with_and_without_engine_names(gpu):
    today = ("stylempi: 300 frames in 14.4 s (20.83 frames/s) on 2 ranks (cuda fp16 batch 8); 4 chunks, 0 reused; "
             "plan 0.3 s, stylize 7.4 s (summed over ranks: decode 3.6 s, network 12.0 s, encode 8.4 s), "
             "assemble 0.2 s -> /tmp/out.mp4")
    assert gpu.engines_named(today) == ("cuda fp16 batch 8", {})
    assert gpu.encoder_of({"engines": "cuda fp16 batch 8", "engine_fields": {}}, []) == "libx264"
    assert gpu.encoder_of({"engines": "", "engine_fields": {}}, ["--codec", "auto"]) == "auto"
    named = today.replace("(cuda fp16 batch 8)", "(cuda fp16 batch 8), decode gpu, convert torch, encode h264_nvenc")
    engines, fields = gpu.engines_named(named)
    assert engines == "cuda fp16 batch 8"
    assert fields == {"decode": "gpu", "convert": "torch", "encode": "h264_nvenc"}
    row = {"engines": engines, "engine_fields": fields}
    assert gpu.encoder_of(row, ["--codec", "auto"]) == "h264_nvenc"
    assert gpu.x264_note({**row, "encoder": "h264_nvenc"}, {"fps": 40.0}) == "-"
    bound = {"encoder": "libx264", "frames": 300.0, "stylize_s": 9.0}
    assert gpu.x264_note(bound, {"fps": 40.0}).endswith("(**ceiling reached**)")
    assert "reached" not in gpu.x264_note({**bound, "stylize_s": 30.0}, {"fps": 40.0})
    assert gpu.engines_named("stylempi: 3 frames in 1.0 s on 1 rank; 1 chunks") == ("", {})


def test_a_failed_run_is_a_row_of_the_table(gpu):
    exc = RuntimeError("command failed (2): mpirun -n 2 stylempi run ...\n\nusage: stylempi run ...\n"
                       "stylempi: error: unrecognized arguments: --convert torch\n")
    reason = gpu.failure_reason(exc)
    assert reason == "stylempi: error: unrecognized arguments: --convert torch"
    report = {"card": "c", "size": "160x90", "frames": 12, "started": "now", "took_s": 1.0, "load": "idle",
              "device": "cpu", "bare_denominator": {"compiled": False, "fps": 10.0},
              "bare": [], "x264": [{"encoders": 1, "error": "boom"}], "reference": [],
              "jobs": [{"label": "convert=torch", "ranks": 2, "error": reason}]}
    table = gpu.markdown(report)
    assert f"| convert=torch | 2 | failed: {reason} |" in table
    assert "| 1 | failed: boom |" in table and "not run (--skip-baseline)" in table


@pytest.mark.slow
def test_without_an_ffmpeg_command_the_reference_runs_its_steps_through_pyav(gpu, monkeypatch, tmp_path):
    """A lent GPU machine may have no ffmpeg command: the reference's split and join go through PyAV."""
    import av
    clip = gpu.common.make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=6)
    model = gpu.common.random_model(tmp_path / "w8.pth", 8)
    monkeypatch.setattr(gpu.common, "find_ffmpeg", lambda: None)
    with pytest.raises(SystemExit, match="apt-get install ffmpeg"):
        gpu.run_baseline(clip, model, tmp_path / "refused", 1)  # make bench's baseline: the command or nothing
    row = gpu.run_baseline(clip, model, tmp_path / "reference", 1, allow_pyav=True)
    assert row["tool"] == "PyAV (no ffmpeg command)" and row["input_frames"] == row["stylized_frames"] == 6
    assert len(list((tmp_path / "reference" / "frames").glob("*_video.jpg"))) == 6
    with av.open(row["output"]) as out:
        assert [s.type for s in out.streams] == ["video", "audio"]
        assert sum(1 for _ in out.decode(video=0)) == 6


def test_no_gpu_figures_without_a_gpu(gpu):
    with gpu.Busy(None) as busy:
        time.sleep(0.1)  # /proc/stat counts in 10 ms ticks
    assert busy.gpu_pct is None and busy.source == "n/a" and busy.cpu_pct is not None
    import torch
    if not torch.cuda.is_available():
        assert all(v.startswith("no") for v in gpu.probe_nvenc().values())
