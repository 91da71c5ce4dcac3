"""Shared helpers of the benchmarks: test media, random networks, launching ranks.

Nothing here is timed. Every benchmark runs real processes (``mpirun``, the
``stylempi`` CLI, Debian's ``ffmpeg``) with argv lists, never shell strings.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: The reference data: ``../shared`` beside the checkout, or ``$STYLEMPI_SHARED`` (a GPU
#: machine that gets a copy of the checkout alone, say).
SHARED = Path(os.environ.get("STYLEMPI_SHARED") or ROOT.parent / "shared").resolve()
MEDIA = SHARED / "media"
PRETRAINED = SHARED / "models" / "pretrained"
FLOWER = MEDIA / "flower.mp4"
NASA = MEDIA / "nasa_13013.mp4"
BIN = Path(sys.executable).parent

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import stylempi  # noqa: E402

stylempi.prefer_huge_pages()  # what the stylempi command runs with, for the networks timed here


# ---------------------------------------------------------------------------
# Environment for mpirun
# ---------------------------------------------------------------------------

def mpi_env(extra: dict | None = None) -> dict:
    """os.environ plus what Open MPI 5 needs here: root allowed, oversubscription allowed."""
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    env.pop("STYLEMPI_PROGRESS", None)
    env.update(extra or {})
    return env


def mpirun(ranks: int, argv: Sequence[str | os.PathLike]) -> list[str]:
    """``mpirun -n RANKS --oversubscribe argv...`` as an argv list (the venv's mpirun, else PATH's)."""
    launcher = BIN / "mpirun"
    if not launcher.exists():
        launcher = shutil.which("mpirun") or "mpirun"
    return [str(launcher), "-n", str(ranks), "--oversubscribe", *map(str, argv)]


def stylempi_cli() -> list[str]:
    """The ``stylempi`` command: the installed script, else ``python -m stylempi`` on this checkout."""
    script = BIN / "stylempi"
    return [str(script)] if script.exists() else [sys.executable, "-m", "stylempi"]


def run_timed(argv: Sequence[str | os.PathLike], *, env: dict | None = None, timeout: float = 1800,
              cwd: str | os.PathLike | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command to completion; its wall time and result. Failure raises with its stderr."""
    argv = [str(a) for a in argv]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(argv)}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc


def last_json(text: str) -> dict:
    """The last line of ``text`` that parses as a JSON object (what a job script printed)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise ValueError(f"no JSON result in output:\n{text[-2000:]}")


# ---------------------------------------------------------------------------
# The machine and its load
# ---------------------------------------------------------------------------

def machine() -> str:
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    try:
        import torch
        bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        tv = torch.__version__
    except Exception:  # noqa: BLE001
        bf16, tv = None, "?"
    return f"{cores} cores {model}, native bf16 {bf16}, torch {tv}, PyAV {av.__version__}"


def load_note() -> str:
    """The 1-minute load average and any other developer's training processes (timings under load are unreliable)."""
    load = os.getloadavg()[0]
    training = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"stylempi.training.train" in cmd and b"-m" in cmd:
            training += 1
    return f"load average {load:.2f} at start, {training} training process(es) running"


# ---------------------------------------------------------------------------
# Media
# ---------------------------------------------------------------------------

def _source_frames(width: int, height: int) -> list[np.ndarray]:
    """flower.mp4's frames scaled to width x height (RGB), or synthetic ones when it is absent."""
    frames: list[np.ndarray] = []
    if FLOWER.exists():
        with av.open(str(FLOWER)) as src:
            stream = src.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in src.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height,
                                               interpolation="BILINEAR"))
        return frames
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    for t in range(60):
        img = np.stack([128 + 100 * np.sin(x / 37 + t / 7), 128 + 100 * np.sin(y / 23 - t / 11),
                        128 + 100 * np.sin((x + y) / 51 + t / 5)], axis=-1)
        img += rng.normal(0, 6, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def make_clip(path: str | os.PathLike, *, width: int = 640, height: int = 360, frames: int = 300,
              fps: int = 30, preset: str = "veryfast", gop: int = 60) -> Path:
    """An H.264 + AAC clip of real footage: flower.mp4 scaled and looped back and forth,
    with the real sound of nasa_13013.mp4 (looped as needed; a synthesized chirp if absent)."""
    path = Path(path)
    source = _source_frames(width, height)
    cycle = source + source[-2:0:-1] if len(source) > 2 else source  # forth and back: no jump cut
    seconds = frames / fps
    out = av.open(str(path), "w")
    try:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = gop
        video.options = {"preset": preset, "crf": "20", "threads": "2"}
        audio_packets = []
        if NASA.exists():
            with av.open(str(NASA)) as src:
                astream = src.streams.audio[0]
                ostream = out.add_stream_from_template(astream)
                tb = Fraction(astream.time_base)
                ticks = int(Fraction(seconds).limit_denominator(1000) / tb)
                src_packets = [(bytes(p), p.pts - (astream.start_time or 0), p.duration)
                               for p in src.demux(astream) if p.size and p.pts is not None]
            span = src_packets[-1][1] + (src_packets[-1][2] or 1024)
            loop = 0
            while loop * span <= ticks:  # loop the sound for clips longer than it
                for data, pts, duration in src_packets:
                    if pts + loop * span > ticks:
                        break
                    if loop and pts < 0:  # the priming packet plays once
                        continue
                    packet = av.Packet(data)
                    packet.pts = packet.dts = pts + loop * span
                    packet.duration = duration
                    packet.time_base = tb
                    packet.stream = ostream
                    audio_packets.append(packet)
                loop += 1
        else:
            ostream = out.add_stream("aac", rate=44100)
            ostream.layout = "stereo"
            n = int(44100 * seconds)
            t = np.arange(n) / 44100
            sig = 0.3 * np.sin(2 * np.pi * (220 + 200 * t) * t) + 0.02 * np.random.default_rng(1).standard_normal(n)
            frame = av.AudioFrame.from_ndarray(np.stack([sig, sig]).astype(np.float32), format="fltp",
                                               layout="stereo")
            frame.sample_rate = 44100
            frame.pts = 0
            frame.time_base = Fraction(1, 44100)
            audio_packets = list(ostream.encode(frame)) + list(ostream.encode(None))
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(cycle[i % len(cycle)], format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for packet in audio_packets:
            out.mux(packet)
    finally:
        out.close()
    return path


def cached_clip(cache: Path, **kw) -> Path:
    """:func:`make_clip` once per set of parameters, kept in ``cache``."""
    name = "clip-{width}x{height}-{frames}f-{fps}fps.mp4".format(
        width=kw.get("width", 640), height=kw.get("height", 360), frames=kw.get("frames", 300),
        fps=kw.get("fps", 30))
    path = cache / name
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("tmp-" + name)
        make_clip(tmp, **kw)
        os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

class StandInStylizer:
    """What a stand-in network passed to ``run_job(..., stylizer_factory=...)`` has besides its
    ``__call__`` (the rest of stylempi.network.stylize.Stylizer): it runs on the CPU, is never
    compiled and takes RGB frames. Subclasses name themselves in ``precision`` (the summary
    line's engine)."""

    precision = "stand-in"
    compiled = False
    compile_seconds = 0.0
    input_kind = "rgb"

    @property
    def device(self):
        import torch  # here, as in random_model: the scripts that only plan or plot never load torch
        return torch.device("cpu")


def random_model(path: str | os.PathLike, width: int = 32, seed: int = 0) -> Path:
    """A randomly initialised TransformerNet checkpoint (timing does not depend on the weights)."""
    import torch
    from stylempi.network.model import TransformerNet
    torch.manual_seed(seed)
    net = TransformerNet(width)
    path = Path(path)
    torch.save(net.state_dict(), path)
    return path


def pretrained(width: int, style: str = "mosaic") -> Path | None:
    path = PRETRAINED / f"{style}_nc{width}.pth"
    return path if path.exists() else None


#: Why the baseline cannot run without an ``ffmpeg`` command, and the ways out.
NO_FFMPEG = ("benchmarks: the baseline (the reference method) runs the ffmpeg command, and there is none: "
             "apt-get install ffmpeg (.ci/run installs it), or pip install imageio-ffmpeg (a wheel that "
             "ships a static ffmpeg: carry it to a machine that cannot install packages)")


def find_ffmpeg() -> str | None:
    """The ``ffmpeg`` command: PATH's (Debian's, where the benchmarks were measured), else the
    static build the ``imageio-ffmpeg`` wheel ships, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - not installed, or its binary is missing
        return None


def ffmpeg_binary() -> str:
    found = find_ffmpeg()
    if not found:
        raise SystemExit(NO_FFMPEG)
    return found
