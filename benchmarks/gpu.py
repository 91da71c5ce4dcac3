"""The GPU benchmark: what a GPU node's throughput depends on, per GPU at 1080p, in one run.

Run on a machine with a CUDA GPU (the `device` tool's lent H100/H200 here). On one
generated 1080p clip (flower.mp4's footage scaled and looped, H.264 + AAC: the clip
of benchmarks/run.py at another size; synthetic frames where ../shared, or
``$STYLEMPI_SHARED``, is missing) it measures, on one GPU (``--gpu``, default 0:
every process of the run sees only that one, ``CUDA_VISIBLE_DEVICES``):

1. **the network alone** on the clip's first 160 frames, width 32 (random weights),
   batch 8: fp16 compiled (``torch.compile``), fp16 eager (the GPU default) and fp32
   eager, each *on the GPU* (uint8 frames already on the card: pad, network, crop,
   round) and *from host memory* (numpy in, numpy out: ``NetworkStylizer`` as the
   job calls it);
   ``--narrow`` adds the width-16 and width-8 networks (the real mosaic checkpoints
   when ../shared is present);
2. **x264's ceiling on this node's CPUs**: P encoders in parallel (P = each count of
   ``--ranks``; benchmarks/x264_job.py), each with the options a job's rank opens
   libx264 with (``stylempi.media.encoder_options``) and x264's automatic thread
   count, encoding the clip's frames already converted to YUV: the frames/s the CPU
   encoder can reach with all cores, whatever the GPU does. A GPU without NVENC
   (the H100, for one: docs/deploy.md, "Which GPU VM") leaves the encode to it;
   whether this one has NVENC and NVDEC is probed first (one frame each);
3. **``stylempi run``** end to end with N ranks sharing the one GPU, for each N of
   ``--ranks`` and each engine choice of ``--engines``: wall time, frames/s, the ratio
   to the bare compiled network, the stage times the summary line prints (summed
   over ranks), the engines it names, the mean GPU utilisation and CPU busy share
   while it ran, then ``stylempi verify``. A run that fails (a flag this checkout
   does not know, an engine the node lacks) is reported with its error, and the
   script exits 1 after the report;
4. **the reference method** (``make bench``'s baseline: ffmpeg to JPEG files, a
   static split over N ranks, one frame at a time in fp32 through PIL, ffmpeg
   re-encode; benchmarks/baseline.py) on the same GPU, clip and N, and the ratio
   stylempi / reference (the target is 3x or more).

**Engines** (``--engines``): a comma-separated list of choices, each ``cpu`` (the
defaults: CPU decode, CPU colour conversion, libx264) or ``key=value`` pairs joined
by ``+``, each becoming ``--key value`` on the ``stylempi run`` command line:
``decode=gpu+convert=torch+codec=auto`` runs ``--decode gpu --convert torch --codec
auto``. Extra flags for every run go after ``--`` (``-- --compile on``).

**GPU utilisation** is NVML's "percent of time a kernel was running" over 200 ms
samples (``pynvml`` when importable, else ``nvidia-smi --query-gpu=utilization.gpu
-lms 200`` in the background), averaged over each run: busy time, not how much of
the GPU the kernels used. "n/a" without either, and in ``--device cpu``.

**ffmpeg**: the reference method runs the ``ffmpeg`` command (PATH's, else the
static one the ``imageio-ffmpeg`` wheel ships; stylempi itself never needs it). A
lent GPU machine may have neither (and that wheel, 68 MB, is more than may travel
there), so without one the reference's ffmpeg steps run the same operations through
PyAV's FFmpeg libraries instead (benchmarks/baseline.py, ``split_pyav`` and
``join_pyav``), and the report names which ran. ``--skip-baseline`` leaves the
reference out.

**CPU mode** (``--device cpu``): the same code path on the CPU, fp32, the network
eager only (compiling it costs ~20 s on 2 cores), the ratio taken to the eager
network; no GPU sampling, no NVENC/NVDEC probe. It checks the machinery
(tests/e2e/test_bench_gpu_smoke.py), never the speed:

    python benchmarks/gpu.py --device cpu --size 160x90 --frames 12 --ranks 1,2 --engines cpu

On a GPU node (docs/benchmarks.md, "GPU: NVIDIA H200 at 1080p", has the command with the engines):

    python benchmarks/gpu.py [--size 1920x1080] [--frames 300] [--ranks 1,2,4] [--engines cpu,...]
                             [--skip-baseline] [--json gpu-benchmark.json]
    python benchmarks/gpu.py --levers --frames 64   # layouts, cudnn.benchmark, batch, compile; a profile

The JSON holds every figure; the Markdown tables are printed at the end and written
beside it (``.md``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from baseline import run_baseline  # noqa: E402
from run import SUMMARY  # noqa: E402

HERE = Path(__file__).resolve().parent
#: The engines a summary line names: ``on 2 ranks (cuda fp16 batch 8), decode cpu, ...; 4 chunks``.
ENGINES = re.compile(r" on \d+ ranks? \((.*?)\)(?:, [^;]*)?; \d+ chunks")
#: ``decode nvdec``, ``convert=torch``, ``encode: h264_nvenc``... wherever the line names a
#: stage's engine (a figure such as ``decode 3.6 s`` starts with a digit and is not one).
ENGINE_FIELD = re.compile(r"\b(decode|convert|encode|codec)[ =:]+([A-Za-z_][\w.+-]*)")
#: The share of x264's ceiling at which a run counts as bound by it: the job's ranks also
#: decode and convert colours on the same cores, so it comes near the x264-only rate, not to it.
X264_REACHED = 0.8
#: stylempi / reference, the target of the GPU node.
TARGET_RATIO = 3.0
#: Frames the network alone is timed on (the clip's first ones): 20 batches give a steady rate, and
#: fp32 at 1080p costs ~65 ms a frame, so all 300 would add half a minute to a lent GPU's time.
BARE_FRAMES = 160


# ---------------------------------------------------------------------------
# The card and what it can decode and encode
# ---------------------------------------------------------------------------

def card() -> str:
    import torch
    props = torch.cuda.get_device_properties(0)
    text = f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)"
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True)
        if q.returncode == 0:
            text += f", driver {q.stdout.strip().splitlines()[0]}"
    return text + f", torch {torch.__version__}, {len(os.sched_getaffinity(0))} CPU cores"


def probe_nvenc(encoders: tuple[str, ...] = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")) -> dict[str, str]:
    """``yes``, or ``no: why`` for each NVIDIA encoder, probed as a job probes it
    (stylempi.media.gpu_support: one small frame encoded in memory)."""
    from stylempi.media.gpu_support import nvenc_refusal
    return {name: _yes_or_why(nvenc_refusal(name, None)) for name in encoders}


def probe_nvdec(clip: Path) -> str:
    """``yes`` if NVDEC decodes the clip's first frame as a job's GPU decoder does, else ``no: why``."""
    from stylempi.media import open_input, pick_video_stream
    from stylempi.media.gpu_support import nvdec_refusal
    with open_input(clip) as container:
        stream = pick_video_stream(container).index
    return _yes_or_why(nvdec_refusal(clip, stream, None))


def _yes_or_why(refusal: str | None) -> str:
    return "yes" if refusal is None else f"no: {refusal}"


# ---------------------------------------------------------------------------
# The network alone
# ---------------------------------------------------------------------------

def decode_all(clip: Path, limit: int | None = None) -> list:
    from stylempi.media import decode_frames, index_frames, open_input, pick_video_stream
    with open_input(clip) as container:
        stream = pick_video_stream(container).index
    pts = index_frames(clip, stream).pts[:limit]
    return [rgb for _, rgb in decode_frames(clip, stream, pts)]


def bare(network_path: Path, frames: list, precision: str, batch: int, device_name: str = "cuda",
         compiled: bool = False) -> dict:
    """Frames/s of the network on the GPU alone, and called from host memory as the job calls it."""
    import numpy as np
    import torch
    from stylempi.network.model import load_network
    from stylempi.network.stylize import NetworkStylizer
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
    step = stylizer._runners[(*on_gpu.shape, str(on_gpu.dtype))] if compiled else stylizer.step
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
    from stylempi.network.model import load_network
    from stylempi.network.stylize import NetworkStylizer
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
            step = stylizer.step
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
        stylizer.step(on_gpu[batch])
        torch.cuda.synchronize()
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            stylizer.step(on_gpu[batch])
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60), flush=True)
    return rows


# ---------------------------------------------------------------------------
# How busy the GPU and the CPUs were while a command ran
# ---------------------------------------------------------------------------

def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores together, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Busy:
    """Mean GPU utilisation (NVML, else nvidia-smi) and CPU busy share over a ``with`` block.

    ``gpu`` is the NVML / nvidia-smi index of the GPU to watch; None watches no GPU.
    After the block: :attr:`gpu_pct` (None when nothing was sampled), :attr:`cpu_pct`.
    """

    PERIOD_S = 0.2

    def __init__(self, gpu: int | None):
        self.gpu = gpu
        self.samples: list[float] = []
        self.gpu_pct: float | None = None
        self.cpu_pct: float | None = None
        self.source = "n/a"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> Busy:
        self._cpu = _cpu_times()
        if self.gpu is not None:
            self._start_gpu()
        return self

    def _start_gpu(self) -> None:
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu)
            pynvml.nvmlDeviceGetUtilizationRates(handle)
        except Exception:  # noqa: BLE001 - no pynvml, no driver: try the command line tool
            smi = shutil.which("nvidia-smi")
            if smi:
                self.source = "nvidia-smi"
                self._log = tempfile.TemporaryFile("w+")
                self._proc = subprocess.Popen([smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                               "-lms", str(int(self.PERIOD_S * 1000)), "-i", str(self.gpu)],
                                              stdout=self._log, stderr=subprocess.DEVNULL)
            return
        self.source = "nvml"

        def sample() -> None:
            while not self._stop.wait(self.PERIOD_S):
                try:
                    self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                except Exception:  # noqa: BLE001 - a missed sample is no reason to stop the benchmark
                    pass
            pynvml.nvmlShutdown()

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def __exit__(self, *exc) -> None:
        busy, total = _cpu_times()
        if total > self._cpu[1]:
            self.cpu_pct = 100.0 * (busy - self._cpu[0]) / (total - self._cpu[1])
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        if self._proc is not None:
            # Ctrl-C, not SIGTERM: nvidia-smi's loop stops on it and exits normally, which
            # flushes any samples still buffered for the file.
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._log.seek(0)
            for line in self._log.read().splitlines():
                try:
                    self.samples.append(float(line.strip()))
                except ValueError:  # "[N/A]", a cut-off last line
                    pass
            self._log.close()
        if self.samples:
            self.gpu_pct = sum(self.samples) / len(self.samples)


# ---------------------------------------------------------------------------
# The engine choices and stylempi run
# ---------------------------------------------------------------------------

def parse_engines(text: str) -> list[tuple[str, list[str]]]:
    """``cpu,convert=torch,decode=gpu+convert=torch`` -> [(label, ``stylempi run`` flags)]."""
    specs = []
    for label in (s.strip() for s in text.split(",")):
        if not label:
            continue
        flags: list[str] = []
        if label != "cpu":
            for pair in label.split("+"):
                key, sep, value = pair.partition("=")
                if not sep or not value or not re.fullmatch(r"[a-z][a-z0-9-]*", key):
                    raise argparse.ArgumentTypeError(
                        f"engine choice {label!r}: expected cpu or key=value pairs joined by + "
                        "(decode=gpu+convert=torch+codec=auto)")
                flags += [f"--{key}", value]
        specs.append((label, flags))
    if not specs:
        raise argparse.ArgumentTypeError("--engines names no engine choice")
    return specs


def flag_value(flags: list[str], name: str) -> str | None:
    return flags[flags.index(name) + 1] if name in flags[:-1] else None


def engines_named(summary: str) -> tuple[str, dict[str, str]]:
    """The engines a summary line names (its parenthesis after the rank count) and the stages'
    engines it spells out; empty where the line names none."""
    match = ENGINES.search(summary)
    before_output = summary.split(" -> ")[0]
    return (match.group(1) if match else ""), {k: v for k, v in ENGINE_FIELD.findall(before_output)}


def encoder_of(row: dict, flags: list[str]) -> str:
    """The video encoder a run used: as its summary names it, else as its flags or the .mp4
    default say (``auto`` when the line does not tell what auto chose)."""
    fields = row.get("engine_fields", {})
    named = fields.get("encode") or fields.get("codec")
    if named:
        return named
    match = re.search(r"\b(\w+_nvenc|libx26[45]|libsvtav1|libvpx[\w-]*)\b", row.get("engines", ""))
    if match:
        return match.group(1)
    return flag_value(flags, "--codec") or "libx264"


def failure_reason(exc: Exception) -> str:
    """The line of a failed command that says why (stylempi's or argparse's), else its last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if re.match(r"stylempi\b.*\berror\b", line)]
    return (said or lines or [type(exc).__name__])[-1][:240]


def verify(clip: Path, out: Path, env: dict) -> bool:
    proc = subprocess.run([*common.stylempi_cli(), "verify", str(clip), str(out)], capture_output=True, text=True,
                          env=env, timeout=1800)
    try:
        return proc.returncode == 0 and bool(json.loads(proc.stdout)["ok"])
    except (ValueError, KeyError):
        return False


def job(clip: Path, model: Path, out: Path, ranks: int, flags: list[str], gpu: int | None) -> dict:
    """One ``stylempi run`` (N ranks under mpirun, 1 a plain process), watched, then verified."""
    env = common.mpi_env()
    argv = [*common.stylempi_cli(), "run", clip, out, "--model", model, *flags]
    if ranks > 1:
        argv = common.mpirun(ranks, argv)
    row: dict = {"ranks": ranks, "flags": flags}
    with Busy(gpu) as busy:
        try:
            wall, proc = common.run_timed(argv, env=env)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            row["error"] = failure_reason(exc)
    row.update(gpu_pct=busy.gpu_pct, cpu_pct=busy.cpu_pct, gpu_source=busy.source)
    if "error" in row:
        return row
    row["wall_s"] = wall
    lines = proc.stdout.strip().splitlines()
    row["summary"] = lines[-1] if lines else ""
    match = SUMMARY.search(proc.stdout)
    if match:
        keys = ("frames", "job_s", "plan_s", "stylize_s", "decode_s", "network_s", "encode_s", "assemble_s")
        row.update({k: float(v) for k, v in zip(keys, match.groups())})
    row["engines"], row["engine_fields"] = engines_named(row["summary"])
    row["verify_ok"] = verify(clip, out, env)
    return row


# ---------------------------------------------------------------------------
# x264's ceiling on this node's CPUs
# ---------------------------------------------------------------------------

def x264_ceiling(clip: Path, encoders: int) -> dict:
    """``encoders`` x264 processes started together on shares of the clip (benchmarks/x264_job.py):
    all their frames over the time from the first start to the last end."""
    env = common.mpi_env()
    procs = [subprocess.Popen([sys.executable, str(HERE / "x264_job.py"), str(clip), str(i), str(encoders)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for i in range(encoders)]
    try:
        for proc in procs:  # each has decoded and converted its share: start them together
            ready = proc.stdout.readline().strip()
            if ready != "ready":
                raise RuntimeError(f"x264_job.py did not start: {ready} {proc.stderr.read()[-2000:]}")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"x264_job.py failed ({proc.returncode}): {err[-2000:]}")
            results.append(common.last_json(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    frames = sum(r["frames"] for r in results)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"encoders": encoders, "frames": frames, "seconds": seconds, "fps": frames / seconds,
            "codec": results[0]["codec"], "options": results[0]["options"],
            "convert_fps_per_process": frames / sum(r["convert_s"] for r in results)}


def x264_note(row: dict, ceiling: dict | None) -> str:
    """How close a run came to the x264 ceiling of its encoder count, when x264 encoded it."""
    encoder = row.get("encoder", "")
    if not encoder.startswith("libx264"):
        return "-" if encoder != "auto" else "auto (encoder not named)"
    if not ceiling or not row.get("stylize_s"):
        return "libx264"
    share = row["frames"] / row["stylize_s"] / ceiling["fps"]
    reached = " (**ceiling reached**)" if share >= X264_REACHED else ""
    return f"libx264 {100 * share:.0f} % of {ceiling['fps']:.1f}{reached}"


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown(report: dict) -> str:
    bare_label = "bare compiled" if report["bare_denominator"]["compiled"] else "bare eager"
    lines = [f"## {report['card']}", "",
             f"{report['size']}, {report['frames']} frames at 30 fps; started {report['started']}, "
             f"took {report['took_s']:.0f} s; {report['load']}.", ""]
    if report["device"] == "cuda":
        nvenc = ", ".join(f"{k} {v.split(':')[0]}" for k, v in report["nvenc"].items())
        lines += [f"NVENC: {nvenc}. NVDEC (H.264): {report['nvdec'].split(':')[0]}. "
                  f"GPU utilisation from: {report['gpu_source']}.", ""]
    on = "GPU" if report["device"] == "cuda" else "CPU"
    lines += [f"| network | precision | batch | compiled (first call s) | frames/s on the {on} "
              "| frames/s from host memory | peak GPU MiB |", "|---|---|---|---|---|---|---|"]
    for r in report["bare"]:
        lines.append(f"| width {r['width']} | {r['precision']} | {r['batch']} | "
                     f"{'yes' if r['compiled'] else 'no'} ({r['first_call_s']:.1f}) | {r['gpu_fps']:.1f} | "
                     f"{r['host_fps']:.1f} | {r['peak_gpu_mib']:.0f} |")
    lines += ["", "| x264 encoders in parallel (the job's options, x264's own threads) | frames/s (YUV in, "
              "encode only) | RGB to YUV frames/s per process (swscale) |", "|---|---|---|"]
    for r in report["x264"]:
        lines.append(f"| {r['encoders']} | **{r['fps']:.1f}** | {r['convert_fps_per_process']:.1f} |"
                     if "fps" in r else f"| {r['encoders']} | failed: {r['error']} | |")
    lines += ["", f"| engines | ranks | wall s | frames/s | / {bare_label} | / reference | in-job s | GPU busy % "
              "| CPU busy % | summed over ranks: decode / network / encode s | engines named | x264 ceiling | verify |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["jobs"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['ranks']} | failed: {r['error'].replace('|', '/')} "
                         "| | | | | | | | | | |")
            continue
        ratio = f"**{r['ratio_reference']:.2f}x**" if r.get("ratio_reference") else "-"
        lines.append(f"| {r['label']} | {r['ranks']} | {r['wall_s']:.1f} | **{r['fps']:.1f}** | "
                     f"{r['ratio_bare']:.2f} | {ratio} | {r.get('job_s', 0):.1f} | {_pct(r['gpu_pct'])} | "
                     f"{_pct(r['cpu_pct'])} | "
                     f"{r.get('decode_s', 0):.1f} / {r.get('network_s', 0):.1f} / {r.get('encode_s', 0):.1f} | "
                     f"{r['engines'] or '-'} | {r['x264']} | {'ok' if r['verify_ok'] else 'FAILED'} |")
    if report["reference"]:
        lines += ["", f"| reference (JPEG files, batch 1, fp32; split and join: {report['reference_tool']}) ranks "
                  "| wall s | frames/s | split / stylize / join s | dropped frames | GPU busy % | CPU busy % |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["reference"]:
            if "error" in r:
                lines.append(f"| {r['ranks']} | failed: {r['error'].replace('|', '/')} | | | | | |")
                continue
            lines.append(f"| {r['ranks']} | {r['wall_s']:.1f} | **{r['fps']:.2f}** | {r['split_s']:.1f} / "
                         f"{r['stylize_s']:.1f} / {r['join_s']:.1f} | {r['dropped_frames']} | "
                         f"{_pct(r['gpu_pct'])} | {_pct(r['cpu_pct'])} |")
        ratios = [r for r in report["jobs"] if r.get("ratio_reference")]
        if ratios:
            best = max(ratios, key=lambda r: r["ratio_reference"])
            met = sum(r["ratio_reference"] >= TARGET_RATIO for r in ratios)
            lines += ["", f"stylempi / reference >= {TARGET_RATIO:.0f}x: met by {met} of {len(ratios)} runs "
                      f"(best {best['ratio_reference']:.2f}x: {best['label']}, {best['ranks']} "
                      f"rank{'s' if best['ranks'] != 1 else ''})."]
    else:
        lines += ["", "Reference method: not run (--skip-baseline)."]
    if report["device"] == "cuda" and not report["nvenc"].get("h264_nvenc", "").startswith("yes"):
        lines += ["", "This GPU has no usable NVENC: the CPU encodes (libx264), so the x264 ceiling above "
                  "bounds every run on this node."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--ranks", default="1,2,4", help="rank counts sharing the one GPU (default 1,2,4)")
    ap.add_argument("--engines", type=parse_engines, default=parse_engines("cpu"),
                    help="engine choices, comma-separated: cpu (the defaults) or key=value pairs joined by +, "
                         "each --key value on the stylempi run command line (decode=gpu+convert=torch+codec=auto)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: the machinery on the CPU (fp32, eager), no GPU figures")
    ap.add_argument("--gpu", type=int, default=0, help="the GPU to measure (nvidia-smi's index)")
    ap.add_argument("--skip-baseline", action="store_true", help="no reference-method runs (no ffmpeg needed)")
    ap.add_argument("--json", type=Path, default=Path("gpu-benchmark.json"),
                    help="write every figure here, and the Markdown tables beside it (.md)")
    ap.add_argument("--narrow", action="store_true", help="also the width-16 and width-8 networks (compiled)")
    ap.add_argument("--levers", action="store_true", help="only the width-32 levers and a profile of one batch")
    ap.add_argument("stylempi_args", nargs="*", help="extra `stylempi run` flags after --, e.g. -- --compile on")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda:  # one GPU, the same for every process of the run, numbered as nvidia-smi numbers it
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    import torch
    if cuda and not torch.cuda.is_available():
        print("gpu: PyTorch sees no CUDA GPU here; nothing to measure (--device cpu runs the machinery)")
        return 0
    extra = (["--device", "cuda"] if cuda else ["--device", "cpu", "--precision", "fp32"]) + args.stylempi_args
    watched = args.gpu if cuda else None
    width_px, height_px = map(int, args.size.split("x"))
    counts = [int(n) for n in args.ranks.split(",")]
    started = time.perf_counter()
    report: dict = {"card": card() if cuda else common.machine(), "device": args.device, "size": args.size,
                    "frames": args.frames, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                    "load": common.load_note(),
                    "reference_tool": "ffmpeg command" if common.find_ffmpeg() else "PyAV (no ffmpeg command)"}
    print(f"# stylempi GPU benchmark: {args.size}, {args.frames} frames at 30 fps; {report['card']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="stylempi-gpu-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        clip = common.make_clip(work / "clip.mp4", width=width_px, height=height_px, frames=args.frames)
        frames = decode_all(clip, None if args.levers else BARE_FRAMES)
        print(f"clip made, {len(frames)} frames decoded for the network alone, in {time.perf_counter() - t:.1f} s",
              flush=True)
        models = {32: common.random_model(work / "random-w32.pth", 32)}
        if args.levers:
            report["levers"] = levers(models[32], frames)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
            return 0
        report["nvenc"] = probe_nvenc() if cuda else {}
        report["nvdec"] = probe_nvdec(clip) if cuda else "n/a"
        if cuda:
            print(f"NVENC: {report['nvenc']}\nNVDEC: {report['nvdec']}", flush=True)

        for width in (16, 8):
            models[width] = common.pretrained(width) or common.random_model(work / f"random-w{width}.pth", width)
        variants = ([(32, "fp16", True), (32, "fp16", False), (32, "fp32", False)] if cuda
                    else [(32, "fp32", False)])
        if args.narrow:
            variants += [(16, "fp16", True), (8, "fp16", True)] if cuda else [(16, "fp32", False), (8, "fp32", False)]
        report["bare"] = []
        for width, precision, compiled in variants:
            row = {"width": width, **bare(models[width], frames, precision, 8, args.device, compiled)}
            report["bare"].append(row)
            print(f"bare width {width} {precision} {'compiled' if compiled else 'eager'} "
                  f"(first call {row['first_call_s']:.1f} s): {row['gpu_fps']:.1f} frames/s on the "
                  f"{'GPU' if cuda else 'CPU'}, {row['host_fps']:.1f} from host memory "
                  f"(peak {row['peak_gpu_mib']:.0f} MiB)", flush=True)
        del frames
        if cuda:
            torch.cuda.empty_cache()  # the jobs share the GPU with this process
        denominator = next(r for r in report["bare"] if r["width"] == 32 and r["precision"] == variants[0][1]
                           and r["compiled"] == variants[0][2])
        report["bare_denominator"] = {"compiled": denominator["compiled"], "fps": denominator["gpu_fps"]}

        report["x264"] = []
        for n in counts:
            try:
                row = x264_ceiling(clip, n)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                row = {"encoders": n, "error": failure_reason(exc)}
            report["x264"].append(row)
            print(f"x264 alone, {n} encoder(s) in parallel: "
                  f"{row['fps']:.1f} frames/s" if "fps" in row else f"x264 alone, {n}: failed: {row['error']}",
                  flush=True)
        ceilings = {r["encoders"]: r for r in report["x264"] if "fps" in r}

        os.environ["STYLEMPI_COMPILE_CACHE"] = str(work / "compile-cache")  # --compile on starts cold
        report["jobs"] = []
        for label, flags in args.engines:
            for n in counts:
                row = job(clip, models[32], work / f"out-{len(report['jobs'])}.mp4", n, extra + flags, watched)
                row["label"] = label
                report["jobs"].append(row)
                if "error" in row:
                    print(f"stylempi run [{label}], {n} rank(s): failed: {row['error']}", flush=True)
                    continue
                row["fps"] = row.get("frames", args.frames) / row["wall_s"]
                row.setdefault("frames", float(args.frames))
                row["ratio_bare"] = row["fps"] / denominator["gpu_fps"]
                row["encoder"] = encoder_of(row, flags)
                row["x264"] = x264_note(row, ceilings.get(n))
                print(f"stylempi run [{label}], {n} rank(s): {row['wall_s']:.1f} s, {row['fps']:.1f} frames/s, "
                      f"GPU busy {_pct(row['gpu_pct'])} %, CPU busy {_pct(row['cpu_pct'])} %, "
                      f"verify {'ok' if row['verify_ok'] else 'FAILED'}\n  {row['summary']}", flush=True)

        report["reference"] = []
        for n in [] if args.skip_baseline else counts:
            with Busy(watched) as busy:
                try:
                    row = run_baseline(clip, models[32], work / f"reference-n{n}", n, device=args.device,
                                       allow_pyav=True)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                    row = {"ranks": n, "error": failure_reason(exc)}
            row.update(gpu_pct=busy.gpu_pct, cpu_pct=busy.cpu_pct)
            report["reference"].append(row)
            if "error" in row:
                print(f"reference, {n} rank(s): failed: {row['error']}", flush=True)
                continue
            print(f"reference, {n} rank(s): {row['wall_s']:.1f} s, {row['fps']:.2f} frames/s "
                  f"(split {row['split_s']:.1f} s, stylize {row['stylize_s']:.1f} s, join {row['join_s']:.1f} s)",
                  flush=True)
            for r in report["jobs"]:
                if r["ranks"] == n and "fps" in r:
                    r["ratio_reference"] = r["fps"] / row["fps"]
    report["gpu_source"] = next((r["gpu_source"] for r in report["jobs"]), "n/a")
    report["took_s"] = time.perf_counter() - started
    text = markdown(report)
    print("\n" + text, flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str))
    args.json.with_suffix(".md").write_text(text + "\n")
    ok = all("error" not in r and r["verify_ok"] for r in report["jobs"])
    ok = ok and all("error" not in r for r in report["x264"] + report["reference"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
