"""A real job with an identity stylizer (run under ``mpirun``): the output should *look* like the input.

Every stage is the product's own (plan, decode with the job's colour, encode,
join); only the network is replaced, through ``run_job(..., stylizer_factory=...)``,
by a stand-in that returns its frames unchanged. What differs between input and
output is then only what the conversions and the encoder lose.

    mpirun -n 2 python tests/identity_job.py IN OUT MODEL [--crf 0] [--codec C]
"""
from __future__ import annotations

import argparse
import sys

import torch
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stylempi.job.comm import get_comm  # noqa: E402
from stylempi.job.run import run_job  # noqa: E402
from stylempi.media import EncoderRequest  # noqa: E402
from stylempi.options import RunOptions  # noqa: E402


class Identity:
    """Frames out as they came in (stylempi.network.stylize.Stylizer, written out here)."""

    device = torch.device("cpu")
    batch_size = 2
    precision = "identity"
    compiled = False
    compile_seconds = 0.0
    input_kind = "rgb"

    def __call__(self, frames):
        return [f.copy() for f in frames]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("model", help="any valid checkpoint (rank 0 still checks it)")
    ap.add_argument("--crf", type=int, default=None)
    ap.add_argument("--codec", default=None)
    ap.add_argument("--audio-codec", default=None)
    args = ap.parse_args()
    # The temporal filter is off: these jobs check that the frame path keeps every picture as it
    # was, and the filter blends each frame with the one before (its own tests: test_temporal_jobs).
    options = RunOptions(input=args.input, output=args.output, model=args.model, quiet=True, restart=True,
                         encoder=EncoderRequest(crf=args.crf), codec=args.codec,
                         audio_codec=args.audio_codec, temporal="off")
    run_job(options, stylizer_factory=lambda prepared, comm: Identity(), comm=get_comm())
    return 0


if __name__ == "__main__":
    sys.exit(main())
