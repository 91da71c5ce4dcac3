"""``stylempi models``: list the built-in styles (usable as --model NAME)."""
from __future__ import annotations

import argparse
import json

from ..tools.preview import list_models


def add_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="list the built-in styles (usable as --model NAME)")
    add_models_arguments(m)
    m.set_defaults(func=models_main)


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def models_main(args: argparse.Namespace) -> int:
    rows = list_models()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no built-in styles are installed")
        return 0
    head = ("NAME", "SIZE", "WIDTH", "PAINTING", "LICENCE")
    table = [(r["name"], f"{r['size'] / 1e6:.2f} MB" if r["path"] else "missing", str(r["width"]),
              r["painting"], r["licence"]) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *table)]
    for line in (head, *table):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    print("use one as --model NAME (stylempi run/preview), e.g. --model " + rows[0]["name"])
    return 0
