"""The demo's closing commands work exactly as printed, and `make demo` needs no test stack.

A new user copies what the demo prints into a shell whose PATH has neither the
venv nor Open MPI's root/oversubscribe variables; this test does the same (no
shell: each printed line is split like a shell would and run as is). The full
fresh-clone run (`make demo` with npm hidden, then every printed command) is
tests/quickstart.sh, too slow for the suite (it installs torch into a new venv).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

import clips
from conftest import ROOT
from stylempi.network.styles import BUILTIN

#: What a user's login shell has: no venv on PATH, none of the Open MPI variables the tests set.
LAUNCHER_VARS = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "OMPI_MCA_rmaps_base_oversubscribe",
                 "PRTE_MCA_rmaps_default_mapping_policy")


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and k != "STYLEMPI_PROGRESS"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def printed_commands(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("next, in this directory"))
    return [line[len("  $ "):] for line in lines[start + 1:] if line.startswith("  $ ")]


@pytest.mark.skipif(len(BUILTIN) < 2, reason="needs two built-in styles")
def test_demo_commands_work_as_printed(tmp_path):
    clip = clips.basic_clip(tmp_path / "clip.mp4", frames=16, size=(64, 48))
    env = user_env()
    demo = subprocess.run([sys.executable, "-m", "stylempi.tools.demo", "clip.mp4", "--out-dir", "out"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert clip.exists() and (tmp_path / "out" / "clip-scream.mp4").is_file()
    commands = printed_commands(demo.stdout)
    assert any(" verify " in c for c in commands) and any(" run " in c for c in commands), demo.stdout
    for line in commands:
        result = subprocess.run(shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"


def test_demo_names_the_venv_for_bare_commands(tmp_path):
    """Where stylempi is not on PATH the demo prints the venv's path and how to activate it."""
    clip = clips.basic_clip(tmp_path / "clip.mp4", frames=8, size=(32, 32))
    if shutil.which("stylempi", path=user_env()["PATH"]):
        pytest.skip("stylempi is installed on the plain PATH here")
    demo = subprocess.run([sys.executable, "-m", "stylempi.tools.demo", str(clip), "--out-dir", "out", "--ranks", "1"],
                          cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    bin_dir = os.path.dirname(sys.executable)
    assert all(c.startswith(bin_dir) for c in printed_commands(demo.stdout))
    assert f". {bin_dir}/activate" in demo.stdout


def _make_dry_run(target: str, tmp_path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    no_npm = tmp_path / "bin"
    no_npm.mkdir()
    for tool in ("python3", "sh", "touch"):  # what the recipes call, and no npm
        if shutil.which(tool):
            (no_npm / tool).symlink_to(shutil.which(tool))
    result = subprocess.run([shutil.which("make"), "-n", "-B", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"],
                            env={"PATH": str(no_npm), "HOME": str(tmp_path)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_demo_installs_only_what_the_demo_uses(tmp_path):
    recipe = _make_dry_run("demo", tmp_path)
    assert "npm" not in recipe and "azurite" not in recipe
    installs = [line for line in recipe.splitlines() if "pip install" in line and "-e" in line]
    assert installs and all(line.endswith('-e ".[mpi]"') for line in installs), installs
    assert "-m stylempi.tools.demo" in recipe


def test_make_test_adds_the_test_stack(tmp_path):
    recipe = _make_dry_run("test", tmp_path)
    assert "npm install" in recipe and "[mpi,test,azureml,onnx]" in recipe and "-m pytest" in recipe
