"""How the ranks of a failed job end, so that ``mpirun`` shows the error last.

When every rank stops on the same error (rank 0 found it while planning or
joining and shared it, :meth:`stylempi.job.comm.Comm.on_root`), rank 0 has printed
the one ``stylempi: error:`` line and the job's exit code is that error's. Open
MPI 5's launcher (PRRTE) follows a rank's non-zero exit with a six-line notice
("prterun detected that one or more processes exited with non-zero status")
unless that rank is the *last* of the job to end: in PRRTE's error manager
(``src/mca/errmgr/dvm/errmgr_dvm.c``, state ``PRTE_PROC_STATE_TERM_NON_ZERO``)
a non-zero exit that is not the last marks the job aborted, and only an aborted
job gets the notice (``src/mca/state/dvm/state_dvm.c``, ``check_complete``);
the last one merely sets the job's exit code, which ``mpirun`` returns. No
option of ``mpirun`` drops the notice and keeps the code (README, "When things
go wrong").

So after a shared error the other ranks end with 0 (they report nothing), and
rank 0 finalizes MPI, waits until the other ranks of its node are gone, and
ends last with the error's code. Ranks on other nodes cannot be watched from
rank 0: a short grace covers them, and should one end after rank 0 anyway the
only cost is Open MPI's notice below the line, with the same exit code.
"""
from __future__ import annotations

import os
import sys
import time

#: How long rank 0 waits for the other ranks of its node to end before it ends anyway.
PEERS_TIMEOUT_S = 10.0
#: After the local ranks are gone: time for the launcher to record their ends (same node)...
LOCAL_GRACE_S = 0.1
#: ...and for ranks on other nodes, which rank 0 cannot watch, to end and be reported.
REMOTE_GRACE_S = 1.0


def shared_error_exit(code: int, shared: bool) -> int:
    """The exit code this rank should end with after an error every rank stopped on.

    ``shared`` is true when every rank stopped on this error
    (:class:`stylempi.job.comm.SharedError`: rank 0 reported it and ends with
    ``code``). An error of one rank alone, outside an MPI job, or before MPI is
    up: ``code`` unchanged, since waiting for the other ranks could then wait
    for ever.
    """
    mpi = _running_mpi()
    if mpi is None or not shared:
        return code
    if mpi.COMM_WORLD.Get_rank() != 0:
        return 0
    ranks = mpi.COMM_WORLD.Get_size()
    mpi.Finalize()  # returns once every rank has reached MPI_Finalize (a fence): they are ending too
    if ranks > 1:
        _wait_for_local_peers()
        local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", ranks))
        time.sleep(LOCAL_GRACE_S if local >= ranks else REMOTE_GRACE_S)
    return code


def _running_mpi():
    """mpi4py's MPI module if this process initialized MPI and has not finalized it."""
    mpi = sys.modules.get("mpi4py.MPI")
    try:
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            return mpi
    except Exception:  # noqa: BLE001 - a broken MPI must not hide the error being reported
        pass
    return None


def _wait_for_local_peers(timeout_s: float = PEERS_TIMEOUT_S) -> None:
    """Block until no other rank of this job runs on this node (Linux /proc; else at once)."""
    namespace = os.environ.get("PMIX_NAMESPACE")
    if not namespace or not os.path.isdir("/proc"):
        return
    deadline = time.monotonic() + timeout_s
    while local_peers(os.getppid(), namespace) and time.monotonic() < deadline:
        time.sleep(0.02)


def local_peers(parent: int, namespace: str) -> list[int]:
    """Pids of the other ranks of job ``namespace`` started by ``parent`` that have not been reaped.

    The launcher starts the ranks of a node as its children, with the job's
    ``PMIX_NAMESPACE`` in their environment. A rank that has exited but not
    been reaped (a zombie, its environment gone) counts as well: the launcher
    has not seen it end yet.
    """
    wanted = f"PMIX_NAMESPACE={namespace}".encode()
    peers = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[1]) != parent:
                continue
            if fields[0] == b"Z":
                peers.append(int(name))
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    peers.append(int(name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return peers
