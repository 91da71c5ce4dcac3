"""Rank 0's progress: one bar for the frames done over all ranks.

The style is decided from the environment (:func:`progress_style`): a live bar
for a person watching a terminal, a plain line now and then in a log.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Mapping, Sequence

#: ``STYLEMPI_PROGRESS`` values that force one style or the other.
_LIVE_VALUES = {"1", "live", "bar", "on", "yes", "true"}
_LINE_VALUES = {"0", "lines", "log", "off", "no", "false"}
#: Variables of batch services whose output always goes to a log, whatever a tty test says.
_BATCH_VARS = ("AZUREML_RUN_ID", "AZ_BATCH_TASK_ID")


def progress_style(env: Mapping[str, str], stderr_is_tty: bool, launcher_on_tty: bool) -> str:
    """``"live"`` (a redrawn bar) or ``"lines"`` (a plain line now and then), from the environment.

    Under ``mpirun`` a rank's stderr is a pipe to the launcher even when the launcher
    writes to a terminal, so the launcher's own stderr counts too (``launcher_on_tty``);
    a batch job's launcher writes to a log file, which keeps the plain lines there.
    """
    forced = env.get("STYLEMPI_PROGRESS", "").strip().lower()
    if forced in _LIVE_VALUES:
        return "live"
    if forced in _LINE_VALUES:
        return "lines"
    if any(env.get(var) for var in _BATCH_VARS):
        return "lines"
    return "live" if stderr_is_tty or launcher_on_tty else "lines"


def _launcher_on_tty(env: Mapping[str, str]) -> bool:
    """Whether the MPI launcher that started this rank writes its stderr to a terminal.

    Open MPI starts local ranks as children of ``prterun`` (remote ones under ``prted``,
    whose stderr is no terminal) and forwards their output to its own stderr.
    """
    if not any(var in env for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK")):
        return False
    try:
        target = os.readlink(f"/proc/{os.getppid()}/fd/2")
    except OSError:
        return False
    return target.startswith(("/dev/pts/", "/dev/tty"))


class ProgressBar:
    """One bar on rank 0 for frames done over all ranks, with rate and ETA, and the job's
    stage lines.

    On a terminal (also under ``mpirun`` run from one) it is a live tqdm bar; in a
    log file (Slurm, Azure ML) it is a plain line every :attr:`LOG_EVERY` seconds
    (``STYLEMPI_PROGRESS_EVERY``), so logs show progress without carriage-return
    noise. ``STYLEMPI_PROGRESS=1`` forces the live bar, ``=0`` the plain lines.

    Stages that take a while (loading the model, compiling it, joining) are named
    by :meth:`stage` before they start, as one line in either style. The bar
    itself appears with the first frames, so a compile is named before any
    progress is drawn. The rate and ETA count only steady-state frames: the first
    batch carries the model's load and any compile (minutes, once), so the clock
    starts when it is done, and until :attr:`STEADY_S` seconds and
    :attr:`STEADY_UPDATES` batches later the ETA is "estimating" (a first ETA of
    51144 s, from a compile's two frames, told a user nothing true).
    """

    LOG_EVERY = 30.0
    #: Steady-state time and batches the rate needs before an ETA is printed.
    STEADY_S = 2.0
    STEADY_UPDATES = 2

    def __init__(self, done: int, total: int, notices: Sequence[str], silent: bool,
                 callback: Callable[[int, int], None] | None):
        """DONE of TOTAL frames are done already (reused); NOTICES are printed first."""
        self._callback = callback
        self._done = done
        self._total = total
        self._bar = None
        self._live = False
        self._log = False
        self._silent = silent
        self._closed = False
        self._last_log = time.monotonic()
        #: When the first frames of this run were done, and how many were done then.
        self._steady: tuple[float, int] | None = None
        self._steady_updates = 0
        if not silent:
            for notice in notices:
                print(f"stylempi: note: {notice}", file=sys.stderr)
            env = os.environ
            if progress_style(env, sys.stderr.isatty(), _launcher_on_tty(env)) == "live":
                self._live = True
            else:
                self._log = True
                self._every = _seconds(os.environ.get("STYLEMPI_PROGRESS_EVERY"), self.LOG_EVERY)

    def stage(self, text: str) -> None:
        """Name a stage that is about to start (``stylempi: compiling ...``), above the bar."""
        if self._silent:
            return
        line = f"stylempi: {text}"
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def update(self, frames: int) -> None:
        if not frames:
            return
        self._done += frames
        now = time.monotonic()
        if self._steady is None:
            self._steady = (now, self._done)  # the warm-up batch: not part of the rate
            if self._live and not self._closed:
                from tqdm import tqdm
                # tqdm's own rate and ETA would count from the bar's start; ours (rate_and_eta) are
                # the log lines', so both styles say the same.
                self._bar = tqdm(total=self._total, initial=self._done, unit="frame", desc="stylize",
                                 file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                                 bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
                                 postfix=self.rate_and_eta(now))
        else:
            self._steady_updates += 1
            if self._bar is not None:
                self._bar.set_postfix_str(self.rate_and_eta(now), refresh=False)
                self._bar.update(frames)
        if self._log and now - self._last_log >= self._every:
            self._last_log = now
            print(f"stylempi: progress: {self._done}/{self._total} frames "
                  f"({100 * self._done // max(1, self._total)}%), {self.rate_and_eta(now)}",
                  file=sys.stderr, flush=True)
        if self._callback is not None:
            self._callback(self._done, self._total)

    def rate_and_eta(self, now: float) -> str:
        """``1.52 frames/s, ETA 120 s`` from steady-state frames, or ``ETA estimating``."""
        if self._steady is None or self._steady_updates < self.STEADY_UPDATES \
                or now - self._steady[0] < self.STEADY_S or self._done <= self._steady[1]:
            return "ETA estimating"
        rate = (self._done - self._steady[1]) / (now - self._steady[0])
        return f"{rate:.2f} frames/s, ETA {(self._total - self._done) / rate:.0f} s"

    def close(self) -> None:
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _seconds(text: str | None, default: float) -> float:
    """A positive number of seconds from an environment variable, else ``default``."""
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value > 0 else default
