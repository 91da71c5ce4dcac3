"""``stylempi export``: a style network as TorchScript (or ONNX)."""
from __future__ import annotations

import argparse

from ..tools.export import FORMATS, export


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a style network to TorchScript (or ONNX)",
                       description="Export a style network (a built-in style name or a .pth checkpoint) to "
                                   "TorchScript or ONNX: the bare network, RGB 0..255 in and out, giving the "
                                   "checkpoint's pixels.")
    add_export_arguments(p)
    p.set_defaults(func=export_main)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="built-in style name or .pth checkpoint")
    p.add_argument("--format", default="torchscript", choices=FORMATS,
                   help="torchscript (default) or onnx (needs the [onnx] extra: pip install 'stylempi[onnx]')")
    p.add_argument("--out", metavar="FILE", help="output file (default: MODEL.pt / MODEL.onnx here)")
    p.add_argument("--trust-model", action="store_true", help="allow a TorchScript MODEL as input")


def export_main(args: argparse.Namespace) -> int:
    path = export(args.model, args.format, args.out, trust=args.trust_model)
    note = " (load it with --trust-model: TorchScript can run code)" if args.format == "torchscript" else ""
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB){note}", flush=True)
    return 0
