"""One real `stylempi` job through the library API, with a stand-in model (run under ``mpirun``).

The whole pipeline is real (rank 0 indexes and plans, scatters chunk lists;
every rank decodes, "stylizes", encodes its segments; rank 0 gathers and joins),
only the network is replaced through ``run_job(..., stylizer_factory=...)`` by a
stand-in that sleeps ``--sleep`` seconds per frame and returns the frames
unchanged: GPU-like, it leaves the CPU free. ``--network`` uses the real network
instead (``stylempi.job.worker.build_stylizer``).

Rank 0 prints one JSON line: the launch-to-ready start-up, the window from the
scatter (the moment the first rank builds its stylizer, right after the scatter)
to the closed output, and every rank's peak resident memory (VmHWM).

    mpirun -n 16 --oversubscribe python benchmarks/scaling_job.py CLIP OUT MODEL --sleep 0.1
"""
from __future__ import annotations

import argparse
import json
import sys
import time

LAUNCHED = time.time()

from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402,F401 - before the start-up barrier, as a rank with a network has it

from common import StandInStylizer  # noqa: E402
from stylempi.job.comm import get_comm  # noqa: E402
from stylempi.media import EncoderRequest  # noqa: E402
from stylempi.job.run import RunOptions, build_stylizer, run_job  # noqa: E402


class SleepStylizer(StandInStylizer):
    """Sleeps ``seconds`` per frame, returns the frames unchanged (a GPU-like stand-in)."""

    precision = "sleep"

    def __init__(self, seconds: float, batch_size: int):
        self.seconds = seconds
        self.batch_size = batch_size
        self.first_call: float | None = None
        self.rss_mib: list[int] = []  # resident memory at each call: growth shows as a trend
        self.last_return: float | None = None

    def __call__(self, frames):
        if self.first_call is None:
            self.first_call = time.time()
        self.rss_mib.append(vm_kib("VmRSS") // 1024)
        time.sleep(self.seconds * len(frames))
        self.last_return = time.time()
        return frames


def vm_kib(field: str = "VmHWM") -> int:
    """A memory figure of this process from /proc/self/status (VmHWM: peak resident memory)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("out")
    ap.add_argument("model", help="a checkpoint (rank 0 validates it even for the stand-in)")
    ap.add_argument("--sleep", type=float, default=0.1, help="stand-in seconds per frame")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--network", action="store_true", help="the real network instead of the stand-in")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--chunk-frames", type=int, default=None)
    ap.add_argument("--temporal", choices=("on", "off"), default="on", help="the temporal filter (as stylempi run)")
    ap.add_argument("--launched", type=float, default=None, help="time.time() when mpirun was started")
    args = ap.parse_args()
    comm = get_comm()
    comm.bcast(None)  # every rank has started and imported: the start-up ends here
    ready = time.time()
    factory_at: list[float] = []
    built: list = []

    def factory(prepared, comm_):
        factory_at.append(time.time())
        built.append(build_stylizer(prepared, comm_) if args.network else SleepStylizer(args.sleep, args.batch_size))
        return built[-1]

    options = RunOptions(input=args.clip, output=args.out, model=args.model, quiet=True, restart=True,
                         encoder=EncoderRequest(preset=args.preset), batch_size=args.batch_size if args.network else None,
                         chunk_frames=args.chunk_frames, temporal=args.temporal)
    summary = run_job(options, stylizer_factory=factory, comm=comm)
    ended = time.time()
    stylizer = built[0] if built else None
    mine = {"rank": comm.rank, "vm_hwm_kib": vm_kib("VmHWM"), "factory_at": factory_at[0] if factory_at else None,
            "ready": ready, "rss_mib": getattr(stylizer, "rss_mib", [])[::max(1, len(getattr(stylizer, "rss_mib", [])) // 12)],
            "first_call": getattr(stylizer, "first_call", None),
            "last_return": getattr(stylizer, "last_return", None)}
    everyone = comm.gather(mine)
    if comm.is_root:
        scatter = min(r["factory_at"] for r in everyone if r["factory_at"] is not None)
        launched = args.launched or LAUNCHED
        print(json.dumps({
            "ranks": comm.size, "frames": summary.frames, "chunks": summary.chunks,
            "startup_s": max(r["ready"] for r in everyone) - launched,
            "plan_s": scatter - max(r["ready"] for r in everyone),
            "window_s": ended - scatter, "assemble_s": summary.assemble_s, "job_wall_s": summary.wall_s,
            "decode_s": summary.decode_s, "network_s": summary.network_s, "encode_s": summary.encode_s,
            "vm_hwm_kib": [r["vm_hwm_kib"] for r in sorted(everyone, key=lambda r: r["rank"])],
            "rss_mib_rank0": everyone[0]["rss_mib"],
            # Where the window goes: the latest first stylizer call after the scatter (decode start-up),
            # the latest last return (the model's work), and from there to the closed output (encoder
            # flush, gather, join).
            "first_call_s": max((r["first_call"] or scatter) - scatter for r in everyone),
            "last_return_s": max((r["last_return"] or scatter) - scatter for r in everyone),
            "tail_s": ended - max((r["last_return"] or scatter) for r in everyone)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
