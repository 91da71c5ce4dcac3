"""The reference architecture's method, end to end, with Debian's ``ffmpeg`` binary.

1. ``ffmpeg -i VIDEO FRAMES/%05d_video.jpg`` writes every frame as a JPEG, and
   ``ffmpeg -i VIDEO audio.aac`` pulls (re-encodes) the audio;
2. ``mpirun -n N python benchmarks/baseline_rank.py``: the sorted frame list is
   split statically (``len // N`` each: the last ``len % N`` frames are dropped,
   as the reference does), each rank stylizes one frame at a time in fp32 through
   PIL and writes JPEGs (one thread per rank, ``OMP_NUM_THREADS=1``, as in our trial
   of the reference scripts);
3. ``ffmpeg -framerate 30 -i STYLED/%05d_video.jpg -c:v libx264 ...`` re-encodes at a
   fixed rate, then ``ffmpeg -i video.mp4 -i audio.aac -map 0:0 -map 1:0 -c copy``
   remuxes the audio.

``--device cuda`` runs step 2 on the GPU (still fp32, one frame at a time). Without
an ``ffmpeg`` command (PATH's, else the ``imageio-ffmpeg`` wheel's static build) it
stops at once with a message saying how to get one (``common.ffmpeg_binary``), unless
the caller allows PyAV (benchmarks/gpu.py does: a lent GPU machine may have no ffmpeg, and
that wheel, 68 MB, is larger than what may travel there): steps 1 and 3 then run the
same operations through PyAV's own FFmpeg libraries, and the result says so.

    python benchmarks/baseline.py CLIP MODEL [--ranks 2] [--device cpu|cuda] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent


def run_baseline(clip: Path, model: Path, work: Path, ranks: int = 2, fps: int = 30, device: str = "cpu",
                 allow_pyav: bool = False) -> dict:
    """The reference method on ``clip``, timed. Without an ``ffmpeg`` command it stops (see
    :func:`common.ffmpeg_binary`), unless ``allow_pyav``: then its ffmpeg steps run through PyAV's
    FFmpeg libraries instead (:func:`split_pyav`, :func:`join_pyav`; ``"tool"`` says which ran)."""
    ffmpeg = common.find_ffmpeg() if allow_pyav else common.ffmpeg_binary()
    frames_dir, styled_dir = work / "frames", work / "styled"
    for d in (frames_dir, styled_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    audio, silent, output = work / "audio.aac", work / "video_without_audio.mp4", work / "baseline.mp4"
    started = time.perf_counter()
    (split_ffmpeg if ffmpeg else split_pyav)(clip, frames_dir, audio, ffmpeg)
    split_s = time.perf_counter() - started
    t = time.perf_counter()
    # torch's own defaults, as the reference scripts run: importing stylempi (for the model
    # class) would otherwise turn on its huge pages for the baseline too (161 vs ~190 s).
    env = common.mpi_env({"OMP_NUM_THREADS": "1", "THP_MEM_ALLOC_ENABLE": "0"})
    _, proc = common.run_timed(common.mpirun(ranks, [sys.executable, HERE / "baseline_rank.py", model,
                                                     frames_dir, styled_dir, "--device", device]), env=env)
    stylize_s = time.perf_counter() - t
    report = common.last_json(proc.stdout)
    t = time.perf_counter()
    (join_ffmpeg if ffmpeg else join_pyav)(styled_dir, audio, silent, output, fps, ffmpeg)
    join_s = time.perf_counter() - t
    wall = time.perf_counter() - started
    return {"wall_s": wall, "split_s": split_s, "stylize_s": stylize_s, "join_s": join_s,
            "input_frames": report["input_frames"], "stylized_frames": sum(r["frames"] for r in report["ranks"]),
            "dropped_frames": report["dropped"], "ranks": ranks, "output": str(output), "device": device,
            "cudnn_tf32": report["ranks"][0].get("cudnn_tf32"),
            "tool": "ffmpeg command" if ffmpeg else "PyAV (no ffmpeg command)",
            # Throughput counts the input's frames: the job's task was to stylize all of them.
            "fps": report["input_frames"] / wall}


QUIET = ["-hide_banner", "-loglevel", "error", "-y"]


def split_ffmpeg(clip: Path, frames_dir: Path, audio: Path, ffmpeg: str) -> None:
    common.run_timed([ffmpeg, *QUIET, "-i", clip, frames_dir / "%05d_video.jpg"])
    common.run_timed([ffmpeg, *QUIET, "-i", clip, "-vn", audio])


def join_ffmpeg(styled_dir: Path, audio: Path, silent: Path, output: Path, fps: int, ffmpeg: str) -> None:
    common.run_timed([ffmpeg, *QUIET, "-framerate", str(fps), "-i", styled_dir / "%05d_video.jpg",
                      "-c:v", "libx264", "-profile:v", "high", "-crf", "20", "-pix_fmt", "yuv420p", silent])
    common.run_timed([ffmpeg, *QUIET, "-i", silent, "-i", audio, "-map", "0:0", "-map", "1:0",
                      "-vcodec", "copy", "-acodec", "copy", output])


def split_pyav(clip: Path, frames_dir: Path, audio: Path, _ffmpeg: None = None) -> None:
    """:func:`split_ffmpeg`'s two commands through the same FFmpeg libraries, for a machine without
    the command (a lent GPU): every frame to a JPEG by the image2 muxer and the mjpeg encoder
    (yuvj420p, 200 kb/s, numbered from 1, as the command does), the audio re-encoded to ADTS AAC."""
    with av.open(str(clip)) as src, av.open(str(frames_dir / "%05d_video.jpg"), "w", format="image2") as out:
        video = src.streams.video[0]
        video.thread_type = "AUTO"
        rate = Fraction(video.average_rate or 30)
        jpeg = out.add_stream("mjpeg", rate=rate)
        jpeg.width, jpeg.height, jpeg.pix_fmt = video.codec_context.width, video.codec_context.height, "yuvj420p"
        # The command's default rate (its log says 200 kb/s; PyAV leaves it 0). Its rate control still
        # settles a little differently: 15 % more JPEG bytes from the command on a 160x90 test clip.
        jpeg.codec_context.bit_rate = 200_000
        for i, frame in enumerate(src.decode(video)):
            frame = frame.reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(jpeg.encode(frame))
        out.mux(jpeg.encode(None))
    with av.open(str(clip)) as src, av.open(str(audio), "w", format="adts") as out:
        sound = src.streams.audio[0]
        aac = out.add_stream("aac", rate=sound.rate)
        aac.layout = sound.layout
        for frame in src.decode(sound):
            frame.pts = None
            out.mux(aac.encode(frame))
        out.mux(aac.encode(None))


def join_pyav(styled_dir: Path, audio: Path, silent: Path, output: Path, fps: int, _ffmpeg: None = None) -> None:
    """:func:`join_ffmpeg`'s two commands through PyAV: the JPEGs at ``fps`` to libx264 (high
    profile, CRF 20, yuv420p), then the video and audio packets copied into one MP4."""
    with av.open(str(styled_dir / "%05d_video.jpg"), format="image2", options={"framerate": str(fps)}) as src, \
            av.open(str(silent), "w") as out:
        video = src.streams.video[0]
        x264 = out.add_stream("libx264", rate=fps, options={"profile": "high", "crf": "20"})
        x264.width, x264.height, x264.pix_fmt = video.codec_context.width, video.codec_context.height, "yuv420p"
        for i, frame in enumerate(src.decode(video)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(x264.encode(frame))
        out.mux(x264.encode(None))
    with av.open(str(silent)) as vsrc, av.open(str(audio)) as asrc, av.open(str(output), "w") as out:
        sources = [(src, src.streams[0]) for src in (vsrc, asrc)]
        copies = [out.add_stream_from_template(stream) for _, stream in sources]  # all before the header
        for (src, stream), copy in zip(sources, copies):
            for packet in src.demux(stream):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = copy
                out.mux(packet)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run_baseline(args.clip.resolve(), args.model.resolve(), args.work or Path(tmp),
                                      args.ranks, device=args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
