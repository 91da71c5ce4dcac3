"""Starting a job's ranks on one machine (``stylempi run -n N``), and how the ranks of a
failed job end, so that ``mpirun`` shows the error last.

``stylempi run -n N`` starts N local ranks through the ``mpirun`` it finds, as
``torchrun`` and ``horovodrun`` do, with what Open MPI asks of a user on one
machine (:func:`local_launch`): as root, its two allow-run-as-root variables;
with more ranks than cores, oversubscription. Under a real launcher (``mpirun``,
``srun``) the ranks already exist, so ``-n`` is refused (:func:`running_launcher`).

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
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

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


# ---------------------------------------------------------------------------
# stylempi run -n N: the ranks of one machine
# ---------------------------------------------------------------------------

#: Variables a launcher sets in every rank it starts: (variable, the launcher's name).
#: Slurm's batch script itself has no step: ``-n`` works there (its mpirun sees the allocation).
#: srun first: under ``srun --mpi=pmix`` the PMIx variables are set too.
LAUNCHER_VARS = (("SLURM_STEP_NUM_TASKS", "srun"), ("OMPI_COMM_WORLD_SIZE", "mpirun"), ("PMIX_RANK", "mpirun"),
                 ("PMI_RANK", "mpirun"), ("PMI_SIZE", "mpirun"), ("MPI_LOCALNRANKS", "mpiexec"))
#: What Open MPI wants to start ranks as root, and to start more ranks than cores
#: (Open MPI 5's PRRTE, and Open MPI 4); other MPIs ignore them.
ROOT_VARS = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
OVERSUBSCRIBE_VARS = {"PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
                      "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def running_launcher(env: Mapping[str, str]) -> str | None:
    """The launcher that started this process as a rank (``mpirun``, ``srun``...), or None."""
    for var, name in LAUNCHER_VARS:
        if env.get(var):
            return name
    return None


@dataclass(frozen=True)
class LocalLaunch:
    """The ``mpirun`` command line that starts N local ranks, the variables added to its
    environment, and the one note that says what was done for the user (or "")."""

    argv: list[str]
    env: dict[str, str]
    note: str


def local_launch(ranks: int, run_args: Sequence[str], mpirun: str, python: str, cores: int, root: bool,
                 env: Mapping[str, str]) -> LocalLaunch:
    """How to start RANKS ranks of ``stylempi run RUN_ARGS`` on this machine (pure).

    Each rank runs PYTHON (this interpreter) with ``-m stylempi``, so the ranks run the
    very stylempi that was asked, whatever ``stylempi`` is first on PATH. Variables the
    user set already are kept.
    """
    added: dict[str, str] = {}
    said = []
    if root:
        added.update(ROOT_VARS)
        said.append("as root (Open MPI is told to allow it)")
    if ranks > cores:
        added.update(OVERSUBSCRIBE_VARS)
        said.append(f"on {cores} core{'s' if cores != 1 else ''} (oversubscribed: the ranks share the cores)")
    added = {k: v for k, v in added.items() if k not in env}
    note = f"starting {ranks} ranks {' and '.join(said)}" if said else ""
    return LocalLaunch([mpirun, "-n", str(ranks), python, "-m", "stylempi", "run", *run_args], added, note)


def find_mpirun(env: Mapping[str, str]) -> str | None:
    """The ``mpirun`` on PATH, else the one beside this Python (a venv's, not activated)."""
    found = shutil.which("mpirun", path=env.get("PATH"))
    if found:
        return found
    beside = Path(sys.executable).parent / "mpirun"
    return str(beside) if os.access(beside, os.X_OK) else None


def physical_cores() -> int:
    """The cores Open MPI counts as this machine's slots: physical cores, not hardware threads
    (Linux's /proc/cpuinfo; else every logical CPU)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cores, package = set(), ""
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    package = value.strip()
                elif key.strip() == "core id":
                    cores.add((package, value.strip()))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def without_ranks(argv: Sequence[str]) -> list[str]:
    """ARGV less its ``-n N`` (``-nN``, ``--ranks N``, ``--ranks=N``): the ranks' own arguments."""
    out: list[str] = []
    rest = list(argv)
    while rest:
        token = rest.pop(0)
        if token == "--":
            return out + [token, *rest]
        if token in ("-n", "--ranks"):
            if rest:
                rest.pop(0)
            continue
        if token.startswith("--ranks=") or (token.startswith("-n") and token[2:].isdigit()):
            continue
        out.append(token)
    return out
