"""The same job again and again in one process: does x264 write the same bytes every time?

Each run stylizes the same small clip in process (``run_job``) with a stand-in
network (the frame's negative plus noise drawn from the frame's own bytes, so the
same frame always gets the same picture), encodes it as a job does, and the
decoded output frames are hashed; a run whose frames differ from the process's
first run is counted. ``--x264-avx512`` lets x264 pick its AVX-512 kernels again
(stylempi.media.cpu keeps it from them). ``--processes`` such processes run side
by side, which loads the machine as a job does. The default 32-pixel width is 2
macroblocks: not a multiple of 8, where the AVX-512 kernel reads past a row.

    python benchmarks/x264_repeat.py [--runs 60] [--size 32x32] [--processes 2] [--x264-avx512]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import StandInStylizer, last_json, machine, make_clip, random_model  # noqa: E402

from stylempi.job.run import RunOptions, run_job  # noqa: E402
from stylempi.media import cpu, decode_frames, index_frames, open_input, pick_video_stream  # noqa: E402


class NoiseStylizer(StandInStylizer):
    """The frame's negative plus noise seeded by the frame's bytes: the same frame, the same picture."""

    precision = "noise"
    batch_size = 3

    def __call__(self, frames):
        out = []
        for f in frames:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha1(f.tobytes()).digest()[:8], "little"))
            out.append(np.clip(255.0 - f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8))
        return out


def frame_digest(path: Path) -> str:
    with open_input(str(path)) as container:
        index = pick_video_stream(container).index
    digest = hashlib.sha1()
    for _, rgb in decode_frames(str(path), index, index_frames(str(path), index).pts):
        digest.update(rgb.tobytes())
    return digest.hexdigest()


def child(args) -> dict:
    if args.x264_avx512:
        cpu.x264_asm = lambda flags: None  # x264 detects the CPU itself, AVX-512 kernels included
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp / "in.mp4", width=width, height=height, frames=60, gop=6)
        model = random_model(tmp / "m.pth", width=8)
        first, differing = None, 0
        for run in range(args.runs):
            out = tmp / f"out{run}.mp4"
            run_job(RunOptions(input=str(clip), output=str(out), model=str(model), device="cpu", quiet=True,
                               chunk_frames=6, work_dir=str(tmp / f"work{run}")),
                    stylizer_factory=lambda prepared, comm: NoiseStylizer())
            digest = frame_digest(out)
            first = first or digest
            differing += digest != first
            out.unlink()
    return {"runs": args.runs, "differing": differing}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=60, help="job runs in each process")
    ap.add_argument("--size", default="32x32")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--x264-avx512", action="store_true", help="let x264 use its AVX-512 kernels")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    argv = [sys.executable, __file__, "--child", "--runs", str(args.runs), "--size", args.size]
    argv += ["--x264-avx512"] if args.x264_avx512 else []
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(args.processes)]
    results = [last_json(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        print("a process failed", file=sys.stderr)
        return 1
    print(json.dumps({"machine": machine(), "size": args.size, "x264_avx512": args.x264_avx512,
                      "avx512_cpu": cpu.x264_asm(cpu.cpu_flags()) is not None,
                      "runs": sum(r["runs"] for r in results),
                      "runs_with_other_frames": sum(r["differing"] for r in results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
