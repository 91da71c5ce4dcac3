"""A second storage backend, written against the protocol alone (tests/dirbucket.py: directory
"buckets" with expiring leases), runs a whole ``stylempi run`` job: INPUT, OUTPUT, ``--model``
and the work dir in it, a rank killed with SIGKILL mid-job, and a rerun that resumes from the
chunks the killed run left in the bucket. The ranks find the backend through an entry point,
as they would an installed plugin's.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import clips
import dirbucket
from conftest import ROOT, mpirun_path, stylempi, stylempi_cli
from test_resume import _rank_pids, _wait_for

pytestmark = pytest.mark.slow

SUMMARY = re.compile(r"stylempi: (\d+) frames .*?; (\d+) chunks, (\d+) reused")


@pytest.fixture
def bucket_env(tmp_path):
    root = tmp_path / "buckets"
    site = dirbucket.install_plugin(tmp_path / "site")
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(site)])
    return root, {"PYTHONPATH": path, dirbucket.ENV_ROOT: str(root), "OMP_NUM_THREADS": "1"}


def _run_args(url_in: str, url_out: str, model: str, work: str) -> list[str]:
    return ["run", url_in, url_out, "--model", model, "--work-dir", work, "--precision", "fp32",
            "--chunk-frames", "6", "--batch-size", "1"]


def _kill_rank_1_once(args: list[str], env: dict, ready) -> tuple[str, float]:
    """Start ``mpirun -n 2 stylempi ARGS``, SIGKILL rank 1 once READY() holds; the job's stderr,
    and the seconds it took to end after the kill (the job must fail)."""
    with subprocess.Popen([mpirun_path(), "-n", "2", *stylempi_cli(), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env=dict(os.environ, **env)) as job:
        try:
            assert _wait_for(ready, 240, job), "the job never pushed a chunk to the bucket"
            rank_0, rank_1 = _rank_pids(job.pid)  # two, or the test is wrong
            os.kill(rank_1, signal.SIGKILL)
            killed_at = time.monotonic()
            stderr = job.communicate(timeout=60)[1]
            assert job.returncode != 0, stderr
            return stderr, time.monotonic() - killed_at
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)


def test_a_job_in_a_test_backend_survives_a_kill_and_resumes(bucket_env, tiny_model):
    root, env = bucket_env
    bucket = root / "media"
    (bucket / "in").mkdir(parents=True)
    clip = clips.make_clip(bucket / "in" / "clip.mp4", frames=48, size=(160, 96), gop=6, audio_tracks=1)
    (bucket / "models").mkdir()
    (bucket / "models" / "tiny8.pth").write_bytes(tiny_model.read_bytes())
    args = _run_args("dirbucket://media/in/clip.mp4", "dirbucket://media/out/clip.mkv",
                     "dirbucket://media/models/tiny8.pth", "dirbucket://media/work")
    out, work = bucket / "out" / "clip.mkv", bucket / "work"

    def records() -> int:
        return len(list(work.rglob("chunk-*.json"))) if work.is_dir() else 0

    stderr, died_in = _kill_rank_1_once(args, env, ready=lambda: records() >= 2)
    assert died_in < 30, "the job did not end within 30 s of a rank's death"
    assert "signal 9" in stderr or "killed" in stderr.lower(), stderr
    assert not out.exists(), "a half-written OUTPUT appeared in the bucket"
    assert (work_left := records()) >= 2
    assert list(work.rglob("lock")), "the killed job's lock object should still be there"

    # The killed rank 0 held the lease on the work root; the rerun, on the same host, sees its
    # holder is dead and breaks the lease at once (stylempi.storage.worklease), as with Blob.
    rerun = stylempi(*args, ranks=2, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    frames, chunks, reused = map(int, SUMMARY.search(rerun.stdout).groups())
    assert frames == 48 and chunks == 8, rerun.stdout
    assert work_left <= reused < chunks, (work_left, rerun.stdout)  # every pushed chunk reused, not redone
    assert rerun.stdout.rstrip().endswith("-> dirbucket://media/out/clip.mkv"), rerun.stdout
    assert "downloading dirbucket://media/in/clip.mp4 from a directory bucket (once per node)" in rerun.stderr
    assert not list(work.rglob("chunk-*")) and not list(work.rglob("lock")), "work dir not cleaned after success"
    assert not list((root / ".leases").rglob("*.lease")), "a lease outlived the job"

    verified = stylempi("verify", clip, out, timeout=120)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]


def test_an_unregistered_scheme_is_still_a_local_path(tmp_path):
    """Without the plugin on the path, ``dirbucket://...`` is what it always was: a file name."""
    missing = stylempi("run", "dirbucket://media/in/clip.mp4", str(tmp_path / "o.mp4"), "--model",
                       str(tmp_path / "m.pth"), env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr
    assert "dirbucket:/" in missing.stderr, missing.stderr
