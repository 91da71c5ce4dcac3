"""A Blob INPUT is moved once per node, and rank temp dirs never outlive their rank.

Two "nodes" on one machine: ``mpirun``'s MPMD form starts two app contexts of
two ranks each, every context under ``env STYLEMPI_NODE=NAME TMPDIR=DIR``. The
name splits the ranks into two storage groups (as two hosts' shared-memory
groups would be) and each group gets a temp dir of its own (as each host has
its own disk). A counting proxy in front of Azurite (tests/azurite.py) measures
the bytes the job really read from storage.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stylempi import storage

from azurite import azurite_server, blob_env, counting_proxy  # noqa: F401 (fixtures)
from conftest import mpirun_path, stylempi, stylempi_cli


def two_node_command(args: list[str], tmp_path: Path, ranks_per_node: int = 2) -> list[str]:
    """``mpirun -n 2 env STYLEMPI_NODE=a TMPDIR=.../a stylempi ARGS : -n 2 env ... b ...``."""
    cmd = [mpirun_path()]
    for node in ("a", "b"):
        tmp = tmp_path / f"node-{node}"
        tmp.mkdir(exist_ok=True)
        if node == "b":
            cmd.append(":")
        cmd += ["-n", str(ranks_per_node), "env", f"STYLEMPI_NODE={node}", f"TMPDIR={tmp}",
                *stylempi_cli(), *args]
    return cmd


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for node in ("a", "b") for p in (tmp_path / f"node-{node}").iterdir())


@pytest.mark.slow
def test_blob_input_is_read_once_per_node(blob_env, counting_proxy, tmp_path, tiny_model):
    import clips
    server, container = blob_env
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=24, gop=4, size=(96, 64), audio_tracks=1)
    storage.upload(clip, f"az://{container}/in/clip.mp4")
    out = tmp_path / "out.mp4"
    args = ["run", f"az://{container}/in/clip.mp4", str(out), "--model", str(tiny_model),
            "--chunk-frames", "4", "--quiet"]
    env = dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=counting_proxy.connection_string(),
               OMP_NUM_THREADS="1")
    r = subprocess.run(two_node_command(args, tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    size = clip.stat().st_size
    served = counting_proxy.served(container, "in/clip.mp4")
    # One download per node: twice the input for two nodes (every rank downloading would be 4x).
    assert 2 * size <= served <= 2.2 * size, (served, size)
    verified = stylempi("verify", clip, out, timeout=120)
    assert verified.returncode == 0, verified.stdout[-2000:]
    assert leftovers(tmp_path) == []


def _rank_pids(launcher: int) -> list[int]:
    """The stylempi ranks under the mpirun process LAUNCHER (never the reaper helpers)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if any(part.endswith(b"stylempi") for part in cmdline) and b"run" in cmdline \
                and _descends_from(int(stat[1]), launcher):
            found.append(int(entry.name))
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(8):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


@pytest.mark.slow
def test_killed_rank_leaves_no_temp_dirs(blob_env, tmp_path, tiny_model):
    """kill -9 one rank mid-job (a preempted node): mpirun ends the others; every rank's
    temp dir, the node's downloaded input included, is gone moments later."""
    import clips
    server, container = blob_env
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=48, gop=4, size=(96, 64))
    storage.upload(clip, f"az://{container}/in/clip.mp4")
    out = tmp_path / "out.mp4"
    args = ["run", f"az://{container}/in/clip.mp4", str(out), "--model", str(tiny_model),
            "--chunk-frames", "4", "--batch-size", "1", "--quiet"]
    env = dict(os.environ, AZURE_STORAGE_CONNECTION_STRING=server.connection_string(), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(two_node_command(args, tmp_path, ranks_per_node=1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".out.mp4.stylempi/*/chunk-*.json")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no chunk finished in time"
            time.sleep(0.1)
        assert len(leftovers(tmp_path)) == 2  # each rank's temp dir, while it works
        ranks = _rank_pids(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[-1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    deadline = time.monotonic() + 15
    while leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers(tmp_path) == [], err[-2000:]
