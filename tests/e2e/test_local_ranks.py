"""`stylempi run -n N` on one machine, from a bare shell, as a new user types it.

The README's `mpirun -n 2 ...` failed for root in a fresh shell (Open MPI's
run-as-root refusal) and with more ranks than cores (not enough slots).
`stylempi run -n N` starts the ranks through the mpirun it finds and tells Open
MPI what it needs; under a real mpirun, -n is refused in one line.
"""
from __future__ import annotations

import os
import subprocess

import pytest

import clips
from conftest import BIN, ROOT, mpirun_path, stylempi_cli
from stylempi.job.launcher import physical_cores
from stylempi.network.styles import BUILTIN

TIMEOUT = 300


@pytest.mark.parametrize("ranks", [2, 3])
def test_run_n_from_a_bare_environment_passes_verify(tmp_path, ranks):
    if "scream" not in BUILTIN:
        pytest.skip("the built-in style scream is not installed")
    clip = clips.basic_clip(tmp_path / "in.mp4", frames=12)
    out = tmp_path / "out.mp4"
    # env -i: PATH (the venv's bin, where pip put mpirun, then the system's) and HOME only;
    # PYTHONPATH only so that the ranks run this checkout, as an installed stylempi would.
    (tmp_path / "home").mkdir()
    bare = ["env", "-i", f"PATH={BIN}:/usr/bin:/bin", f"HOME={tmp_path / 'home'}", f"PYTHONPATH={ROOT}"]
    done = subprocess.run([*bare, *stylempi_cli(), "run", "-n", str(ranks), str(clip), str(out),
                           "--model", "scream"], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert f"on {ranks} ranks" in done.stdout, done.stdout  # the summary: the ranks really ran
    notes = [line for line in done.stderr.splitlines() if line.startswith("stylempi: note: starting")]
    root, over = os.geteuid() == 0, ranks > physical_cores()
    assert len(notes) == (1 if root or over else 0), done.stderr
    assert ("as root" in done.stderr) == root and ("oversubscribed" in done.stderr) == over, done.stderr
    assert "allow-run-as-root" not in done.stderr and "not enough slots" not in done.stderr, done.stderr
    verify = subprocess.run([*bare, *stylempi_cli(), "verify", str(clip), str(out)], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_n_under_mpirun_is_refused_in_one_line(tmp_path):
    clip = clips.basic_clip(tmp_path / "in.mp4", frames=4)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run([mpirun_path(), "-n", "1", *stylempi_cli(), "run", "-n", "2", str(clip),
                           str(tmp_path / "out.mp4"), "--model", "scream"], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("stylempi: error: -n 2:") and "mpirun" in lines[0], lines[0]
    assert not (tmp_path / "out.mp4").exists()
