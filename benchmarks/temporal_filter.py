"""The temporal filter (stylempi.network.temporal_filter) on real clips: steadiness, style, sharpness, seams, cost.

For each clip of ../shared/media that moves (input E_warp >= 1e-5; a still picture gives a
meaningless ratio), its first --frames frames at --height rows, and each built-in style, it
stylizes the frames once with the network as ``stylempi run`` does on a CPU (bf16 where the CPU
has it, eager, batch 2) -- the ``--temporal off`` output -- and runs the filter over them with
its default settings, and prints, relative to the input (E_warp) or to the off output:

* E_warp ratio output / input, scored with DIS (stylempi.tools.stability's definition) and with
  a second flow, OpenCV Farneback, both for off and on;
* style strength (mean |out - in|) and sharpness (mean gradient magnitude of the grey
  frame), on / off;
* the seam: the filter run chunk by chunk as a job runs it (chunks of --chunk-frames, each
  warmed up on the tail of the chunk before, stylempi.job.plan.warmup_frames), the mean E_warp
  (DIS) of the pairs that straddle a chunk boundary over that of the other pairs;
* the filter's time per frame (one thread).

``--cache DIR`` keeps the network frames (.npy) between runs; ``--json`` writes every row.

    python benchmarks/temporal_filter.py [--frames 90] [--height 360] [--clips a,b] [--styles a,b]
        [--chunk-frames 8] [--cache DIR] [--json out.json] [--set weight=0.85 ...]
    python benchmarks/temporal_filter.py --cost 10 [--clips cockatoo.mp4] [--set ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from common import MEDIA, load_note, machine  # also puts ROOT on sys.path

import stylempi  # noqa: E402,F401 - before torch, as in a job
import torch  # noqa: E402

from stylempi.network.placement import resolve_precision  # noqa: E402
from stylempi.network.model import load_network  # noqa: E402
from stylempi.job.plan import Chunk, warmup_frames  # noqa: E402
from stylempi.media.cuts import CutDetector  # noqa: E402
from stylempi.tools.stability import flow_pair, read_frames, valid_mask, warp  # noqa: E402
from stylempi.network.styles import BUILTIN, builtin_checkpoint  # noqa: E402
from stylempi.network.stylize import NetworkStylizer  # noqa: E402
from stylempi.network.temporal_filter import FilterSettings, TemporalFilter  # noqa: E402

CLIPS = ("flower.mp4", "flower_vfr.mp4", "nasa_13013.mp4", "cockatoo.mp4", "cityCC0.mpg")
STILL = 1e-5
BATCH = 2


def scored_flows(frames, method):
    """Per pair: (backward flow, mask) of stylempi.tools.stability, with ``method``'s flow."""
    out = []
    for t in range(1, len(frames)):
        forward, backward = flow_pair(frames[t - 1], frames[t], method)
        out.append((backward, valid_mask(forward, backward)))
    return out


def pair_errors(video, flows) -> list[float]:
    errors = []
    for t, (backward, mask) in enumerate(flows, start=1):
        d = (video[t].astype(np.float32) - warp(video[t - 1], backward)) / 255.0
        errors.append(float(np.mean((d ** 2)[mask])) if mask.any() else float("nan"))
    return errors


def sharpness(video) -> float:
    g = np.asarray(video, dtype=np.float32).mean(-1)
    return float(np.mean(np.hypot(np.diff(g, axis=-1)[:, :-1, :], np.diff(g, axis=-2)[:, :, :-1])))


def strength(video, inputs) -> float:
    return float(np.mean(np.abs(np.asarray(video, dtype=np.float32) - np.asarray(inputs, dtype=np.float32))))


def sequential(settings, inputs, styled):
    f = TemporalFilter(settings)
    return [f.step(i, s) for i, s in zip(inputs, styled)]


def chunked(settings, inputs, styled, chunk_frames):
    """The filter as a job runs it: chunk by chunk, each warmed up on the tail of the one before."""
    chunks = [Chunk(i, tuple(range(s, min(s + chunk_frames, len(inputs)))))
              for i, s in enumerate(range(0, len(inputs), chunk_frames))]
    out = []
    for chunk in chunks:
        f, cuts = TemporalFilter(settings), CutDetector()
        warm, _ = warmup_frames(chunks, chunk.index, settings.warmup, BATCH)
        for t in warm:
            f.step(inputs[t], styled[t], cut=cuts.is_cut(inputs[t]))
        out += [f.step(inputs[t], styled[t], cut=cuts.is_cut(inputs[t])) for t in chunk.pts]
    return out, [c.first for c in chunks[1:]]


def network_frames(style, clip, inputs, cache: Path | None):
    path = cache / f"{style}_{clip}_{len(inputs)}_{inputs[0].shape[0]}.npy" if cache else None
    if path and path.exists():
        return list(np.load(path))
    net = load_network(builtin_checkpoint(style).read_bytes(), name=style)
    stylizer = NetworkStylizer(net, torch.device("cpu"), resolve_precision("auto", torch.device("cpu"), 32),
                               batch_size=BATCH, compile=False)
    out = []
    for i in range(0, len(inputs), BATCH):
        out += stylizer(inputs[i:i + BATCH])
    if path:
        np.save(path, np.stack(out))
    return out


def cost(rounds: int, clip: str = "flower.mp4", settings: FilterSettings = FilterSettings()) -> None:
    """The filter's time per frame against the network's, interleaved in one process (one thread),
    at 640x360 and, for the filter alone, 1920x1080: a loaded machine slows both alike."""
    inputs = read_frames(str(MEDIA / clip), 2 * rounds + 1, 360)
    big = read_frames(str(MEDIA / clip), 2 * rounds + 1, None)
    big = [np.ascontiguousarray(np.repeat(np.repeat(f, 2, axis=0), 2, axis=1)[:1080, :1920]) for f in big]
    net = load_network(builtin_checkpoint("wave").read_bytes(), name="wave")
    stylizer = NetworkStylizer(net, torch.device("cpu"), resolve_precision("auto", torch.device("cpu"), 32),
                               batch_size=BATCH, compile=False)
    small, large = TemporalFilter(settings), TemporalFilter(settings)
    small.step(inputs[0], inputs[0])
    large.step(big[0], big[0])
    network_s = filter_s = big_s = 0.0
    for r in range(rounds):
        pair = inputs[1 + 2 * r:3 + 2 * r]
        t = time.perf_counter()
        styled = stylizer(pair)
        network_s += time.perf_counter() - t
        t = time.perf_counter()
        for frame, out in zip(pair, styled):
            small.step(frame, out)
        filter_s += time.perf_counter() - t
        t = time.perf_counter()
        for frame in big[1 + 2 * r:3 + 2 * r]:
            large.step(frame, frame)
        big_s += time.perf_counter() - t
    n = 2 * rounds
    print(f"640x360, one thread: network {network_s / n * 1000:.0f} ms/frame, filter {filter_s / n * 1000:.0f} "
          f"ms/frame ({filter_s / network_s:.2f}x the network); 1920x1080: filter {big_s / n * 1000:.0f} ms/frame "
          f"per core, {16 / (big_s / n):.0f} frames/s on 16 cores")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default=",".join(CLIPS))
    ap.add_argument("--styles", default=",".join(sorted(BUILTIN)))
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--chunk-frames", type=int, default=8, help="chunk length of the seam measurement "
                    "(8: what a job of 128 frames or fewer gets)")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a filter setting")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cost", type=int, default=0, metavar="ROUNDS",
                    help="only time the filter against the network, ROUNDS batches of 2 frames of the "
                    "first clip of --clips (flower.mp4 unless given)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    defaults = FilterSettings()
    changes = {}
    for item in args.set:
        name, value = item.split("=", 1)
        kind = type(getattr(defaults, name))
        if value.lower() == "none":  # finest_scale: the preset's own
            changes[name] = None
        else:
            changes[name] = int(value) if kind is type(None) else kind(value)
    settings = dataclasses.replace(defaults, **changes)
    if args.cost:
        print(f"# {machine()}; {load_note()}\n# {settings}", flush=True)
        cost(args.cost, args.clips.split(",")[0], settings)
        return 0
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    print(f"# {machine()}; {load_note()}\n# {settings}", flush=True)
    rows = []
    for clip in args.clips.split(","):
        path = MEDIA / clip
        if not path.exists():
            print(f"{clip}: not there, skipped")
            continue
        inputs = read_frames(str(path), args.frames, args.height)
        flows = {m: scored_flows(inputs, m) for m in ("dis", "farneback")}
        floor = {m: float(np.nanmean(pair_errors(inputs, flows[m]))) for m in flows}
        if floor["dis"] < STILL:
            print(f"{clip}: input E_warp {floor['dis']:.2e} < {STILL:g}: barely moves, skipped", flush=True)
            continue
        for style in args.styles.split(","):
            off = network_frames(style, clip, inputs, args.cache)
            t = time.perf_counter()
            on = sequential(settings, inputs, off)
            ms = (time.perf_counter() - t) / len(inputs) * 1000
            row = {"clip": clip, "style": style, "frames": len(inputs), "size": list(inputs[0].shape[:2]),
                   "filter_ms_per_frame": ms}
            for m in flows:
                row[f"off_{m}"] = float(np.nanmean(pair_errors(off, flows[m]))) / floor[m]
                row[f"on_{m}"] = float(np.nanmean(pair_errors(on, flows[m]))) / floor[m]
            row["strength"] = strength(on, inputs) / strength(off, inputs)
            row["sharpness"] = sharpness(on) / sharpness(off)
            jobwise, firsts = chunked(settings, inputs, off, args.chunk_frames)
            errors = pair_errors(jobwise, flows["dis"])
            seam = [errors[t - 1] for t in firsts]
            other = [e for t, e in enumerate(errors, start=1) if t not in firsts]
            row["seam"] = float(np.nanmean(seam) / np.nanmean(other))
            row["chunked_on_dis"] = float(np.nanmean(errors)) / floor["dis"]
            rows.append(row)
            print(f"{clip:15s} {style:13s} E_warp/input off: DIS {row['off_dis']:5.1f} Farneback "
                  f"{row['off_farneback']:5.1f} | on: DIS {row['on_dis']:5.2f} Farneback {row['on_farneback']:5.2f}"
                  f" | strength {row['strength']:.3f} sharpness {row['sharpness']:.3f} | seam {row['seam']:.2f}"
                  f" | {ms:.0f} ms/frame", flush=True)
    if rows:
        for m in ("dis", "farneback"):
            values = [r[f"on_{m}"] for r in rows]
            print(f"on, {m}: median {np.median(values):.2f}x, worst {max(values):.2f}x the input's E_warp")
        print(f"strength >= {min(r['strength'] for r in rows):.3f}, sharpness >= "
              f"{min(r['sharpness'] for r in rows):.3f}, seam <= {max(r['seam'] for r in rows):.2f} "
              f"(mean {np.mean([r['seam'] for r in rows]):.2f})")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings.as_dict(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
