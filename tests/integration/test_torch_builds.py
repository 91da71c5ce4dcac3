"""A GPU deployment must run on the GPU or say why not, never fall back unnoticed.

``--device cuda`` fails with one line when PyTorch sees no GPU (as here: a CPU
build, or no driver) and when the installed torch build has no kernels for the
GPU it sees (a CUDA 13 build on a V100, say); :func:`cuda_arch_supported`
decides the latter from the build's architecture list.
"""
from __future__ import annotations

import pytest
import torch

import clips
from conftest import stylempi
from stylempi.errors import UsageError
from stylempi.network.placement import cuda_arch_supported, resolve_device, slurm_gave_no_gpu

#: torch.cuda.get_arch_list() of builds of the kind docs/deploy.md's table names.
CUDA_13_LIKE = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CUDA_12_LIKE = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize("gpu, capability, arch_list, supported", [
    ("V100", (7, 0), CUDA_13_LIKE, False),
    ("V100", (7, 0), CUDA_12_LIKE, True),
    ("T4", (7, 5), CUDA_13_LIKE, True),
    ("A10", (8, 6), CUDA_12_LIKE, True),
    ("A100", (8, 0), CUDA_13_LIKE, True),
    ("H100", (9, 0), CUDA_12_LIKE, True),
    ("L4 on an sm_80-only build", (8, 9), ["sm_80"], True),     # same major: the cubin runs
    ("H100 on an sm_80-only build", (9, 0), ["sm_80"], False),  # no PTX to compile
    ("H100 on an sm_80 + PTX build", (9, 0), ["sm_80", "compute_80"], True),
    ("B200 family variant", (10, 0), ["sm_100f"], True),
    ("unknown list", (7, 0), [], True),
])
def test_cuda_arch_supported(gpu, capability, arch_list, supported):
    assert cuda_arch_supported(capability, arch_list) is supported, gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machines without a usable GPU")
def test_device_cuda_without_a_gpu_is_one_line_error(tmp_path):
    clip = clips.basic_clip(tmp_path / "in.mp4", frames=3)
    model = clips.save_test_model(tmp_path / "m.pth")
    proc = stylempi("run", clip, tmp_path / "out.mp4", "--model", model, "--device", "cuda",
                    timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("stylempi: error:") and "CUDA" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_a_slurm_job_given_no_gpu_runs_on_the_cpu_or_says_so():
    """Inside a Slurm job with no GPU requested, Slurm leaves CUDA_VISIBLE_DEVICES unset; where
    it does not constrain devices, torch would still see the node's GPUs, other jobs' GPUs."""
    in_job = {"SLURM_JOB_ID": "4242"}
    assert slurm_gave_no_gpu(in_job)
    assert not slurm_gave_no_gpu({"SLURM_JOB_ID": "4242", "CUDA_VISIBLE_DEVICES": "0"})
    assert not slurm_gave_no_gpu({})
    assert resolve_device("auto", 0, in_job).type == "cpu"
    with pytest.raises(UsageError, match="Slurm job that was given no GPU"):
        resolve_device("cuda", 0, in_job)
    if torch.cuda.is_available():  # on a GPU machine the GPUs would have been taken
        assert resolve_device("auto", 0, {}).type == "cuda"
        assert resolve_device("auto", 0, {"SLURM_JOB_ID": "1", "CUDA_VISIBLE_DEVICES": "0"}).type == "cuda"
