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

    python benchmarks/baseline.py CLIP MODEL [--ranks 2] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent


def run_baseline(clip: Path, model: Path, work: Path, ranks: int = 2, fps: int = 30) -> dict:
    ffmpeg = common.ffmpeg_binary()
    quiet = ["-hide_banner", "-loglevel", "error", "-y"]
    frames_dir, styled_dir = work / "frames", work / "styled"
    for d in (frames_dir, styled_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    audio, silent, output = work / "audio.aac", work / "video_without_audio.mp4", work / "baseline.mp4"
    started = time.perf_counter()
    common.run_timed([ffmpeg, *quiet, "-i", clip, frames_dir / "%05d_video.jpg"])
    common.run_timed([ffmpeg, *quiet, "-i", clip, "-vn", audio])
    split_s = time.perf_counter() - started
    t = time.perf_counter()
    # torch's own defaults, as the reference scripts run: importing stylempi (for the model
    # class) would otherwise turn on its huge pages for the baseline too (161 vs ~190 s).
    env = common.mpi_env({"OMP_NUM_THREADS": "1", "THP_MEM_ALLOC_ENABLE": "0"})
    _, proc = common.run_timed(common.mpirun(ranks, [sys.executable, HERE / "baseline_rank.py", model,
                                                     frames_dir, styled_dir]), env=env)
    stylize_s = time.perf_counter() - t
    report = common.last_json(proc.stdout)
    t = time.perf_counter()
    common.run_timed([ffmpeg, *quiet, "-framerate", str(fps), "-i", styled_dir / "%05d_video.jpg",
                      "-c:v", "libx264", "-profile:v", "high", "-crf", "20", "-pix_fmt", "yuv420p", silent])
    common.run_timed([ffmpeg, *quiet, "-i", silent, "-i", audio, "-map", "0:0", "-map", "1:0",
                      "-vcodec", "copy", "-acodec", "copy", output])
    join_s = time.perf_counter() - t
    wall = time.perf_counter() - started
    return {"wall_s": wall, "split_s": split_s, "stylize_s": stylize_s, "join_s": join_s,
            "input_frames": report["input_frames"], "stylized_frames": sum(r["frames"] for r in report["ranks"]),
            "dropped_frames": report["dropped"], "ranks": ranks, "output": str(output),
            # Throughput counts the input's frames: the job's task was to stylize all of them.
            "fps": report["input_frames"] / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run_baseline(args.clip.resolve(), args.model.resolve(), args.work or Path(tmp),
                                      args.ranks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
