"""A job names its slow stages before they start, and its ETA counts only steady-state frames.

A first compile took minutes with nothing said but a note, and then printed
``ETA 51144 s`` from the compile's two frames. Here a real ``stylempi run``
compiles for the first time (an empty compile cache, ``--compile on``), once
writing plain log lines and once on a terminal (Python's ``pty``): the compile's
stage line, with the frame size and precision and "cached for next time", comes
before any progress, and no ETA printed is more than 3x the time the job really
had left.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

import clips
from conftest import stylempi_cli
from stylempi.network.styles import BUILTIN

FRAMES = 96
COMPILE_LINE = re.compile(r"^stylempi: compiling the network for 320x240 frames, batch 1, (fp32|bf16): "
                          r"a one-off, cached for next time in ", re.M)
ETA = re.compile(r"^stylempi: progress: \d+/\d+ frames \(\d+%\), (?:[\d.]+ frames/s, ETA (\d+) s|ETA estimating)$")

pytestmark = pytest.mark.slow  # each test compiles the network once (minutes on 2 busy cores)


def _job(tmp_path, **env_over) -> tuple[list[str], dict[str, str]]:
    if "scream" not in BUILTIN:
        pytest.skip("the built-in style scream is not installed")
    # Frames big enough that the steady state lasts seconds after the compile, to estimate from.
    clip = clips.basic_clip(tmp_path / "in.mp4", frames=FRAMES, size=(320, 240))
    cmd = [*stylempi_cli(), "run", str(clip), str(tmp_path / "out.mp4"), "--model", "scream",
           "--compile", "on", "--batch-size", "1", "--chunk-frames", "16"]
    env = {k: v for k, v in os.environ.items() if k not in ("STYLEMPI_PROGRESS", "AZUREML_RUN_ID")}
    env["STYLEMPI_COMPILE_CACHE"] = str(tmp_path / "empty-cache")  # forces the first compile
    # One thread: on cores busy with other work, two threads' barriers made the same frames
    # take 20 ms or 2 s by turns, which no rate (and no ETA) can foretell.
    env["OMP_NUM_THREADS"] = "1"
    env.update(env_over)
    return cmd, env


def test_log_lines_name_the_compile_first_and_no_eta_overshoots(tmp_path):
    cmd, env = _job(tmp_path, STYLEMPI_PROGRESS="0", STYLEMPI_PROGRESS_EVERY="0.2")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, text=True)
    timed: list[tuple[float, str]] = []  # each stderr line with the time it arrived
    for line in proc.stderr:
        timed.append((time.monotonic(), line.rstrip("\n")))
    status = proc.wait(timeout=900)
    ended = time.monotonic()
    text = "\n".join(line for _, line in timed)
    assert status == 0, text
    lines = [line for _, line in timed]
    compile_at = next(i for i, line in enumerate(lines) if COMPILE_LINE.match(line))
    progress = [i for i, line in enumerate(lines) if line.startswith("stylempi: progress:")]
    assert progress and compile_at < progress[0], text
    assert lines.index("stylempi: loading built-in style scream onto cpu") < compile_at, text
    assert lines[progress[0]].endswith("ETA estimating"), text  # the compile's frames give no rate
    join = next(i for i, line in enumerate(lines) if re.match(r"stylempi: joining \d+ chunks into ", line))
    assert progress[-1] < join, text
    etas = []
    for at, line in timed:
        found = ETA.match(line)
        if found and found.group(1) is not None:
            etas.append((int(found.group(1)), ended - at))
    assert etas, text
    # Printed to whole seconds: half a second of rounding is not an overshoot.
    assert all(eta - 0.5 <= 3 * left for eta, left in etas), (etas, text)


def _run_in_pty(cmd: list[str], env: dict[str, str], timeout: float = 900) -> tuple[int, str]:
    """Run CMD with a pseudo-terminal as stdin, stdout and stderr; return (status, output)."""
    master, slave = pty.openpty()
    # A terminal's size, as a real one has (a 0x0 pty gives tqdm no columns to draw in).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
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


def test_a_terminal_names_the_compile_before_the_bar(tmp_path):
    cmd, env = _job(tmp_path)
    status, text = _run_in_pty(cmd, env)
    assert status == 0, text
    text = text.replace("\r\n", "\n")  # the terminal's line ends
    compiling = COMPILE_LINE.search(text)
    bar = re.search(rf"stylize:.*?\| *\d+/{FRAMES} \[", text)
    assert compiling and bar and compiling.start() < bar.start(), text
    assert "\r" in text and "stylempi: progress:" not in text, text  # the live bar, not log lines
