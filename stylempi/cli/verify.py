"""``stylempi verify``: check OUTPUT holds exactly INPUT's frames, timestamps and audio."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import UsageError
from ..tools import stability


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check OUTPUT holds exactly INPUT's frames, timestamps and audio",
                       description="Exit 0 only when OUTPUT holds exactly the input's frames with the same "
                                   "timestamps (within half a tick of the input's time base, or 0.5 ms where "
                                   "OUTPUT's container keeps 1 ms ticks), size, aspect and orientation, and "
                                   "bit-identical audio. Prints a JSON report. It does not compare pixels, so it "
                                   "cannot see which input frame an output frame was made from: frames swapped "
                                   "or duplicated in place, keeping their timestamps, pass (the report's "
                                   "not_checked says so).")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("output", metavar="OUTPUT")
    p.add_argument("--video-stream", type=int, default=None, metavar="N",
                   help="the input stream that was stylized (default: the one FFmpeg picks)")
    p.add_argument("--stability", action="store_true",
                   help="also report temporal stability: the warping error E_warp of OUTPUT and of INPUT "
                        "(Lai et al. 2018; flow on INPUT, lower is steadier) and their ratio, scored with "
                        "DIS and with Farneback flow, and OUTPUT's style strength and sharpness; informative, "
                        "it does not change the exit code")
    p.add_argument("--stability-reference", default=None, metavar="OFF",
                   help="with --stability: the same job made with --temporal off; each figure is also "
                        "given relative to it")
    p.add_argument("--stability-frames", type=int, default=None, metavar="N",
                   help=f"frames the stability figure uses, from the start (default: {stability.DEFAULT_FRAMES})")
    p.add_argument("--stability-height", type=int, default=None, metavar="H",
                   help=f"frames are scaled down to H rows for the figure (default: {stability.DEFAULT_HEIGHT}; "
                        "0 = full size)")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from ..tools.verify import verify
    if args.stability:
        frames = stability.DEFAULT_FRAMES if args.stability_frames is None else args.stability_frames
        height = stability.DEFAULT_HEIGHT if args.stability_height is None else args.stability_height
        if frames < 2 or height < 0:
            raise UsageError("--stability-frames must be at least 2 and --stability-height at least 0")
    report = verify(args.input, args.output, args.video_stream)
    if args.stability:
        report["stability"] = stability.stability_report(args.input, args.output, frames, height or None,
                                                         args.video_stream, args.stability_reference)
    print(json.dumps(report, indent=2, default=str))
    if not report["ok"]:
        failed = ", ".join(k for k, v in report["checks"].items() if not v["ok"])
        print(f"stylempi: verify: OUTPUT differs from INPUT in: {failed}", file=sys.stderr)
        return 1
    return 0
