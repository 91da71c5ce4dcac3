"""``stylempi probe``: a video's streams as JSON."""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="describe a video's streams as JSON",
                       description="Print a JSON description of INPUT: streams, codecs, frame count, "
                                   "frame rate, duration, size, aspect, rotation, audio tracks.")
    p.add_argument("input", metavar="INPUT")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    from ..media import probe
    print(json.dumps(probe(args.input), indent=2))
    return 0
