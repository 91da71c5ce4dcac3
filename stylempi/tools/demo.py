"""The one-command demo (``make demo`` runs ``python -m stylempi.tools.demo``).

1. Makes its own sample clip (320x180, 3.5 s, 25 fps H.264 with a real-sounding
   AAC track: a chord whose pitch glides, with a soft noise floor), or takes the
   video you pass.
2. Runs ``mpirun -n 2 stylempi run SAMPLE OUT --model STYLE`` with a built-in
   style (the first one unless ``--style`` says otherwise).
3. Writes a before/after contact sheet with ``stylempi preview``.
4. Prints where everything is (``demo-output/`` by default) and the next commands to
   try, each written so that it works pasted as is into a shell in this directory
   (the venv's own paths when the venv is not on PATH; Open MPI's root and
   oversubscribe flags on the command line, not in an environment the user lacks).

    python -m stylempi.tools.demo [VIDEO] [--style NAME] [--ranks 2] [--out-dir demo-output]
"""
from __future__ import annotations

import argparse
import os
import shlex
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


def is_open_mpi(mpirun: str) -> bool:
    """Whether ``mpirun`` is Open MPI's (only it knows --allow-run-as-root and --oversubscribe)."""
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in out


def mpirun_command(mpirun: str, ranks: int, open_mpi: bool) -> list[str]:
    """``mpirun -n RANKS`` with the flags Open MPI wants here, on the command line rather than
    in the environment, so that the command the demo prints works when pasted into a shell."""
    flags: list[str] = []
    if open_mpi and hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    if open_mpi and ranks > (os.cpu_count() or 1):
        flags.append("--oversubscribe")
    return [mpirun, *flags, "-n", str(ranks)]


def shown(path: str | Path, *, tool: bool = False) -> str:
    """``path`` as a user types it in this directory: a tool found on PATH by its bare name,
    anything below the current directory relative to it, anything else absolute."""
    path = Path(path)
    if tool and shutil.which(path.name) and Path(shutil.which(path.name)).resolve() == path.resolve():
        return path.name
    try:
        text = str(path.resolve().relative_to(Path.cwd().resolve()))
        if tool and os.sep not in text:
            text = f".{os.sep}{text}"
    except ValueError:
        text = str(path)
    return shlex.quote(text)


def as_typed(cmd: list[str]) -> str:
    """A command line to paste into a shell: tools and files shown as :func:`shown` does."""
    return " ".join(shown(arg, tool=i == 0 or arg.endswith(f"{os.sep}stylempi")) if os.sep in arg
                    else shlex.quote(arg) for i, arg in enumerate(cmd))


def _run(cmd: list[str]) -> None:
    print("$ " + as_typed(cmd), flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd[:4])} ...` failed with exit status {result.returncode}")


def next_commands(mpirun: list[str], stylempi: str, sample: Path, output: Path, other_style: str | None,
                  out_dir: Path) -> list[list[str]]:
    """What to try after the demo, each a command that works as printed in this directory."""
    cmds = [[stylempi, "verify", str(sample), str(output)], [stylempi, "models"]]
    if other_style is not None:
        cmds.append([*mpirun, stylempi, "run", str(sample), str(out_dir / f"{sample.stem}-{other_style}.mp4"),
                     "--model", other_style])
    return cmds


def main(argv: list[str] | None = None) -> int:
    from ..network.styles import BUILTIN, builtin_name, unknown_model_message

    p = argparse.ArgumentParser(prog="python -m stylempi.tools.demo", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", help="your own video (default: a generated 320x180 sample)")
    p.add_argument("--style", default=None, help=f"built-in style (default: the first of {sorted(BUILTIN)})")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    p.add_argument("--out-dir", default="demo-output", help="where the outputs go (default demo-output/)")
    args = p.parse_args(argv)

    if not BUILTIN:
        raise SystemExit("demo: no built-in styles are installed (stylempi/network/styles/*.pth)")
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
    launcher = mpirun_command(mpirun, args.ranks, is_open_mpi(mpirun))
    _run([*launcher, stylempi, "run", str(sample), str(output), "--model", style, "--restart"])
    _run([stylempi, "preview", str(sample), "--model", style, "--frames", "4", "--out", str(sheet)])
    others = [name for name in sorted(BUILTIN) if name != style]
    bin_dir = Path(stylempi).parent
    print(f"\ndemo finished in {time.monotonic() - t0:.0f} s:\n"
          f"  input:    {shown(sample)}\n  stylized: {shown(output)}  ({style}, {args.ranks} MPI ranks)\n"
          f"  preview:  {shown(sheet)}  (input on top, stylized below)\n"
          "next, in this directory (each command works as printed):", flush=True)
    for cmd in next_commands(launcher, stylempi, sample, output, others[0] if others else None, out_dir):
        print(f"  $ {as_typed(cmd)}", flush=True)
    if shown(stylempi, tool=True) != "stylempi" and (bin_dir / "activate").is_file():
        print(f"or put stylempi and mpirun on PATH for this shell first: . {shown(bin_dir / 'activate')}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
