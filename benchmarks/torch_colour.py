"""The torch colour path (``--convert torch``) against the default swscale path, per clip.

For the first frames of each clip: the planes the encoder would get from the torch path
(decoded planes -> ``planes_to_rgb`` at the siting rank 0 infers -> network ->
``rgb_to_planes``, :class:`stylempi.network.planes.PlanesStylizer`) against the default
path's (swscale -> network -> swscale), PSNR of the worst plane; and, to show the
figure can fail, the same with the chroma siting or the range wrong. Network: a built-in
style (``wave`` by default: a real style's strokes, where random weights give flat,
clamped pictures that hide every difference), fp32 on the CPU. Results:
docs/benchmarks.md, "YUV ↔ RGB in torch against swscale".

``--speed`` times the conversions themselves on one 1080p 4:2:0 frame, one thread, on
this CPU: swscale's (``to_rgb``, ``to_yuv``) and torch's (``planes_to_rgb``,
``rgb_to_planes``, batch 2).

    python benchmarks/torch_colour.py [CLIP ...] [--frames 2] [--model wave] [--speed]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from stylempi.colour import matrices as colours  # noqa: E402
from stylempi.network.planes import PlanesStylizer, chroma_location  # noqa: E402
from stylempi.media import describe_video, to_planes, to_rgb, to_yuv  # noqa: E402
from stylempi.network.model import load_network  # noqa: E402
from stylempi.network.styles import read_model  # noqa: E402
from stylempi.colour.tensors import planes_to_rgb, rgb_to_planes  # noqa: E402
from stylempi.network.stylize import NetworkStylizer  # noqa: E402


def _psnr(a: np.ndarray, b: np.ndarray, top: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(top ** 2 / mse)


def measure(clip: Path, network, frames: int) -> dict:
    with av.open(str(clip)) as container:
        video = describe_video(container, container.streams.video[0])
    with av.open(str(clip)) as container:  # describe_video has drained the first one's decoder
        decoded = [f for _, f in zip(range(frames), container.decode(video=0))]
    source = video.colour
    odd = video.width % 2 or video.height % 2
    target = dataclasses.replace(source, chroma="444") if odd else source  # as the job writes odd sizes
    settings = SimpleNamespace(colour=target, pix_fmt=target.pix_fmt())
    cpu = torch.device("cpu")
    expected = [to_planes(to_yuv(rgb, settings), target)
                for rgb in NetworkStylizer(network, cpu, "fp32", 2)([to_rgb(f, source) for f in decoded])]
    siting = chroma_location(decoded[0], source)
    wrong_siting = "center" if siting != "center" else "left"
    wrong_range = dataclasses.replace(source, range=colours.RANGE_FULL if source.range == colours.RANGE_LIMITED
                                      else colours.RANGE_LIMITED)
    top = 2.0 ** target.depth - 1
    row = {"clip": clip.name, "size": f"{video.width}x{video.height}", "chroma": source.chroma,
           "depth": source.depth, "siting": siting}
    for label, colour, where in (("torch", source, siting), ("wrong siting", source, wrong_siting),
                                 ("wrong range", wrong_range, siting)):
        stylizer = PlanesStylizer(NetworkStylizer(network, cpu, "fp32", 2), colour, target, where)
        got = stylizer([to_planes(f, source) for f in decoded])
        row[label] = min(_psnr(a, b, top) for want, have in zip(expected, got) for a, b in zip(want, have))
    return row


def _ms(fn, repeat: int = 5) -> float:
    fn()  # warm
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1000


def speed(clip: Path) -> dict:
    """Milliseconds per 1080p frame of each conversion, one thread (batch 2 for torch)."""
    torch.set_num_threads(1)
    colour = colours.Colour(colours.BT709, colours.RANGE_LIMITED, colours.BT709, colours.BT709)
    with av.open(str(clip)) as container:
        first = next(container.decode(video=0))
    frame = first.reformat(width=1920, height=1080, format="yuv420p")
    rgb = to_rgb(frame, colour)
    settings = SimpleNamespace(colour=colour, pix_fmt="yuv420p")
    planes = [torch.from_numpy(np.stack([p, p])) for p in to_planes(frame, colour)]
    batch = torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2).float()
    return {"swscale to RGB": _ms(lambda: to_rgb(frame, colour)),
            "swscale to YUV": _ms(lambda: to_yuv(rgb, settings)),
            "torch to RGB": _ms(lambda: planes_to_rgb(*planes, colour)) / 2,
            "torch to YUV": _ms(lambda: rgb_to_planes(batch, colour)) / 2}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--model", default="wave", help="a built-in style or a checkpoint")
    ap.add_argument("--speed", action="store_true", help="time the conversions at 1080p on one thread")
    args = ap.parse_args()
    clips = args.clips or sorted((common.SHARED / "media").glob("*.m*"))
    if not clips:
        raise SystemExit("no clips given and none in shared/media (set STYLEMPI_SHARED)")
    network = load_network(read_model(args.model)[0])
    rows = [measure(clip, network, args.frames) for clip in clips]
    print("| clip | size | chroma, depth | siting inferred | torch path, worst plane dB | wrong siting | wrong range |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} | {r['size']} | {r['chroma']}, {r['depth']}-bit | {r['siting']} | {r['torch']:.1f} "
              f"| {r['wrong siting']:.1f} | {r['wrong range']:.1f} |")
    if args.speed:
        times = speed(clips[0])
        print("\n1080p 4:2:0, one thread, ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
