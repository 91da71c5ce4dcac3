"""slurm/stylempi.sbatch on a real one-node Slurm (Debian slurm-wlm + munge).

The cluster (tests/slurm_cluster.py) is started once per session in a temp
dir and stopped afterwards. Each test submits the project's own sbatch script
with ``sbatch --wait`` and checks the result with ``stylempi verify``; the
second one requeues the job mid-run and checks that the rerun reused chunks.
"""
from __future__ import annotations

import fractions
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, stylempi
from slurm_cluster import SlurmCluster, SlurmError, missing_binaries

SBATCH_SCRIPT = ROOT / "slurm" / "stylempi.sbatch"
#: Liveness deadlines (a hang fails the test), not speed checks.
JOB_DEADLINE_S = 420
SUMMARY = re.compile(r"stylempi: (\d+) frames .*?; (\d+) chunks, (\d+) reused")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm/munge not installed ({', '.join(missing)} missing): "
                    "apt-get install slurm-wlm munge (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("a private slurmd has to run as root to start jobs")
    # Short path: munge and slurmd sockets have a length limit.
    root = Path(tmp_path_factory.mktemp("slurm", numbered=True))
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except SlurmError as exc:
        pytest.fail(f"could not start the test Slurm cluster: {exc}")
    yield cluster
    cluster.stop()


def make_clip(path: Path, width: int, height: int, frames: int, fps: int = 24, gop: int = 4) -> Path:
    """An H.264 clip with a keyframe every ``gop`` frames and a real (sine) AAC track."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop),
                         "sc_threshold": "0"}
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.stack([(xx * 4 + i * 8) % 256, (yy * 4) % 256,
                            np.full_like(xx, (i * 16) % 256)], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        samples = int(16000 * frames / fps)
        t = np.arange(samples) / 16000
        sine = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, samples, 1024):
            block = av.AudioFrame.from_ndarray(sine[None, start:start + 1024], format="fltp",
                                               layout="mono")
            block.sample_rate, block.pts = 16000, start
            out.mux(audio.encode(block))
        out.mux(audio.encode())
    return path


def job_env(extra: dict | None = None) -> dict:
    """What the sbatch script needs: the venv to activate, MPI allowed as root."""
    env = {
        "STYLEMPI_VENV": sys.prefix if sys.prefix != sys.base_prefix else "",
        "STYLEMPI": str(BIN / "stylempi"),
        "STYLEMPI_LAUNCHER": "mpirun",  # the pip Open MPI's mpirun works in an allocation
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }
    env.update(extra or {})
    return env


def sbatch_args(log: Path, clip: Path, output: Path, model: Path, *run_args: str) -> list[str]:
    return ["sbatch", "--parsable", "--wait", "--job-name=stylempi-test",
            "--ntasks=2", "--cpus-per-task=1", f"--output={log}", f"--chdir={log.parent}",
            str(SBATCH_SCRIPT), str(clip), str(output), str(model),
            "--device", "cpu", "--precision", "fp32", *run_args]


def cancel(cluster: SlurmCluster, job_id: str) -> None:
    if job_id:
        cluster.run("scancel", job_id, check=False)


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# --- the script itself, without a cluster ----------------------------------------

FAKE_STYLEMPI = """#!/bin/bash
echo "fake rank=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-?}} gpu=${CUDA_VISIBLE_DEVICES:-none} \
threads=${OMP_NUM_THREADS:-unset} args=$*"
"""


def fake_stylempi(tmp_path: Path) -> Path:
    fake = tmp_path / "fake-stylempi"
    fake.write_text(FAKE_STYLEMPI)
    fake.chmod(0o755)
    return fake


def test_sbatch_script_requests_no_fixed_resources():
    text = SBATCH_SCRIPT.read_text()
    directives = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "--requeue" in directives and "--open-mode=append" in directives
    fixed = [d for d in directives if re.match(
        r"--(gpus|gres|gpus-per-node|gpus-per-task|nodes|ntasks|ntasks-per-node|partition|cpus-per-task)\b"
        r"|-[NnpG]\b", d)]
    assert not fixed, f"resources must come from the sbatch command line, not {fixed}"
    syntax = subprocess.run(["bash", "-n", str(SBATCH_SCRIPT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_sbatch_script_usage_error_without_arguments():
    proc = subprocess.run(["bash", str(SBATCH_SCRIPT), "only-input.mp4"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_sbatch_script_gives_each_rank_one_gpu(tmp_path: Path):
    """Outside Slurm too: mpirun ranks that see GPUs 4,6 keep one each, by local rank."""
    env = dict(os.environ, **job_env({"STYLEMPI": str(fake_stylempi(tmp_path)), "STYLEMPI_RANKS": "2",
                                      "CUDA_VISIBLE_DEVICES": "4,6", "SLURM_CPUS_PER_TASK": "3"}))
    proc = subprocess.run(["bash", str(SBATCH_SCRIPT), "in.mp4", "out.mp4", "m.pth", "--crf", "20"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = sorted(line for line in proc.stdout.splitlines() if line.startswith("fake "))
    assert ranks == [
        "fake rank=0 gpu=4 threads=3 args=run in.mp4 out.mp4 --model m.pth --crf 20",
        "fake rank=1 gpu=6 threads=3 args=run in.mp4 out.mp4 --model m.pth --crf 20",
    ], proc.stdout + proc.stderr


FAKE_NVIDIA_SMI = """#!/bin/bash
# Lists four GPUs, as nvidia-smi -L does on a node with four.
for i in 0 1 2 3; do echo "GPU $i: NVIDIA A100 (UUID: GPU-$i)"; done
"""


@pytest.mark.parametrize("slurm_job, expected", [("", ["gpu=0", "gpu=1"]),
                                                 ("4242", ["gpu=none", "gpu=none"])],
                         ids=["outside-slurm", "inside-a-slurm-job"])
def test_sbatch_script_lists_the_nodes_gpus_only_outside_slurm(tmp_path: Path, slurm_job: str,
                                                                expected: list[str]):
    """With CUDA_VISIBLE_DEVICES unset, the prelude falls back to nvidia-smi's list, but
    not inside a Slurm job: there no GPU was requested, and where Slurm does not
    constrain devices (ConstrainDevices=no) the node's GPUs belong to other jobs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(job_env({"STYLEMPI": str(fake_stylempi(tmp_path)), "STYLEMPI_RANKS": "2"}))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if slurm_job:
        env["SLURM_JOB_ID"] = slurm_job
    proc = subprocess.run(["bash", str(SBATCH_SCRIPT), "in.mp4", "out.mp4", "m.pth"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gpus = sorted(line.split()[2] for line in proc.stdout.splitlines() if line.startswith("fake "))
    assert gpus == expected, proc.stdout + proc.stderr


def test_sbatch_script_srun_launcher(slurm: SlurmCluster, tmp_path: Path):
    """STYLEMPI_LAUNCHER=srun starts one task per rank (--mpi=none: the pip Open MPI has
    no PMIx plugin match with this Slurm, so only the launch itself is checked)."""
    log = tmp_path / "srun.log"
    env = job_env({"STYLEMPI": str(fake_stylempi(tmp_path)), "STYLEMPI_LAUNCHER": "srun",
                   "STYLEMPI_SRUN_MPI": "none", "CUDA_VISIBLE_DEVICES": "4,6"})
    proc = slurm.run("sbatch", "--wait", "--ntasks=2", "--cpus-per-task=1", f"--output={log}",
                     f"--chdir={tmp_path}", SBATCH_SCRIPT, "in.mp4", "out.mp4", "m.pth",
                     env=env, timeout=JOB_DEADLINE_S, check=False)
    text = read(log)
    assert proc.returncode == 0, f"{proc.stderr}\n{text}"
    ranks = sorted(line for line in text.splitlines() if line.startswith("fake "))
    assert ranks == ["fake rank=0 gpu=4 threads=1 args=run in.mp4 out.mp4 --model m.pth",
                     "fake rank=1 gpu=6 threads=1 args=run in.mp4 out.mp4 --model m.pth"], text


#: Each rank reports the CPUs it may run on, counted as network.placement.threads_per_rank counts
#: them (os.sched_getaffinity), and the thread count it was given. Not nproc: GNU nproc
#: prints OMP_NUM_THREADS when that is set, and the script sets it, so it would say 2 for
#: a rank pinned to one CPU.
COUNT_CPUS = f"""#!{sys.executable}
import os
rank = os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("SLURM_PROCID") or "?"
print(f"cpus rank={{rank}} n={{len(os.sched_getaffinity(0))}} "
      f"threads={{os.environ.get('OMP_NUM_THREADS', 'unset')}}", flush=True)
"""


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_each_rank_gets_the_cpus_per_task(slurm: SlurmCluster, tmp_path: Path, launcher: str):
    """With task/affinity (as production clusters run), a rank is pinned to the CPUs its
    step was given: --cpus-per-task=2 must reach each of 2 ranks, also on Slurm 22.05 and
    23.02, whose srun does not inherit it from sbatch (and then pins each rank to one CPU).

    --overcommit makes this show on a 2-CPU machine: the job gets cpus-per-task CPUs per
    node instead of per task (sbatch(1), --overcommit), and srun, which reads
    SLURM_OVERCOMMIT, may then start both tasks on those CPUs. Each task is still bound to
    as many CPUs as its step's --cpus-per-task (both to the same two), so a script that
    does not pass it on gets 1 CPU per rank here too. Without --overcommit two such ranks
    would need 4 CPUs, and a job with only one rank shows nothing: a one-task step is
    bound to all the job's CPUs even when srun is not given --cpus-per-task.
    """
    if slurm.cpus < 2:
        pytest.skip("needs a machine with at least 2 CPUs")
    ranks, cpus_per_task = 2, 2
    counter = tmp_path / "count-cpus"
    counter.write_text(COUNT_CPUS)
    counter.chmod(0o755)
    log = tmp_path / f"{launcher}.log"
    env = job_env({"STYLEMPI": str(counter), "STYLEMPI_LAUNCHER": launcher,
                   "STYLEMPI_SRUN_MPI": "none"})
    proc = slurm.run("sbatch", "--wait", "--nodes=1", f"--ntasks={ranks}",
                     f"--cpus-per-task={cpus_per_task}", "--overcommit", f"--output={log}",
                     f"--chdir={tmp_path}", SBATCH_SCRIPT, "in.mp4", "out.mp4", "m.pth",
                     env=env, timeout=JOB_DEADLINE_S, check=False)
    text = read(log)
    assert proc.returncode == 0, f"{proc.stderr}\n{text}"
    seen = sorted(re.findall(r"^cpus rank=(\d+) n=(\d+) threads=(\S+)$", text, re.M))
    assert [(int(r), t) for r, _, t in seen] == [(r, str(cpus_per_task)) for r in range(ranks)], text
    cpus = [int(n) for _, n, _ in seen]
    if launcher == "srun":
        # Slurm pins each task to exactly the CPUs its step asked for per task.
        assert cpus == [cpus_per_task] * ranks, f"CPUs per rank: {cpus}\n{text}"
        assert f"--cpus-per-task={cpus_per_task}" in text, text  # the launch line it echoes
    else:
        # mpirun leaves ranks unpinned (--bind-to none): all the job's CPUs, never one.
        assert all(n >= cpus_per_task for n in cpus), f"CPUs per rank: {cpus}\n{text}"


# --- real jobs on the test cluster ---------------------------------------------------

def test_sbatch_script_runs_and_verifies(slurm: SlurmCluster, tiny_model: Path, tmp_path: Path):
    clip = make_clip(tmp_path / "in.mp4", 64, 48, 20)
    output = tmp_path / "out.mp4"
    log = tmp_path / "job.log"
    proc = subprocess.Popen(
        [*map(str, sbatch_args(log, clip, output, tiny_model, "--chunk-frames", "4"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm.env(job_env()))
    job_id = ""
    try:
        out, err = proc.communicate(timeout=JOB_DEADLINE_S)
        job_id = out.strip().splitlines()[0] if out.strip() else ""
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        cancel(slurm, out.strip())
        pytest.fail(f"sbatch --wait did not return in {JOB_DEADLINE_S} s\n{read(log)}\n{slurm.log_tail()}")
    text = read(log)
    assert proc.returncode == 0, f"job failed (sbatch: {err})\n{text}\n{slurm.log_tail()}"
    assert slurm.job_state(job_id) == "COMPLETED", text
    summary = SUMMARY.search(text)
    assert summary, f"no run summary in the job log:\n{text}"
    assert int(summary.group(1)) == 20
    assert "on 2 ranks" in text, text  # both Slurm tasks became MPI ranks

    verified = stylempi("verify", clip, output, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def rank_pids(output: Path) -> list[int]:
    """PIDs of this machine's ``stylempi run ... OUTPUT`` processes (the job's ranks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (any(a.endswith(b"stylempi") for a in argv) and b"run" in argv
                and str(output).encode() in argv):
            pids.append(int(entry.name))
    return pids


def freeze(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass


def test_requeued_job_resumes_from_finished_chunks(slurm: SlurmCluster, tiny_model: Path,
                                                   tmp_path: Path):
    # 48 frames in chunks of 4 (a keyframe every 4 frames) = 12 chunks on 2 ranks.
    clip = make_clip(tmp_path / "in.mp4", 96, 72, 48)
    output = tmp_path / "out.mp4"
    log = tmp_path / "job.log"
    work = tmp_path / f".{output.name}.stylempi"
    proc = subprocess.Popen(
        sbatch_args(log, clip, output, tiny_model, "--chunk-frames", "4", "--batch-size", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm.env(job_env()))
    job_id = ""
    try:
        job_id = proc.stdout.readline().strip()  # --parsable prints the id at submission
        assert job_id, f"sbatch printed no job id: {proc.stderr.read() if proc.poll() is not None else ''}"

        # As soon as the first chunk is finished (its record is written last), pause the
        # ranks so that the requeue surely lands mid-run however fast this machine is,
        # then requeue: Slurm kills the paused job (SIGKILL after KillWait) and reruns it.
        deadline = time.monotonic() + JOB_DEADLINE_S
        while not list(work.glob("*/chunk-*.json")):
            assert proc.poll() is None, f"job ended before any chunk was seen:\n{read(log)}"
            assert time.monotonic() < deadline, f"no chunk finished in time:\n{read(log)}"
            time.sleep(0.05)
        freeze(rank_pids(output))
        finished_before = len(list(work.glob("*/chunk-*.json")))
        slurm.run("scontrol", "requeue", job_id)

        out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 60))
    except subprocess.TimeoutExpired:
        proc.kill()
        cancel(slurm, job_id)
        pytest.fail(f"requeued job did not finish in time\n{read(log)}\n{slurm.log_tail()}")
    except BaseException:
        proc.kill()
        cancel(slurm, job_id)
        raise

    text = read(log)
    assert proc.returncode == 0, f"job failed (sbatch: {err})\n{text}\n{slurm.log_tail()}"
    assert slurm.job_state(job_id) == "COMPLETED", text
    assert slurm.job_field(job_id, "Restarts") == "1", text
    # --open-mode=append keeps both attempts in the log; the first was cut short.
    first, _, second = text.partition("attempt 2, started")
    assert second, f"the job did not run a second time:\n{text}"
    assert not SUMMARY.search(first), f"the first attempt finished before the requeue:\n{text}"
    summaries = SUMMARY.findall(second)
    assert summaries, f"no run summary after the requeue:\n{text}"
    frames, chunks, reused = map(int, summaries[-1])
    assert frames == 48 and chunks == 12, text
    # Every chunk finished before the requeue is reused (the word "reused" is the
    # run summary's), and the rerun did the rest.
    assert 1 <= finished_before <= reused < chunks, (
        f"{finished_before} chunks were finished before the requeue, the rerun reused "
        f"{reused} of {chunks}:\n{text}")

    verified = stylempi("verify", clip, output, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
