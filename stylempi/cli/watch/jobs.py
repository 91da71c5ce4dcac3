"""Running one watched job: ``stylempi run`` in a child process, or in the watcher itself.

Both ways take the same ``--run-args``, read by ``stylempi run``'s own parser
(:func:`parse_run_args`): a child process parses them itself, an in-process
job through :meth:`stylempi.options.RunOptions.from_args`, and the watcher checks them once at start
(:func:`check_run_args`) so that a typo fails there, not on every input.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

from ... import storage
from ...errors import StylempiError, UsageError
from ...options import RunOptions
from ...job.staging import staged_run
from ..parser import StylempiParser
from ..run import add_run_arguments

LOG_TAIL = 4000


def build_job_argv(launcher: str | None, input_path: str, output_path: str, model: str,
                   run_args: list[str] | None = None) -> list[str]:
    """The job's argv (a list; no shell ever sees it).

    Without a launcher: this Python running ``stylempi.cli run``. With one: the
    launcher's words, then that command; or, when the launcher holds any of
    ``{input}``, ``{output}``, ``{model}``, just the launcher's words with those
    replaced (for wrappers such as ``sbatch --wait slurm/stylempi.sbatch
    {input} {output} {model}``).
    """
    job = [sys.executable, "-m", "stylempi.cli", "run", input_path, output_path,
           "--model", model, *(run_args or [])]
    if not launcher:
        return job
    words = shlex.split(launcher)
    if not words:
        raise UsageError("--launcher is empty")
    values = {"input": input_path, "output": output_path, "model": model}
    if any("{" + k + "}" in w for w in words for k in values):
        out = []
        for w in words:
            for k, v in values.items():
                w = w.replace("{" + k + "}", v)
            out.append(w)
        return out + list(run_args or [])
    return words + job


def split_run_args(text: str | None) -> list[str]:
    """``--run-args`` split like a shell would; an unbalanced quote is a usage error."""
    try:
        return shlex.split(text or "")
    except ValueError as e:
        raise UsageError(f"--run-args: {e}") from None


class _RunArgsParser(StylempiParser):
    """``stylempi run``'s arguments (stylempi.cli.run.add_run_arguments), parsed as ``run``
    parses them (no abbreviations, a near-miss named), raising :class:`UsageError` instead
    of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"--run-args: {message}")

    def print_help(self, file=None) -> None:
        pass

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        self.error("--help is not an option of a job (see `stylempi run --help`)")


def _run_parser() -> argparse.ArgumentParser:
    parser = _RunArgsParser(prog="stylempi run")
    add_run_arguments(parser)
    return parser


def parse_run_args(input_path: str, output_path: str, model: str, run_args: list[str]) -> argparse.Namespace:
    """``stylempi run INPUT OUTPUT --model MODEL RUN_ARGS`` parsed as the CLI parses it."""
    args = _run_parser().parse_args([input_path, output_path, "--model", model, *run_args])
    if args.ranks is not None:
        raise UsageError("--run-args: -n is not for a watched job: its ranks come from --launcher "
                         "(e.g. --launcher 'mpirun -n 4')")
    return args


def check_run_args(model: str, run_args: list[str]) -> None:
    """Raise :class:`UsageError` for an option ``stylempi run`` does not take or a value it refuses."""
    parse_run_args("INPUT.mp4", "OUTPUT.mp4", model, run_args)


def run_in_process(local_in: Path, local_out: Path, model: str, run_args: list[str]):
    """Run the job inside this process: (returncode, log tail, argv)."""
    from ...job.comm import get_comm
    from ...job.run import run_job  # the core; imported only when asked for
    argv = ["<in-process>", str(local_in), str(local_out), "--model", model, *run_args]
    try:
        args = parse_run_args(str(local_in), str(local_out), model, run_args)
        options = dataclasses.replace(RunOptions.from_args(args), quiet=True,
                                      work_dir=args.work_dir or str(local_out.parent / "work"))
        comm = get_comm()
        with staged_run(options, args.account_url, comm) as options:
            summary = run_job(options, comm=comm)
    except StylempiError as e:
        return e.exit_code, f"stylempi: error: {storage.redact(str(e))}", argv
    # What `stylempi run` would have printed: the job's log, as a child's would be.
    lines = [f"stylempi: warning: {w}" for w in summary.warnings()] + [summary.line()] if summary else []
    return 0, storage.scrub("\n".join(lines)), argv


def run_child(argv: list[str], job_dir: Path, should_stop: Callable[[], bool],
              timeout: float | None) -> tuple[int | None, str]:
    """Run ARGV in its own session with its output in ``job_dir/job.log``: (returncode, log
    tail). The returncode is None when ``should_stop()`` turned True (the job was stopped),
    124 when it ran past ``timeout`` seconds."""
    log_path = job_dir / "job.log"
    deadline = time.monotonic() + timeout if timeout else None
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=job_dir,
                                    start_new_session=True)
        except OSError as e:
            return 127, f"cannot start {argv[0]}: {e.strerror}"
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            timed_out = deadline is not None and time.monotonic() > deadline
            if should_stop() or timed_out:
                _terminate(proc)
                rc = 124 if timed_out else None
                break
    return rc, _tail(log_path)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM the job's process group (we started it in its own session), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL))
            return storage.scrub(f.read().decode("utf-8", "replace"))
    except OSError:
        return ""
