"""The command line a user scripts against does not change by accident.

Every subcommand's ``--help`` is compared with the text frozen in
``tests/data/cli/`` (argparse formats to $COLUMNS, so it is fixed here), and a
table of misuses is run as real processes for their exit codes and their one
line on stderr. A deliberate change to the CLI updates the frozen text in the
same commit: ``STYLEMPI_FREEZE_HELP=1 pytest tests/integration/test_cli_frozen.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import clips
from conftest import ROOT

FROZEN = ROOT / "tests" / "data" / "cli"
COMMANDS = ["", "run", "probe", "verify", "watch", "train", "preview", "models", "export"]


def help_text(command: str) -> str:
    env = dict(os.environ, COLUMNS="100")
    argv = [sys.executable, "-m", "stylempi", *([command] if command else []), "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_unchanged(command):
    path = FROZEN / f"help-{command or 'stylempi'}.txt"
    text = help_text(command)
    if os.environ.get("STYLEMPI_FREEZE_HELP"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"`stylempi {command} --help` changed"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("frozen") / "in.mp4"
    clips.make_clip(path, frames=4)
    return path


def misuses(clip, tmp):
    """(argv, exit code, a piece of the one stderr line) for misuses that stop before any work."""
    out = str(tmp / "out.mp4")
    return [
        (["run", str(tmp / "missing.mp4"), out, "--model", "scream"], 3, "missing.mp4"),
        (["run", str(clip), out, "--model", "sream"], 4, "did you mean"),
        (["run", str(clip), str(tmp / "out.avi"), "--model", "scream"], 2, ".avi"),
        (["run", str(clip), out, "--model", "scream", "--crf", "99"], 2, "crf"),
        (["run", str(clip), str(clip), "--model", "scream"], 2, ""),
        (["run", str(clip), str(tmp / "nodir" / "o.mp4"), "--model", "scream"], 5, "nodir"),
        (["verify", str(clip), str(tmp / "missing.mp4")], 3, "missing.mp4"),
        (["probe", str(tmp / "missing.mp4")], 3, "missing.mp4"),
        (["export", "sream", "--out", str(tmp / "m.pt")], 4, "did you mean"),
        (["preview", str(clip), "--model", "Sream", "--out", str(tmp / "s.png")], 4, "did you mean"),
        # Guessed flags: no prefix matching (--style was --style-scale), the flag meant is named.
        (["run", str(clip), out, "--style", "wave"], 2, "--model"),
        (["run", str(clip), out, "--model", "wave", "--preserve-color"], 2, "did you mean --preserve-colors?"),
        (["run", str(clip), out, "--model", str(onnx_file(tmp))], 4, "ONNX is an export target"),
        (["run", "-n", "2", str(clip), out, "--model", "sream"], 4, "did you mean scream"),  # before mpirun
        (["runn", str(clip), out, "--model", "scream"], 2, "did you mean run?"),
    ]


def onnx_file(tmp):
    """The smallest file an ONNX reader takes: ir_version, producer, an empty graph, an opset."""
    path = tmp / "x.onnx"
    path.write_bytes(b"\x08\x08\x12\x07pytorch:\x00B\x02\x10\x11")
    return path


def test_misuse_exit_codes_and_one_line(clip, tmp_path):
    for argv, code, piece in misuses(clip, tmp_path):
        done = subprocess.run([sys.executable, "-m", "stylempi", *argv], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == code, (argv, done.returncode, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("stylempi: error:"), (argv, done.stderr)
        assert piece.lower() in lines[0].lower(), (argv, lines[0])
        assert not (tmp_path / "out.mp4").exists()
