"""The bare network on the same frames and settings as `stylempi run` (run under ``mpirun``).

Each rank takes the chunks `stylempi run` would give it (same plan, same
assignment), decodes them into memory *before* timing, builds the stylizer with
:func:`stylempi.job.worker.build_stylizer` (same device, precision, batch size, threads
per rank, compile decision), runs one untimed warm-up batch (the compile, when
compiling), then, after a barrier, times only the network over its frames,
batched chunk by chunk exactly as the job batches them. The bare time is the
slowest rank's: what the job would take if decode, encode, MPI and I/O cost
nothing.

    mpirun -n 2 python benchmarks/bare_job.py CLIP MODEL [--precision auto] [--compile auto]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stylempi  # noqa: E402

stylempi.prefer_huge_pages()  # as the stylempi command does, before torch allocates

from stylempi.job.comm import get_comm  # noqa: E402
from stylempi.network.styles import read_model  # noqa: E402
from stylempi.job.worker import build_stylizer  # noqa: E402
from stylempi.media import decode_frames, index_frames, open_input, pick_video_stream  # noqa: E402
from stylempi.job.plan import assign_chunks, auto_chunk_frames, plan_chunks  # noqa: E402
from stylempi.network.model import load_network  # noqa: E402
from stylempi.network.placement import network_width, resolve_device, resolve_precision  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("model")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args, _ = ap.parse_known_args()  # encoder flags (--preset, --crf...) do not touch the network
    comm = get_comm()
    with open_input(args.clip) as container:
        stream_index = pick_video_stream(container).index
    index = index_frames(args.clip, stream_index)
    chunks = plan_chunks(index.pts, index.keyframes, auto_chunk_frames(len(index.pts)))
    mine = assign_chunks(chunks, comm.size)[comm.rank]
    decoded = [[rgb for _, rgb in decode_frames(args.clip, stream_index, c.pts)] for c in mine]
    model_bytes, model_name = read_model(args.model)
    prepared = SimpleNamespace(
        device=args.device, model_bytes=model_bytes, model_name=model_name, batch_size=args.batch_size,
        precision=resolve_precision(args.precision, resolve_device(args.device),
                                    network_width(load_network(model_bytes, trust=True))),
        compile=args.compile, total_frames=len(index.pts), decode="cpu", convert="ffmpeg")
    stylizer = build_stylizer(prepared, comm)
    batch = stylizer.batch_size
    t = time.perf_counter()
    if decoded:
        stylizer(decoded[0][:batch])  # warm-up: the compile (or the cache load), untimed
    warmup = time.perf_counter() - t
    comm.bcast(None)  # barrier: every rank starts timing together
    t = time.perf_counter()
    frames = 0
    for frames_of_chunk in decoded:
        for start in range(0, len(frames_of_chunk), batch):
            stylizer(frames_of_chunk[start:start + batch])
        frames += len(frames_of_chunk)
    seconds = time.perf_counter() - t
    results = comm.gather({"rank": comm.rank, "frames": frames, "seconds": seconds, "warmup_s": warmup,
                           "compiled": bool(getattr(stylizer, "compiled", False))})
    if comm.is_root:
        print(json.dumps({"ranks": results, "frames": sum(r["frames"] for r in results),
                          "bare_s": max(r["seconds"] for r in results),
                          "warmup_s": max(r["warmup_s"] for r in results),
                          "precision": prepared.precision, "batch_size": batch,
                          "compiled": results[0]["compiled"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
