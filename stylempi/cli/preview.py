"""``stylempi preview``: a before/after contact sheet of a few frames, without a whole job."""
from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..tools.preview import DEFAULT_FRAMES, DEFAULT_HEIGHT, look_label, preview, preview_looks, temporal_preview


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preview",
                       help="before/after contact sheet of a few frames, without running a whole job",
                       description="Stylize K frames spread over INPUT (decoding only those) and write a "
                                   "contact sheet: input frames on top, stylized below.")
    add_preview_arguments(p)
    p.set_defaults(func=preview_main)


def add_preview_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="the video to sample")
    p.add_argument("--model", required=True, help="built-in style name (see `stylempi models`) or .pth file")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="K",
                   help=f"frames spread over the video (default {DEFAULT_FRAMES})")
    p.add_argument("--out", required=True, metavar="SHEET.png", help="where to write the contact sheet")
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT,
                   help=f"tile height in pixels; frames are scaled down to it (default {DEFAULT_HEIGHT})")
    p.add_argument("--fast", action="store_true",
                   help="stylize the scaled-down frames instead of full-size ones (quicker on big videos, "
                        "but the strokes come out larger than `stylempi run` draws them)")
    p.add_argument("--trust-model", action="store_true",
                   help="allow a TorchScript --model (it can run code when loaded)")
    p.add_argument("--style-scale", default="1", metavar="S[,S...]",
                   help="as `stylempi run --style-scale`; several values, comma-separated (e.g. 0.5,1,2), "
                        "give one labelled row each, to pick a stroke size side by side (default: 1)")
    p.add_argument("--preserve-colors", action="store_true",
                   help="as `stylempi run --preserve-colors`: keep the input's colours, take the stylized luma")
    p.add_argument("--compare-colors", action="store_true",
                   help="show each scale twice: with the style's colours and with the input's colours kept")
    p.add_argument("--temporal", action="store_true",
                   help="show the temporal filter instead: K consecutive frames from the start (after the "
                        "frames it warms up on), in rows input, --temporal off, --temporal on")


def preview_main(args: argparse.Namespace) -> int:
    if args.height < 8:
        raise UsageError("--height must be at least 8")
    try:
        scales = [float(v) for v in str(args.style_scale).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--style-scale {args.style_scale}: give numbers such as 0.5,1,2") from None
    if args.temporal:
        info = temporal_preview(args.input, args.model, args.out, frames=args.frames, height=args.height,
                                trust=args.trust_model, full_size=not args.fast)
        print(f"wrote {info['out']} ({info['size'][0]}x{info['size'][1]}): frames {info['frames'][0]} to "
              f"{info['frames'][-1]}, rows input, --temporal off, --temporal on", flush=True)
        return 0
    looks = preview_looks(scales or [1.0], args.preserve_colors, args.compare_colors)
    info = preview(args.input, args.model, args.out, frames=args.frames, height=args.height,
                   trust=args.trust_model, full_size=not args.fast, looks=looks)
    for note in info["notes"]:
        print(f"stylempi: note: {note}", file=sys.stderr, flush=True)
    times = ", ".join(f"{t:.2f}" for t in info["frames"])
    rows = "; ".join(look_label(look) for look in looks)
    print(f"wrote {info['out']} ({info['size'][0]}x{info['size'][1]}): input on top, "
          f"{args.model} below ({rows}); frames at {times} s", flush=True)
    return 0
