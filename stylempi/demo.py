"""The one-command demo (``make demo`` runs ``python -m stylempi.demo``).

1. Makes its own sample clip (320x180, 3.5 s, 25 fps H.264 with a real-sounding
   AAC track: a chord whose pitch glides, with a soft noise floor), or takes the
   video you pass.
2. Runs ``mpirun -n 2 stylempi run SAMPLE OUT --model STYLE`` with a built-in
   style (the first one unless ``--style`` says otherwise).
3. Writes a before/after contact sheet with ``stylempi preview``.
4. Prints where everything is (``demo-output/`` by default).

    python -m stylempi.demo [VIDEO] [--style NAME] [--ranks 2] [--out-dir demo-output]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE_SIZE = (320, 180)
SAMPLE_SECONDS = 3.5
SAMPLE_FPS = 25
AUDIO_RATE = 44100


# --------------------------------------------------------------------------
# The sample clip
# --------------------------------------------------------------------------

def _scene(t: float, width: int, height: int) -> np.ndarray:
    """A landscape-like picture at time ``t``: sky gradient, sun, hills, a moving boat, water."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    img = np.empty((height, width, 3), np.float32)
    sky = v < 0.55
    img[..., 0] = np.where(sky, 90 + 120 * v, 30 + 40 * np.sin(20 * u + 6 * t) * (v - 0.55))
    img[..., 1] = np.where(sky, 150 + 80 * v, 80 + 30 * np.sin(30 * u - 5 * t + 8 * v))
    img[..., 2] = np.where(sky, 235 - 40 * v, 140 + 40 * np.sin(25 * u + 4 * t))
    # Sun, slowly setting.
    sx, sy = 0.75, 0.18 + 0.05 * t / SAMPLE_SECONDS
    sun = (u - sx) ** 2 + ((v - sy) * height / width) ** 2 < 0.004
    img[sun] = (255, 225, 120)
    # Two layers of hills.
    for base, amp, freq, colour, phase in ((0.45, 0.06, 7.0, (70, 120, 60), 0.0),
                                           (0.52, 0.05, 11.0, (40, 95, 45), 1.3)):
        ridge = base + amp * np.sin(freq * u + phase) + 0.02 * np.sin(31 * u + phase)
        hill = (v > ridge) & (v < 0.55)
        img[hill] = colour
        img[hill] *= (0.8 + 0.4 * (v[hill] - base))[:, None]
    # A boat crossing the water.
    bx = 0.1 + 0.8 * t / SAMPLE_SECONDS
    hull = (np.abs(u - bx) < 0.06) & (v > 0.60) & (v < 0.66)
    sail = (u > bx - 0.01) & (u < bx + 0.04) & (v > 0.45) & (v < 0.60) & ((u - bx) * 3 < (0.60 - v) * 1.5)
    img[hull] = (120, 60, 30)
    img[sail] = (240, 240, 230)
    rng = np.random.default_rng(int(t * 1000))
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _audio(seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """Stereo float32 ``[2, N]``: a gliding three-note chord with vibrato, a fade in/out and some noise."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 220 * 2 ** (t / seconds)  # one octave upwards over the clip
    phase = 2 * np.pi * np.cumsum(f0) / rate
    vib = 0.004 * np.sin(2 * np.pi * 5.5 * t)
    tone = sum(a * np.sin(k * phase * (1 + vib)) for k, a in ((1, 0.5), (1.25, 0.3), (1.5, 0.25), (2, 0.1)))
    env = np.minimum(1, np.minimum(t / 0.2, (seconds - t) / 0.3)).clip(0, 1)
    rng = np.random.default_rng(7)
    left = 0.3 * tone * env + 0.01 * rng.standard_normal(t.size)
    right = 0.3 * np.roll(tone, 200) * env + 0.01 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def make_sample(path: str | Path, *, size: tuple[int, int] = SAMPLE_SIZE, seconds: float = SAMPLE_SECONDS,
                fps: int = SAMPLE_FPS) -> Path:
    """Write the sample clip (H.264 yuv420p + AAC stereo in MP4) and return its path."""
    import av

    path = Path(path)
    width, height = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "20"}
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "stereo"
        n = int(round(seconds * fps))
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(_scene(i / fps, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        samples = _audio(seconds)
        step = 1024
        for start in range(0, samples.shape[1], step):
            chunk = np.ascontiguousarray(samples[:, start:start + step])
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate = AUDIO_RATE
            af.pts = start
            af.time_base = Fraction(1, AUDIO_RATE)
            for packet in audio.encode(af):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return path


# --------------------------------------------------------------------------
# Running the real commands
# --------------------------------------------------------------------------

def find_tool(name: str) -> str | None:
    """``name`` beside this Python (the venv's bin) first, then on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name)


def mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    return env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd[:4])} ...` failed with exit status {result.returncode}")


def main(argv: list[str] | None = None) -> int:
    from .styles import BUILTIN, builtin_name, unknown_model_message

    p = argparse.ArgumentParser(prog="python -m stylempi.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", help="your own video (default: a generated 320x180 sample)")
    p.add_argument("--style", default=None, help=f"built-in style (default: the first of {sorted(BUILTIN)})")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    p.add_argument("--out-dir", default="demo-output", help="where the outputs go (default demo-output/)")
    args = p.parse_args(argv)

    if not BUILTIN:
        raise SystemExit("demo: no built-in styles are installed (stylempi/styles/*.pth)")
    style = builtin_name(args.style or sorted(BUILTIN)[0])
    if style is None:
        raise SystemExit(f"demo: {unknown_model_message(args.style)}")
    stylempi = find_tool("stylempi")
    mpirun = find_tool("mpirun")
    if stylempi is None:
        raise SystemExit("demo: the stylempi command is not installed (run `make setup` or `pip install -e .`)")
    if mpirun is None:
        raise SystemExit("demo: mpirun not found (pip install 'stylempi[mpi]' gives Open MPI, or install "
                         "your cluster's MPI)")
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if args.video:
        sample = Path(args.video).resolve()
        if not sample.is_file():
            raise SystemExit(f"demo: {sample}: no such file")
    else:
        sample = make_sample(out_dir / "sample.mp4")
        print(f"made the sample clip {sample} ({SAMPLE_SIZE[0]}x{SAMPLE_SIZE[1]}, {SAMPLE_SECONDS} s, "
              "H.264 + AAC)", flush=True)
    output = out_dir / f"{sample.stem}-{style}.mp4"
    sheet = out_dir / f"{sample.stem}-{style}-preview.png"
    env = mpi_env()
    _run([mpirun, "-n", str(args.ranks), stylempi, "run", str(sample), str(output), "--model", style,
          "--restart"], env)
    _run([stylempi, "preview", str(sample), "--model", style, "--frames", "4", "--out", str(sheet)], env)
    print(f"\ndemo finished in {time.monotonic() - t0:.0f} s:\n"
          f"  input:    {sample}\n  stylized: {output}  ({style}, {args.ranks} MPI ranks)\n"
          f"  preview:  {sheet}  (input on top, stylized below)\n"
          f"other styles: `stylempi models`; check the output: `stylempi verify {sample} {output}`",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
