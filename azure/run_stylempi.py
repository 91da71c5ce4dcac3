"""Entry point of the Azure ML style step: ``python azure/run_stylempi.py run ...``.

Azure ML uploads the repository as the component's code and starts this file
once per MPI rank (``distribution: mpi``). It makes the uploaded package
importable, gives each rank one of its node's GPUs (by local rank), and runs
the ``stylempi`` command line with the arguments it was given.
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
    if not gpus:
        # Azure ML GPU nodes leave CUDA_VISIBLE_DEVICES unset: count the devices.
        gpus = [str(i) for i in range(_count_nvidia_devices())]
    if len(gpus) > 1:
        environ["CUDA_VISIBLE_DEVICES"] = gpus[local_rank() % len(gpus)]


def _count_nvidia_devices() -> int:
    try:
        return sum(1 for p in Path("/dev").iterdir()
                   if p.name.startswith("nvidia") and p.name[6:].isdigit())
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("STYLEMPI_GPU_BIND", "local-rank") == "local-rank":
        bind_gpu()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from stylempi.cli import main as cli_main
    result = cli_main(list(sys.argv[1:] if argv is None else argv))
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
