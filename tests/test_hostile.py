"""Hostile input and misuse: never a wrong output with exit 0, never an internal error for a
user's mistake.

Every case runs the real CLI under real ``mpirun`` (2 ranks) on tiny generated clips, with
checkpoints made here, and checks the documented exit code, one ``stylempi: error:`` line, no
OUTPUT and no work dir left where resuming cannot help.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

import clips
from conftest import stylempi, stylempi_cli

pytestmark = pytest.mark.slow
TIMEOUT = 240


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return clips.make_clip(work / "in.mp4", frames=10, size=(64, 48), gop=5, audio_tracks=1)


@pytest.fixture(scope="module")
def good_state() -> dict[str, torch.Tensor]:
    return clips.test_network().state_dict()


def digest(path: Path) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else None


def error_lines(res: subprocess.CompletedProcess) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.strip().startswith("stylempi: error")]


def leftovers(output: Path) -> list[str]:
    """Work dirs or partial files a failed job left beside OUTPUT."""
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}"))


def save_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(state, path)
    return path


def run_mpi(inp: Path, out: Path, model: Path, *extra: str, ranks: int = 2) -> subprocess.CompletedProcess:
    return stylempi("run", inp, out, "--model", model, "--device", "cpu", "--quiet", *extra,
                    ranks=ranks, timeout=TIMEOUT)


def assert_refused(res: subprocess.CompletedProcess, out: Path, code: int, *mention: str,
                   one_line: bool = True) -> str:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    assert res.returncode == code, f"exit {res.returncode}, expected {code}: {res.stderr[-2000:]}"
    lines = error_lines(res)
    assert lines, res.stderr[-2000:]
    if one_line:  # mpirun adds a notice of its own; stylempi says it once, from rank 0
        assert len([l for l in res.stderr.splitlines() if l.startswith("stylempi:")]) == 1, res.stderr[-2000:]
    assert not out.exists(), "a failed job left OUTPUT behind"
    for word in mention:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------
# Non-finite, sparse and complex weights
# ---------------------------------------------------------------------------

def _damaged(state: dict[str, torch.Tensor], key: str, how: str) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in state.items()}
    value = state[key]
    if how == "nan":
        value.view(-1)[0] = float("nan")
    elif how == "inf":
        value.view(-1)[-1] = float("inf")
    elif how == "sparse":
        value = value.to_sparse()
    elif how == "complex":
        value = value.to(torch.complex64)
    state[key] = value
    return state


@pytest.mark.parametrize("key,how,words", [
    ("conv1.conv2d.weight", "nan", ("conv1.conv2d.weight", "NaN")),
    ("deconv3.conv2d.bias", "inf", ("deconv3.conv2d.bias", "Inf")),
    ("res2.conv1.conv2d.weight", "sparse", ("res2.conv1.conv2d.weight", "sparse")),
    ("in1.weight", "complex", ("in1.weight", "complex")),
])
def test_unusable_weights_are_refused_at_load(work, clip, good_state, key, how, words):
    model = save_checkpoint(work / f"{how}.pth", _damaged(good_state, key, how))
    out = work / f"out-{how}.mp4"
    before = digest(model), digest(clip)
    res = run_mpi(clip, out, model)
    assert_refused(res, out, 4, *words)
    assert "UserWarning" not in res.stderr
    assert (digest(model), digest(clip)) == before
    assert leftovers(out) == []


def test_weights_that_overflow_fail_the_batch(work, clip, good_state):
    """Finite weights whose products overflow: the network computes Inf/NaN, which would clamp
    to a blank frame; the batch fails instead (exit 4 from the rank that saw it)."""
    state = {k: v.clone() for k, v in good_state.items()}
    state["deconv3.conv2d.weight"].fill_(3e38)
    model = save_checkpoint(work / "overflow.pth", state)
    out = work / "out-overflow.mp4"
    res = run_mpi(clip, out, model)
    assert_refused(res, out, 4, "non-finite", one_line=False)


# ---------------------------------------------------------------------------
# Encoder options: checked once on rank 0, before any work
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra,words", [
    (("--preset", "warp9"), ("libx264", "preset=warp9")),
    (("--crf", "-5"), ("--crf -5", "0 to 51")),
    (("--crf", "99"), ("--crf 99", "0 to 51")),
    (("--codec", "libvpx-vp9", "--crf", "64"), ("--crf 64", "0 to 63")),
])
def test_bad_encoder_options_are_usage_errors(work, clip, good_state, extra, words):
    model = save_checkpoint(work / "good.pth", good_state)
    out = work / "out-enc.mkv"
    res = run_mpi(clip, out, model, *extra)
    line = assert_refused(res, out, 2, *words)
    assert "rerun" not in line and "internal" not in line
    assert not any(l.startswith("x264") for l in res.stderr.splitlines()), res.stderr  # folded into the line
    assert leftovers(out) == []
