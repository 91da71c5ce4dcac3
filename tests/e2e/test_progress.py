"""Rank 0's progress: a live bar when a person watches (also under mpirun), plain lines in logs.

The decision is a pure function of the environment (tested directly); two real
``mpirun -n 2 stylempi run`` jobs check it end to end: one inside a
pseudo-terminal (Python's ``pty``, as an interactive shell runs it) must show the
redrawn bar, the same job writing to a file must show only the plain lines.
"""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

import pytest

import clips
from conftest import mpirun_path, stylempi_cli
from stylempi.job.progress import progress_style
from stylempi.network.styles import BUILTIN

FRAMES = 90


@pytest.mark.parametrize("env, err_tty, launcher_tty, expected", [
    ({}, True, False, "live"),                          # plain `stylempi run` in a terminal
    ({}, False, True, "live"),                          # `mpirun` run from a terminal
    ({}, False, False, "lines"),                        # output to a file or a batch log
    ({"STYLEMPI_PROGRESS": "1"}, False, False, "live"),
    ({"STYLEMPI_PROGRESS": "live"}, False, False, "live"),
    ({"STYLEMPI_PROGRESS": "0"}, True, True, "lines"),
    ({"STYLEMPI_PROGRESS": "lines"}, True, False, "lines"),
    ({"AZUREML_RUN_ID": "x"}, False, True, "lines"),    # Azure ML: always a log
    ({"AZUREML_RUN_ID": "x", "STYLEMPI_PROGRESS": "1"}, False, False, "live"),
    ({"STYLEMPI_PROGRESS": "maybe"}, False, True, "live"),  # unknown value: decide as usual
])
def test_progress_style(env, err_tty, launcher_tty, expected):
    assert progress_style(env, err_tty, launcher_tty) == expected


def _job(tmp_path) -> tuple[list[str], dict[str, str]]:
    if "scream" not in BUILTIN:
        pytest.skip("the built-in style scream is not installed")
    clip = clips.basic_clip(tmp_path / "in.mp4", frames=FRAMES, size=(128, 96))
    cmd = [mpirun_path(), "-n", "2", *stylempi_cli(), "run", str(clip), str(tmp_path / "out.mp4"),
           "--model", "scream", "--compile", "off", "--batch-size", "1", "--chunk-frames", "8"]
    env = {k: v for k, v in os.environ.items() if k not in ("STYLEMPI_PROGRESS", "AZUREML_RUN_ID")}
    env["STYLEMPI_PROGRESS_EVERY"] = "0.2"  # plain lines often enough for a short job
    return cmd, env


def _run_in_pty(cmd: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal as stdin, stdout and stderr; return (status, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


def _bar_counts(text: str) -> list[int]:
    """Frame counts of every bar redraw (tqdm writes ``stylize:  40%|...| 24/60 [...``)."""
    return [int(m) for m in re.findall(rf"stylize:.*?\| *(\d+)/{FRAMES} \[", text)]


def test_mpirun_in_a_terminal_shows_the_live_bar(tmp_path):
    cmd, env = _job(tmp_path)
    status, text = _run_in_pty(cmd, env)
    assert status == 0, text
    counts = _bar_counts(text)
    assert "\r" in text and counts, text
    assert counts[-1] == FRAMES and len(set(counts)) >= 3, counts  # redrawn as frames finish
    assert any(0 < c < FRAMES for c in counts), counts
    assert "stylempi: progress:" not in text


def test_mpirun_to_a_file_prints_plain_lines(tmp_path):
    cmd, env = _job(tmp_path)
    log = tmp_path / "job.log"
    with open(log, "wb") as out:
        status = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, timeout=240).returncode
    text = log.read_text()
    assert status == 0, text
    assert "\r" not in text and not _bar_counts(text), text
    lines = re.findall(rf"^stylempi: progress: (\d+)/{FRAMES} frames \(\d+%\), "
                       r"(?:[\d.]+ frames/s, ETA \d+ s|ETA estimating)$", text, re.M)
    assert lines, text
