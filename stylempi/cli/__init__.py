"""The ``stylempi`` command: a thin layer over the library, one module per subcommand.

Each subcommand parses its flags, calls the library, and turns a
:class:`~stylempi.errors.StylempiError` into one line on stderr and the
error's exit code. Exit codes: 0 success, 1 verify found differences or a
general error, 2 usage, 3 input video, 4 model, 5 output, 6 storage, 7 another
rank failed, 70 internal error (a bug: please report it), 130 interrupted.

The top layer: it may import any stylempi package; nothing imports it (the entry point
is ``stylempi.cli:main``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from .. import __version__, prefer_huge_pages
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, StylempiError, one_line
from ..job.comm import SharedError
from ..job.launcher import shared_error_exit
from ..storage.azure.urls import redact
from . import export, models, preview, probe, run, train, verify
from .parser import StylempiParser
from .watch import command as watch_command

EPILOG = """examples:
  stylempi run -n 2 in.mp4 out.mp4 --model wave        (2 ranks on this machine)
  mpirun -n 4 stylempi run in.mp4 out.mp4 --model my.pth  (a cluster; or sbatch)
  stylempi run in.mp4 out.mp4 --model scream --device cpu
  stylempi models
  stylempi verify in.mp4 out.mp4
  stylempi probe in.mp4
"""


#: The subcommands, in the order ``stylempi --help`` lists them: one module each.
SUBCOMMANDS = (run, probe, verify, watch_command, train, preview, models, export)


def build_parser() -> argparse.ArgumentParser:
    parser = StylempiParser(
        prog="stylempi", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Apply a fast neural style network to every frame of a video, across MPI ranks, "
                    "keeping every frame, timestamp and audio track.")
    parser.add_argument("--version", action="version", version=f"stylempi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prefer_huge_pages()  # before torch allocates anything (every subcommand, every rank)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `run -n N` hands them to its ranks
    return _call(args.func, args)


def _call(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand; what escapes it becomes one line on stderr and its exit code."""
    try:
        return func(args)
    except StylempiError as exc:
        shared = isinstance(exc, SharedError)
        if not (shared and exc.reported):
            # a password or SAS token in any URL the message quotes is never printed
            print(f"stylempi: error: {one_line(redact(str(exc)))}", file=sys.stderr, flush=True)
        return _leave(exc.exit_code, shared)
    except KeyboardInterrupt:
        print("stylempi: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug; still one line unless debugging
        if os.environ.get("STYLEMPI_DEBUG"):
            raise
        print(f"stylempi: internal error: {type(exc).__name__}: {exc} (this is a bug; rerun with "
              "STYLEMPI_DEBUG=1 for a traceback and report it)", file=sys.stderr, flush=True)
        return _leave(EXIT_INTERNAL, shared=False)


def _leave(code: int, shared: bool) -> int:
    """Under mpirun, rank 0 ends last so that its error stays the last line (stylempi.job.launcher)."""
    return shared_error_exit(code, shared)

