"""The GPU benchmark: frames/s per GPU at 1080p, with the stage breakdown.

Run on a machine with a CUDA GPU (the `device` tool's lent H100/H200 here). On one
generated 1080p clip (flower.mp4's footage scaled and looped, H.264 + AAC: the clip
of benchmarks/run.py at another size) it measures

1. **network alone** for each width (32: random weights; 16 and 8: the real mosaic
   checkpoints when ../shared is present), at the GPU defaults (fp16, batch 8,
   channels-last, eager) and width 32 in fp32 too, two ways:
   *on the GPU* (uint8 frames already on the card: pad, network, crop, round) and
   *from host memory* (numpy frames in, numpy frames out: `NetworkStylizer` as the
   job calls it, the copies over PCIe and the batch stacking included);
2. **`stylempi run`** on the same clip with N ranks sharing the one GPU (N=1 a plain
   process, N>1 under mpirun), width 32 at its defaults: wall time, frames/s, and
   the stage times summed over ranks (decode, network, encode) that the job prints,
   then `stylempi verify`.

    python benchmarks/gpu.py [--size 1920x1080] [--frames 300] [--ranks 1,2,4]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from run import SUMMARY  # noqa: E402


def card() -> str:
    import torch
    props = torch.cuda.get_device_properties(0)
    text = f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)"
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True)
        if q.returncode == 0:
            text += f", driver {q.stdout.strip()}"
    return text + f", torch {torch.__version__}, {len(os.sched_getaffinity(0))} CPU cores"


def decode_all(clip: Path) -> list:
    from stylempi.media import decode_frames, index_frames, open_input, pick_video_stream
    with open_input(clip) as container:
        stream = pick_video_stream(container).index
    pts = index_frames(clip, stream).pts
    return [rgb for _, rgb in decode_frames(clip, stream, pts)]


def bare(network_path: Path, frames: list, precision: str, batch: int, device_name: str = "cuda",
         compiled: bool = False) -> dict:
    """Frames/s of the network on the GPU alone, and called from host memory as the job calls it."""
    import numpy as np
    import torch
    from stylempi.model import load_network
    from stylempi.stylize import NetworkStylizer
    device = torch.device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stylizer = NetworkStylizer(load_network(network_path.read_bytes()), device, precision, batch,
                               compile=compiled, require_compile=compiled)
    t = time.perf_counter()
    stylizer(frames[:batch])  # warm-up: cuDNN picks its algorithms; the compile (or cache load)
    sync()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, len(frames), batch):
        stylizer(frames[start:start + batch])
    host = time.perf_counter() - t
    on_gpu = torch.from_numpy(np.stack(frames[:batch])).to(device)
    step = stylizer._runners[(*on_gpu.shape, str(on_gpu.dtype))] if compiled else stylizer._forward
    rounds = max(1, len(frames) // batch)
    with torch.inference_mode():
        step(on_gpu)
        sync()
        t = time.perf_counter()
        for _ in range(rounds):
            step(on_gpu)
        sync()
    gpu = time.perf_counter() - t
    return {"precision": precision, "batch": batch, "compiled": compiled, "first_call_s": first,
            "gpu_fps": rounds * batch / gpu,
            "host_fps": len(frames) / host,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0}


def levers(network_path: Path, frames: list, batch: int = 8) -> list[dict]:
    """Width 32 fp16 on the GPU under each candidate setting (uint8 frames already on the card),
    and where the time of one batch goes (torch.profiler, the default setting)."""
    import numpy as np
    import torch
    from stylempi.model import load_network
    from stylempi.stylize import NetworkStylizer
    device = torch.device("cuda")
    on_gpu = {b: torch.from_numpy(np.stack(frames[:b])).to(device) for b in (batch, 4)}
    rows = []
    variants = [("channels-last, cudnn.benchmark off", True, False, batch, False),
                ("channels-last, cudnn.benchmark on", True, True, batch, False),
                ("contiguous, cudnn.benchmark off", False, False, batch, False),
                ("contiguous, cudnn.benchmark on", False, True, batch, False),
                ("channels-last, benchmark off, batch 4", True, False, 4, False),
                ("channels-last, benchmark off, torch.compile", True, False, batch, True)]
    for label, channels_last, bench, b, compiled in variants:
        try:
            torch.backends.cudnn.benchmark = bench
            stylizer = NetworkStylizer(load_network(network_path.read_bytes()), device, "fp16", b,
                                       channels_last=channels_last)
            step = stylizer._forward
            t = time.perf_counter()
            if compiled:
                step = torch.compile(step)
            with torch.inference_mode():
                reference = step(on_gpu[b])
                torch.cuda.synchronize()
                first = time.perf_counter() - t
                rounds = max(3, 240 // b)
                t = time.perf_counter()
                for _ in range(rounds):
                    step(on_gpu[b])
                torch.cuda.synchronize()
                seconds = time.perf_counter() - t
            rows.append({"variant": label, "fps": rounds * b / seconds, "first_call_s": first})
            print(f"lever: {label}: {rows[-1]['fps']:.1f} frames/s (first call {first:.1f} s)", flush=True)
            del reference, stylizer, step
            torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001 - one failed variant must not hide the others
            print(f"lever: {label}: failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            torch.cuda.empty_cache()
    torch.backends.cudnn.benchmark = False
    stylizer = NetworkStylizer(load_network(network_path.read_bytes()), device, "fp16", batch)
    with torch.inference_mode():
        stylizer._forward(on_gpu[batch])
        torch.cuda.synchronize()
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            stylizer._forward(on_gpu[batch])
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60), flush=True)
    return rows


def job(clip: Path, model: Path, out: Path, ranks: int, extra: list[str]) -> dict:
    env = common.mpi_env()
    argv = [*common.stylempi_cli(), "run", clip, out, "--model", model, *extra]
    if ranks > 1:
        argv = common.mpirun(ranks, argv)
    wall, proc = common.run_timed(argv, env=env)
    row = {"ranks": ranks, "wall_s": wall, "summary": proc.stdout.strip().splitlines()[-1]}
    match = SUMMARY.search(proc.stdout)
    if match:
        keys = ("frames", "job_s", "plan_s", "stylize_s", "decode_s", "network_s", "encode_s", "assemble_s")
        row.update({k: float(v) for k, v in zip(keys, match.groups())})
    _, check = common.run_timed([*common.stylempi_cli(), "verify", clip, out], env=env)
    row["verify_ok"] = json.loads(check.stdout)["ok"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--narrow", action="store_true", help="also the width-16 and width-8 networks (compiled)")
    ap.add_argument("--levers", action="store_true", help="only the width-32 levers and a profile of one batch")
    ap.add_argument("--cpu-smoke-test", action="store_true",
                    help="run the machinery on the CPU (fp32/bf16, tiny sizes): tests/e2e/test_benchmarks.py")
    args = ap.parse_args(argv)
    import torch
    device_name, extra = "cuda", []
    if args.cpu_smoke_test:
        device_name, extra = "cpu", ["--device", "cpu", "--precision", "fp32"]
    elif not torch.cuda.is_available():
        print("gpu: PyTorch sees no CUDA GPU here; nothing to measure")
        return 0
    width_px, height_px = map(int, args.size.split("x"))
    report: dict = {"card": card() if device_name == "cuda" else common.machine(), "size": args.size,
                    "frames": args.frames}
    print(f"# stylempi GPU benchmark: {args.size}, {args.frames} frames at 30 fps; {report['card']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="stylempi-gpu-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        clip = common.make_clip(work / "clip.mp4", width=width_px, height=height_px, frames=args.frames)
        frames = decode_all(clip)
        print(f"clip made and decoded in {time.perf_counter() - t:.1f} s ({len(frames)} frames)", flush=True)
        models = {32: common.random_model(work / "random-w32.pth", 32)}
        if args.levers:
            report["levers"] = levers(models[32], frames)
            if args.json:
                args.json.write_text(json.dumps(report, indent=1))
            return 0
        for width in (16, 8):
            models[width] = common.pretrained(width) or common.random_model(work / f"random-w{width}.pth", width)
        rows = []
        half = "fp16" if device_name == "cuda" else "fp32"
        variants = [(32, half, True), (32, half, False), (32, "fp32", False)]
        if args.narrow:
            variants += [(16, half, True), (8, half, True)]
        for width, precision, compiled in variants:
            row = {"width": width, **bare(models[width], frames, precision, 8, device_name, compiled)}
            rows.append(row)
            print(f"bare width {width} {precision} {'compiled' if compiled else 'eager'} "
                  f"(first call {row['first_call_s']:.1f} s): {row['gpu_fps']:.1f} frames/s on the GPU, "
                  f"{row['host_fps']:.1f} from host memory (peak {row['peak_gpu_mib']:.0f} MiB)", flush=True)
        report["bare"] = rows
        jobs = []
        os.environ["STYLEMPI_COMPILE_CACHE"] = str(work / "compile-cache")  # empty: the first run is cold
        counts = list(map(int, args.ranks.split(",")))
        runs = [("defaults, cold compile cache", counts[0], [])]
        runs += [("defaults", n, []) for n in counts]
        runs += [("--compile off", n, ["--compile", "off"]) for n in counts[1:2]]
        for label, ranks, flags in runs:
            try:
                row = job(clip, models[32], work / f"out-n{ranks}.mp4", ranks, extra + flags)
            except Exception as exc:  # noqa: BLE001 - report and go on to the next N
                print(f"stylempi run with {ranks} ranks failed: {str(exc)[-1500:]}", flush=True)
                continue
            row["label"] = label
            jobs.append(row)
            print(f"stylempi run, {label}, {ranks} rank(s): {row['wall_s']:.1f} s, {args.frames / row['wall_s']:.1f} "
                  f"frames/s, verify {'ok' if row['verify_ok'] else 'FAILED'}\n  {row['summary']}", flush=True)
        report["jobs"] = jobs
    print(f"\n## {report['card']}\n\n| network | precision | batch | compiled (first call s) | frames/s on the GPU "
          "| frames/s from host memory | peak GPU MiB |\n|---|---|---|---|---|---|---|")
    for r in report["bare"]:
        print(f"| width {r['width']} | {r['precision']} | {r['batch']} | "
              f"{'yes' if r['compiled'] else 'no'} ({r['first_call_s']:.1f}) | {r['gpu_fps']:.1f} | {r['host_fps']:.1f} "
              f"| {r['peak_gpu_mib']:.0f} |")
    print("\n| run | ranks on 1 GPU | wall s | frames/s | in-job s (frames/s) | plan s | stylize s | assemble s | summed over ranks: "
          "decode / network / encode s | verify |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in report["jobs"]:
        print(f"| {r['label']} | {r['ranks']} | {r['wall_s']:.1f} | **{args.frames / r['wall_s']:.1f}** | {r.get('job_s', 0):.1f} "
              f"({args.frames / r['job_s'] if r.get('job_s') else 0:.1f}) | "
              f"{r.get('plan_s', 0):.1f} | {r.get('stylize_s', 0):.1f} | {r.get('assemble_s', 0):.1f} | "
              f"{r.get('decode_s', 0):.1f} / {r.get('network_s', 0):.1f} / {r.get('encode_s', 0):.1f} | "
              f"{'ok' if r['verify_ok'] else 'FAILED'} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["jobs"] and all(r["verify_ok"] for r in report["jobs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
