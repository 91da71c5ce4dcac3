"""One rank of the reference architecture's style-transfer step (run under ``mpirun``).

It reproduces the reference scripts' method on purpose, defects included:

* the sorted list of frame files is split statically, ``n = len(frames) // size``
  frames per rank, so the last ``len(frames) % size`` frames are never stylized;
* one frame at a time, fp32, no batching: PIL loads the JPEG, ``ToTensor`` then
  ``* 255``, the network runs under ``torch.no_grad()``, the result is clamped,
  cast to uint8 and saved by PIL as JPEG (PIL's default quality).

``--device cuda`` runs the same method on the GPU (benchmarks/gpu.py compares
stylempi with it there): the model and each frame's tensor are moved to the GPU
(``.to(device)``), the result back (``.cpu()``) before it is saved, still one
frame at a time in fp32; every rank uses the same (visible) GPU. torch's own
CUDA settings stay as they are (the reference sets none): whether cuDNN may use
TF32 for the fp32 convolutions is torch's default, and each rank reports it.

    mpirun -n 2 python benchmarks/baseline_rank.py MODEL.pth FRAMES_DIR OUT_DIR [--device cuda]

Prints one JSON line (rank 0): each rank's frame count and seconds, the input's
frame count and the dropped frames.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stylempi.network.model import TransformerNet, clean_state_dict, infer_width  # noqa: E402


def load_image(path: Path) -> torch.Tensor:
    """transforms.ToTensor() then .mul(255), as the reference does (torchvision is not needed)."""
    img = Image.open(path).convert("RGB")
    tensor = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)
    return tensor.mul(255)


def save_image(path: Path, data: torch.Tensor) -> None:
    img = data.clone().clamp(0, 255).numpy()
    img = img.transpose(1, 2, 0).astype("uint8")
    Image.fromarray(img).save(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("frames_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    model_path, frames_dir, out_dir, device = args.model, args.frames_dir, args.out_dir, torch.device(args.device)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()
    with torch.no_grad():
        state = clean_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
        model = TransformerNet(infer_width(state))
        model.load_state_dict(state)
        model.to(device)
        model.eval()
        filenames = sorted(os.listdir(frames_dir))
        n = len(filenames) // size  # the reference's static split: drops len % size frames
        mine = filenames[rank * n:(rank + 1) * n]
        for name in mine:
            content = load_image(frames_dir / name).unsqueeze(0).to(device)
            output = model(content).cpu()  # as the reference's stylize(): a no-op on the CPU
            save_image(out_dir / name, output[0])
    elapsed = time.perf_counter() - started
    tf32 = torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None
    results = comm.gather({"rank": rank, "frames": len(mine), "seconds": elapsed, "device": str(device),
                           "cudnn_tf32": tf32}, root=0)
    if rank == 0:
        dropped = len(filenames) - n * size
        print(json.dumps({"ranks": results, "input_frames": len(filenames), "dropped": dropped}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
