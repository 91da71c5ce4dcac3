"""``stylempi watch``'s command line: its options, and a watcher started from them."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from ... import storage
from ...errors import UsageError
from .jobs import split_run_args
from .records import say
from .watcher import WatchConfig, Watcher


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``stylempi watch`` options (for the CLI, or a standalone parser)."""
    parser.add_argument("source", metavar="SOURCE",
                        help="Blob prefix to watch, e.g. az://incoming/ or "
                             "https://ACCOUNT.blob.core.windows.net/incoming/uploads/")
    parser.add_argument("--output", "-o", required=True, metavar="DEST",
                        help="Blob prefix for outputs and their .report.json files (may lie under SOURCE)")
    parser.add_argument("--model", "-m", required=True,
                        help="checkpoint path, Blob URL or built-in style name, passed to `stylempi run`")
    parser.add_argument("--launcher", default=None, metavar="CMD",
                        help="command prefix for the job, e.g. 'mpirun -n 4' or "
                             "'sbatch --wait slurm/stylempi.sbatch {input} {output} {model}' "
                             "(split like a shell would, never run by one)")
    parser.add_argument("--in-process", action="store_true",
                        help="run each job inside the watcher process instead of a child process")
    parser.add_argument("--run-args", default="", metavar="ARGS",
                        help="extra `stylempi run` options, e.g. '--precision bf16'")
    parser.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between listings of SOURCE (default: 30)")
    parser.add_argument("--attempts", type=int, default=3, metavar="K",
                        help="failed runs before an input moves to SOURCE/failed/ (default: 3)")
    parser.add_argument("--once", action="store_true",
                        help="process what is pending (retrying failures up to K times), then exit; "
                             "exit status 1 if any job failed")
    parser.add_argument("--work-dir", default=None, metavar="DIR",
                        help="local scratch directory for downloads and outputs (default: a temp dir)")
    parser.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                        help="stop a job that runs longer than this and count it as failed")
    parser.add_argument("--account-url", default=None, metavar="URL",
                        help="storage account for az:// URLs (default: $AZURE_STORAGE_ACCOUNT_URL, "
                             "or the connection string's endpoint)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``watch`` on the CLI's subparsers (stylempi.cli.SUBCOMMANDS)."""
    p = sub.add_parser(
        "watch", help="stylize each video uploaded under a Blob prefix, exactly once",
        description="Poll SOURCE for new video blobs; claim each with a blob lease (safe with "
                    "several watchers), run `stylempi run` on it, upload the result and a JSON "
                    "report to DEST; after K failures move the input to SOURCE/failed/. "
                    "Ctrl-C or SIGTERM stop it cleanly. See docs/storage.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  stylempi watch az://incoming/ --output az://styled/ --model candy.pth "
               "--launcher 'mpirun -n 4'")
    add_watch_arguments(p)
    p.set_defaults(func=watch_main)
    return p


def watch_main(args: argparse.Namespace) -> int:
    """Run a watcher from parsed arguments; returns the exit status."""
    for loc_arg in (args.source, args.output):
        if not storage.is_remote(loc_arg):
            raise UsageError(f"{storage.redact(loc_arg)}: SOURCE and --output must be Blob URLs "
                             "(az://CONTAINER/PREFIX or https://...)")
    config = WatchConfig(
        source=storage.locate(args.source, args.account_url),
        dest=storage.locate(args.output, args.account_url),
        model=args.model, launcher=args.launcher, run_args=split_run_args(args.run_args),
        poll=args.poll, attempts=args.attempts, once=args.once, in_process=args.in_process,
        work_dir=Path(args.work_dir) if args.work_dir else None, job_timeout=args.job_timeout)
    watcher = Watcher(config)

    def on_signal(signum, _frame):
        say(f"received {signal.Signals(signum).name}, stopping")
        watcher.stop_event.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return watcher.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

