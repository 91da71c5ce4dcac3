"""`stylempi run -n N`: the mpirun command line, its environment and its note (pure)."""
from __future__ import annotations

import pytest

from stylempi.cli.watch.jobs import check_run_args
from stylempi.errors import UsageError
from stylempi.job.launcher import (OVERSUBSCRIBE_VARS, ROOT_VARS, local_launch, running_launcher,
                                   without_ranks)


@pytest.mark.parametrize("argv, expected", [
    (["run", "-n", "2", "a", "b", "--model", "m"], ["run", "a", "b", "--model", "m"]),
    (["run", "a", "-n3", "b"], ["run", "a", "b"]),
    (["run", "--ranks", "4", "a"], ["run", "a"]),
    (["run", "--ranks=4", "a", "--", "-n", "2"], ["run", "a", "--", "-n", "2"]),  # after --: a file name
    (["run", "a", "--model", "-nice.pth"], ["run", "a", "--model", "-nice.pth"]),
])
def test_without_ranks(argv, expected):
    assert without_ranks(argv) == expected


def test_plain_user_within_the_cores_gets_plain_mpirun_and_no_note():
    launch = local_launch(2, ["in.mp4", "out.mp4", "--model", "wave"], "/venv/bin/mpirun", "/venv/bin/python",
                          cores=2, root=False, env={})
    assert launch.argv == ["/venv/bin/mpirun", "-n", "2", "/venv/bin/python", "-m", "stylempi", "run",
                           "in.mp4", "out.mp4", "--model", "wave"]
    assert launch.env == {} and launch.note == ""


def test_root_and_more_ranks_than_cores_are_said_in_one_note():
    launch = local_launch(3, ["a", "b"], "mpirun", "python", cores=2, root=True, env={})
    assert launch.env == {**ROOT_VARS, **OVERSUBSCRIBE_VARS}
    assert "\n" not in launch.note and "as root" in launch.note and "2 cores" in launch.note
    assert "oversubscribed" in launch.note


def test_variables_the_user_set_are_kept():
    launch = local_launch(3, [], "mpirun", "python", cores=2, root=True,
                          env={"OMPI_ALLOW_RUN_AS_ROOT": "1", "PRTE_MCA_rmaps_default_mapping_policy": ":slot"})
    assert "OMPI_ALLOW_RUN_AS_ROOT" not in launch.env
    assert "PRTE_MCA_rmaps_default_mapping_policy" not in launch.env


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "mpirun"),
    ({"PMIX_RANK": "0"}, "mpirun"),
    ({"PMI_RANK": "1"}, "mpirun"),
    ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "0"}, "srun"),
    ({"SLURM_STEP_NUM_TASKS": "4", "PMIX_RANK": "0"}, "srun"),  # srun --mpi=pmix
    ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0"}, None),  # an sbatch script itself: no step, -n may start ranks
])
def test_running_launcher(env, expected):
    assert running_launcher(env) == expected


def test_a_watched_job_takes_its_ranks_from_the_launcher():
    with pytest.raises(UsageError, match="--launcher"):
        check_run_args("scream", ["-n", "2"])
    check_run_args("scream", ["--crf", "20"])  # what a job does take still passes
