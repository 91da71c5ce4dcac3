"""A real, throw-away, single-node Slurm cluster for tests.

Starts a private ``munged`` (own key and socket), ``slurmctld`` and ``slurmd``
from Debian's ``slurm-wlm`` (22.05) with a generated CPU-only ``slurm.conf``.
Everything (config, state, spool, logs, sockets) lives in one directory, the
ports are free ones picked at start-up, and nothing of the machine's own
``/etc/slurm`` or ``/etc/munge`` is used, so two test runs on the same
machine do not see each other.

Use it as a context manager::

    with SlurmCluster(tmpdir) as cluster:
        cluster.run("sbatch", "--wait", "job.sbatch")

Client commands need ``SLURM_CONF``; :meth:`SlurmCluster.env` gives an
environment with it set, and :meth:`SlurmCluster.run` uses that.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable, Mapping

#: Daemons and clients this module needs.
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "sinfo")
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find_binary(name: str) -> str | None:
    """Path of a daemon or client; daemons live in sbin, often off a user's PATH."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_binaries() -> list[str]:
    """Names of the Slurm/munge programs that are not installed."""
    return [name for name in (*DAEMONS, *CLIENTS) if find_binary(name) is None]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on localhost right now."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


class SlurmError(RuntimeError):
    """The cluster did not come up (the message carries the daemons' logs)."""


class SlurmCluster:
    """One-node Slurm cluster in ``root``; ``cpus`` CPUs on node ``nodename``."""

    def __init__(self, root: str | os.PathLike, cpus: int | None = None,
                 partition: str = "debug", start_timeout: float = 60.0):
        self.root = Path(root).resolve()
        self.cpus = cpus or max(os.cpu_count() or 1, 1)
        self.partition = partition
        self.start_timeout = start_timeout
        self.nodename = socket.gethostname().split(".")[0] or "localhost"
        self.cluster_name = f"t{os.getpid()}"
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.logs = self.root / "log"
        self._procs: dict[str, subprocess.Popen] = {}

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise SlurmError(f"not installed: {', '.join(missing)}")
        try:
            self._start_munge()
            self._write_conf()
            self._start_daemon("slurmctld", ["-D", "-f", str(self.conf)])
            self._wait_for(self._controller_up, "slurmctld to answer")
            self._start_daemon("slurmd", ["-D", "-f", str(self.conf), "-N", self.nodename])
            self._wait_for(self._node_idle, f"node {self.nodename} to become idle")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel leftover jobs, stop slurmd, slurmctld and munged; never raises."""
        self._cancel_all_jobs()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def _cancel_all_jobs(self, wait: float = 30.0) -> None:
        """A failed test may leave a job running: its processes must not outlive the cluster."""
        if "slurmctld" not in self._procs or self._procs["slurmctld"].poll() is not None:
            return
        try:
            listed = self.run("squeue", "-h", "-o", "%i", check=False, timeout=20).stdout.split()
            if not listed:
                return
            self.run("scancel", *listed, check=False, timeout=20)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.run("squeue", "-h", "-o", "%i", check=False, timeout=20).stdout.split():
                    return
                time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass

    # -- clients ---------------------------------------------------------
    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The calling environment with ``SLURM_CONF`` pointing at this cluster."""
        env = dict(os.environ)
        # A surrounding allocation's variables would confuse the clients.
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            del env[key]
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra or {})
        return env

    def run(self, *args: str | os.PathLike, timeout: float = 60, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None
            ) -> subprocess.CompletedProcess:
        """Run a Slurm client command (``args[0]`` is e.g. ``sbatch``) against this cluster."""
        cmd = [find_binary(str(args[0])) or str(args[0]), *map(str, args[1:])]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=self.env(env), cwd=cwd)
        if check and proc.returncode != 0:
            raise SlurmError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}\n{self.log_tail()}")
        return proc

    def job_state(self, job_id: str) -> str:
        """The job's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ...), or ``""``."""
        proc = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        for field in proc.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return ""

    def job_field(self, job_id: str, name: str) -> str:
        """One ``Name=value`` field of ``scontrol show job`` (``""`` when absent)."""
        proc = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        for field in proc.stdout.split():
            if field.startswith(name + "="):
                return field.split("=", 1)[1]
        return ""

    def log_tail(self, lines: int = 30) -> str:
        """The end of every daemon log, for failure messages."""
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    # -- internals -------------------------------------------------------
    def _start_munge(self) -> None:
        munge_dir = self.munge_socket.parent
        munge_dir.mkdir(parents=True, exist_ok=True)
        munge_dir.chmod(0o711)  # clients must reach the socket; the key stays 0600
        self.logs.mkdir(parents=True, exist_ok=True)
        key = munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._start_daemon("munged", [
            "--foreground", "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
            f"--log-file={self.logs / 'munged.log'}",
        ])
        self._wait_for(self.munge_socket.exists, "munged's socket")

    def _write_conf(self) -> None:
        ctld_port, slurmd_port = free_ports(2)
        state, spool, run = (self.root / d for d in ("state", "spool", "run"))
        for directory in (self.conf.parent, state, spool, run, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        user = _user_name()
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.nodename}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire also delays a requeued job's restart (default 120 s).
            f"AuthInfo=socket={self.munge_socket},cred_expire=10",
            "MpiDefault=none",
            f"MailProg={shutil.which('true') or '/bin/true'}",
            "ProctrackType=proctrack/linuxproc",
            # As production clusters do: each task is pinned to the CPUs it was given,
            # so a step that asks for fewer CPUs than the job has really gets fewer.
            "TaskPlugin=task/affinity",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "SchedulerType=sched/backfill",
            "ReturnToService=2",
            "JobRequeue=1",
            "KillWait=5",
            "MinJobAge=600",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "Waittime=0",
            f"StateSaveLocation={state}",
            f"SlurmdSpoolDir={spool}",
            f"SlurmctldPidFile={run / 'slurmctld.pid'}",
            f"SlurmdPidFile={run / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={self.conf.parent / 'plugstack.conf'}",
            f"NodeName={self.nodename} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.nodename} Default=YES "
            "MaxTime=INFINITE State=UP OverSubscribe=NO",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        (self.conf.parent / "plugstack.conf").write_text("")

    def _start_daemon(self, name: str, args: Iterable[str]) -> None:
        binary = find_binary(name)
        out = open(self.logs / f"{name}.stdout", "ab")
        try:
            self._procs[name] = subprocess.Popen(
                [binary, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env(), start_new_session=True)
        finally:
            out.close()

    def _controller_up(self) -> bool:
        return self.run("scontrol", "ping", check=False, timeout=20).stdout.find("UP") >= 0

    def _node_idle(self) -> bool:
        proc = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=20)
        return proc.returncode == 0 and "idle" in proc.stdout

    def _wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmError(f"{name} exited {proc.returncode} while waiting for {what}\n"
                                     f"{self._stdout_tail()}{self.log_tail()}")
            if condition():
                return
            time.sleep(0.5)
        raise SlurmError(f"timed out waiting for {what}\n{self._stdout_tail()}{self.log_tail()}")

    def _stdout_tail(self) -> str:
        parts = []
        for out in sorted(self.logs.glob("*.stdout")):
            text = out.read_text(errors="replace").strip()
            if text:
                parts.append(f"--- {out.name} ---\n{text[-3000:]}\n")
        return "".join(parts)


def _user_name() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name
