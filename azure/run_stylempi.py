"""Entry point of the Azure ML style step.

Azure ML uploads the repository as the component's code and starts this file
once per MPI rank (``distribution: mpi``). It makes the uploaded package
importable, gives each rank one of its node's GPUs (by local rank), and runs
``stylempi run`` with the component's inputs.

``python azure/run_stylempi.py --inputs-from-stdin`` (what the component runs)
reads the inputs as ``KEY=VALUE`` lines from standard input, a quoted
here-document in the component's command: the values come from uploaders (the
video's path and the result's name carry the blob's name), and a shell never
parses them there. ``python azure/run_stylempi.py run ...`` passes its
arguments to ``stylempi`` as they are.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def local_rank() -> int:
    for name in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID",
                 "LOCAL_RANK"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 0


def bind_gpu(environ: dict = os.environ) -> None:
    """Keep one of the visible GPUs per rank (before torch initialises CUDA)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES", "")
    gpus = [g for g in visible.split(",") if g.strip()]
    if not gpus and not environ.get("SLURM_JOB_ID"):
        # Azure ML GPU nodes leave CUDA_VISIBLE_DEVICES unset: count the devices. Not
        # inside a Slurm job: there an unset variable means no GPU was requested, and
        # where Slurm does not constrain devices the node's GPUs are other jobs'.
        gpus = [str(i) for i in range(_count_nvidia_devices())]
    if len(gpus) > 1:
        environ["CUDA_VISIBLE_DEVICES"] = gpus[local_rank() % len(gpus)]


def _count_nvidia_devices() -> int:
    try:
        return sum(1 for p in Path("/dev").iterdir()
                   if p.name.startswith("nvidia") and p.name[6:].isdigit())
    except OSError:
        return 0


#: The component's inputs, as --inputs-from-stdin reads them: KEY -> stylempi option.
REQUIRED_INPUTS = ("video", "model", "styled", "output_name")
OPTIONS = {"model": "--model", "precision": "--precision", "device": "--device",
           "batch_size": "--batch-size", "codec": "--codec", "crf": "--crf",
           "work_dir": "--work-dir"}


class InputError(ValueError):
    """The component's inputs cannot make a stylempi command line."""


def run_args(lines: list[str]) -> list[str]:
    """``stylempi run`` arguments from the component's KEY=VALUE lines (pure)."""
    values: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            continue  # an optional input that was not given leaves an empty line
        key, sep, value = line.partition("=")
        if not sep or key not in (*REQUIRED_INPUTS, *OPTIONS):
            raise InputError(f"unexpected input line {line[:80]!r} (a line break in a value?)")
        if key in values:
            raise InputError(f"input {key} given twice (a line break in a value?)")
        values[key] = value
    missing = [k for k in REQUIRED_INPUTS if not values.get(k)]
    if missing:
        raise InputError("missing inputs: " + ", ".join(missing))
    name = values["output_name"]
    # The name is the uploaded blob's: it must stay one file inside the output folder.
    if "/" in name or name in (".", ".."):
        raise InputError(f"output_name {name[:80]!r} is not a plain file name")
    args = ["run", values["video"], os.path.join(values["styled"], name)]
    for key, option in OPTIONS.items():
        if values.get(key):
            args += [option, values[key]]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--inputs-from-stdin"]:
        try:
            argv = run_args(sys.stdin.read().split("\n"))
        except InputError as exc:
            print(f"run_stylempi: {exc}", file=sys.stderr)
            return 2
    if os.environ.get("STYLEMPI_GPU_BIND", "local-rank") == "local-rank":
        bind_gpu()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from stylempi.cli import main as cli_main
    result = cli_main(argv)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
