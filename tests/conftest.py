"""Shared test fixtures.

Tests launch the real thing: real ``mpirun`` processes, real codecs, real
Azurite and Slurm daemons. ``SHARED`` is the reference data beside the
checkout; tests that need it skip with a reason when it is absent.
"""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: ``../shared`` beside the checkout, or ``$STYLEMPI_SHARED`` (a GPU machine that gets
#: a copy of the checkout alone, say).
SHARED = Path(os.environ.get("STYLEMPI_SHARED") or ROOT.parent / "shared").resolve()
BIN = Path(sys.executable).parent

# Open MPI refuses to run as root, and more ranks than cores, unless told.
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
os.environ.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
# Open MPI 5 maps ranks with PRRTE, which ignores the OMPI_MCA variable above.
os.environ.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":OVERSUBSCRIBE")
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


#: The start of every skip reason for missing reference data (the summary groups on it).
SHARED_ABSENT = "reference data absent: set STYLEMPI_SHARED to the shared/ folder"


def skip_reason_counts(reasons: list[str]) -> list[tuple[int, str]]:
    """(count, reason) per distinct reason, most frequent first; every missing-data skip is one
    reason whatever file it missed."""
    from collections import Counter

    grouped = Counter(SHARED_ABSENT if r.startswith(SHARED_ABSENT) else r for r in reasons)
    return sorted(((n, r) for r, n in grouped.items()), key=lambda item: (-item[0], item[1]))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """End the run with how many tests skipped and why, so a clone without ../shared sees it."""
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            reasons.append(str(report.longrepr[2]).removeprefix("Skipped: "))
    if reasons:
        terminalreporter.write_sep("-", f"{len(reasons)} skipped, by reason")
        for count, reason in skip_reason_counts(reasons):
            terminalreporter.write_line(f"{count:4d}  {reason}")


#: The layer folders under tests/ (tests/README.md): each test is marked with its folder's name.
LAYERS = ("unit", "integration", "e2e")


def layer_of(path: Path) -> str:
    """The layer a test file is in; a file outside the layer folders counts as e2e, so that
    ``-m unit`` and ``-m "not e2e"`` never pick up an unsorted test that needs mpirun or a daemon."""
    here, path = Path(__file__).resolve().parent, path.resolve()
    parts = path.relative_to(here).parts if path.is_relative_to(here) else ()
    return parts[0] if len(parts) > 1 and parts[0] in LAYERS else "e2e"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped where none is present)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "unit: pure logic in this process, seconds in all (tests/unit/)")
    config.addinivalue_line("markers", "integration: real codecs, torch, one CLI process; no mpirun, "
                                       "no daemons (tests/integration/)")
    config.addinivalue_line("markers", "e2e: real mpirun, Slurm, Azurite, whole jobs (tests/e2e/)")


def pytest_sessionstart(session: pytest.Session) -> None:  # noqa: ARG001
    remove_stale_mpirun_dirs()


def remove_stale_mpirun_dirs() -> None:
    """Remove the PMIx session dirs (TMPDIR/ompi.PID) of mpiruns that are no longer running.

    A killed mpirun leaves its dir behind, and a later mpirun that is given the same PID
    (pids wrap at 32768) fails before any rank starts: "The PMIx server's listener thread
    failed to start" (a whole-suite run failed so, with dirs left by earlier days' runs).
    """
    import tempfile
    for path in Path(tempfile.gettempdir()).glob("ompi.*"):
        pid = path.name.split(".", 1)[1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        shutil.rmtree(path, ignore_errors=True)


# First, so that the layer marks exist when pytest's own hook deselects by -m.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(layer_of(item.path))
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """Run a test's in-process torch work on one thread (the 2 cores are shared with subprocesses)."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A width-8 TransformerNet with fixed random weights, saved as a plain state_dict."""
    import torch

    from stylempi.network.model import TransformerNet
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-model") / "tiny8.pth"
    torch.save(TransformerNet(8).state_dict(), path)
    return path


def need_shared(*parts: str) -> Path:
    """Path inside ../shared, or skip the test when the reference data is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{SHARED_ABSENT} ({path}; CI always has ../shared)")
    return path


def stylempi_cli() -> list[str]:
    """The installed ``stylempi`` script, else ``python -m stylempi`` on this checkout."""
    script = BIN / "stylempi"
    return [str(script)] if script.exists() else [sys.executable, "-m", "stylempi"]


#: The line a job prints as a slow stage starts (stylempi.progress, stylempi.job.staging): what it
#: was doing, not a second error; the one-line error contract is about the other lines.
STAGE_LINE = re.compile(r"^stylempi: (loading|compiling|downloading|uploading|joining) ")


def without_stages(lines: list[str]) -> list[str]:
    """LINES less the stage lines (:data:`STAGE_LINE`)."""
    return [line for line in lines if not STAGE_LINE.match(line)]


def stylempi_lines(stderr: str, prefix: str = "stylempi:") -> list[str]:
    """stylempi's own lines in STDERR, each from where it starts.

    A rank that aborts writes its line while Open MPI relays its abort banner on the same
    stream, and a stray byte of that banner can land in front of the line (a space here,
    once on CI another byte). The tests hold stylempi to its line, not to mpirun's bytes.
    """
    return [line[line.index(prefix):] for line in stderr.splitlines() if prefix in line]


def mpirun_path() -> str:
    """The venv's ``mpirun``, else the first on PATH."""
    launcher = BIN / "mpirun"
    return str(launcher) if launcher.exists() else (shutil.which("mpirun") or "mpirun")


def stylempi(*args: str | os.PathLike, ranks: int | None = None, timeout: float = 300,
             env: dict | None = None, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI, under ``mpirun -n RANKS`` when ranks is given.

    The timeout is a liveness deadline (a hang fails the test), not a speed check.
    """
    cmd = [*stylempi_cli(), *map(str, args)]
    if ranks is not None:
        cmd = [mpirun_path(), "-n", str(ranks), *cmd]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


def run_in_pty(cmd: list[str], env: dict[str, str], timeout: float,
               size: tuple[int, int] | None = None) -> tuple[int, str]:
    """Run CMD with a pseudo-terminal as stdin, stdout and stderr; return (status, output).

    SIZE (rows, columns) gives the terminal a size as a real one has; without it the pty is
    0x0, which some tests want (tqdm then has no columns to draw in)."""
    master, slave = pty.openpty()
    if size:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
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


def answer_json(handler, status: int, body: dict) -> None:
    """Send BODY as a JSON response from a BaseHTTPRequestHandler (the tests' fake services)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture(scope="module")
def work(tmp_path_factory, request) -> Path:
    """A folder for one test module's shared files (its clip, its model)."""
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))
