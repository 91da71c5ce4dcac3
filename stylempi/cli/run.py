"""``stylempi run``: stylize every frame of a video (under mpirun, on many ranks)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..colour.look import MAX_SCALE, MIN_SCALE
from ..errors import UsageError, one_line
from ..job.launcher import find_mpirun, local_launch, physical_cores, running_launcher, without_ranks
from ..job.plan import DEFAULT_CHUNK_FRAMES, MIN_CHUNK_FRAMES, MIN_CHUNKS
from ..media import CRF_RANGES, DEEP_CODEC, DEFAULT_CRF, DEFAULT_PRESET
from ..media.containers import ACCEPTED, CONTAINERS
from ..media.engines import AUTO_CODEC, CONVERT_MODES, DECODE_MODES, DEFAULT_CONVERT, DEFAULT_DECODE
from ..network.compile_cache import DEFAULT_MAX_DAYS, DEFAULT_MAX_MB, ENV_MAX_DAYS, ENV_MAX_MB
from ..network.placement import (BF16_MIN_WIDTH, COMPILE_MIN_FRAMES, COMPILE_MODES, DEFAULT_BATCH_SIZE,
                                 DEFAULT_COMPILE, DEFAULT_DEVICE, DEFAULT_PRECISION, DEVICES, PRECISIONS)
from ..network.styles import resolve_model
from ..options import RunOptions
from ..storage import is_remote

DESCRIPTION = ("Stylize every frame of INPUT into OUTPUT, keeping every timestamp, the size, aspect and rotation, "
               "and copying audio and subtitle packets untouched. Run it as one process, as N ranks on this machine "
               "(`stylempi run -n N ...`), or on a cluster as `mpirun -n N stylempi run ...` (or sbatch): rank 0 "
               "plans chunks of frames, every rank stylizes and encodes its chunks, rank 0 joins them.")
EXAMPLES = ("example:\n  stylempi run -n 2 in.mp4 out.mp4 --model my.pth\n"
            "  mpirun -n 4 stylempi run in.mp4 out.mp4 --model my.pth   (on a cluster)\n"
            "  stylempi verify in.mp4 out.mp4")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="stylize every frame of a video (launch under mpirun for many ranks)",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Every ``stylempi run`` argument, on any parser: ``run`` itself, and ``watch --run-args``
    (stylempi.cli.watch.jobs), which reads a job's options exactly as ``run`` does."""
    _add_run_files(p)
    p.add_argument("-n", "--ranks", type=int, default=None, metavar="N",
                   help="start N ranks on this machine through the mpirun found on PATH (as root, and with "
                        "more ranks than cores, it tells Open MPI so); on a cluster launch with mpirun or "
                        "sbatch instead, without -n")
    _add_engine_arguments(p)
    add_look_arguments(p)
    _add_temporal_argument(p)
    _add_encoding_arguments(p)
    _add_work_arguments(p)


def _add_temporal_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temporal", choices=("on", "off"), default="on",
                   help="steady the strokes: blend each frame with the previous output carried along the "
                        "input's optical flow, where that flow is trusted; resets at scene cuts; costs about "
                        "a fifth more time on CPUs; off = every frame painted on its own, as the network "
                        "makes it (default: on)")


def _add_run_files(p: argparse.ArgumentParser) -> None:
    """INPUT, OUTPUT and the model."""
    p.add_argument("input", metavar="INPUT", help="input video file or Blob URL (docs/storage.md)")
    p.add_argument("output", metavar="OUTPUT",
                   help="output video file or Blob URL; its extension picks the container "
                        f"({ACCEPTED}); .avi, .flv, .mpg and .ogv are refused (they cannot keep exact "
                        "timestamps or hold the encoders)")
    p.add_argument("--model", "-m", required=True,
                   help="a fast_neural_style checkpoint (.pth state_dict, any width) or a built-in "
                        "style name, in any case (see `stylempi models`)")
    p.add_argument("--trust-model", action="store_true",
                   help="allow a TorchScript model file (loading one can run code: only for files you trust)")


def _add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Where and how the network runs (stylempi.network.placement decides ``auto``)."""
    p.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE,
                   help="where the network runs; auto = this rank's own GPU if there is one, else CPU "
                        f"(default: {DEFAULT_DEVICE})")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="network arithmetic; auto = fp16 on GPUs, bf16 on CPUs with native bf16 for "
                        f"networks of width {BF16_MIN_WIDTH} or more, else fp32 (default: {DEFAULT_PRECISION})")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"frames per network call (default: {DEFAULT_BATCH_SIZE['cuda']} on GPU, "
                        f"{DEFAULT_BATCH_SIZE['cpu']} on CPU)")
    p.add_argument("--compile", choices=COMPILE_MODES, default=DEFAULT_COMPILE,
                   help="compile the network ahead of time with torch's Inductor (kept in "
                        "~/.cache/stylempi/compile or $STYLEMPI_COMPILE_CACHE; the first job of a model and "
                        "frame size compiles, from half a minute on idle cores to minutes on busy ones "
                        "(a line says so first), later ones load it at once; capped at "
                        f"${ENV_MAX_MB} ({DEFAULT_MAX_MB}) MB and ${ENV_MAX_DAYS} ({DEFAULT_MAX_DAYS:g}) days "
                        "unused, old formats removed); auto = on CPUs with a C++ compiler, for videos of "
                        f"{COMPILE_MIN_FRAMES} frames or more, off on GPUs; on a GPU, on = torch.compile "
                        f"(default: {DEFAULT_COMPILE})")
    p.add_argument("--decode", choices=DECODE_MODES, default=DEFAULT_DECODE,
                   help="where frames are decoded: cpu (FFmpeg); gpu (NVDEC, frames stay on the network's "
                        "GPU; needs the network on CUDA and NVDEC for the input's codec, else an error); auto = "
                        f"gpu where it works, else cpu with a note (default: {DEFAULT_DECODE})")
    p.add_argument("--convert", choices=CONVERT_MODES, default=DEFAULT_CONVERT,
                   help="what converts YUV to RGB and back around the network: ffmpeg (swscale, on the CPU); "
                        "torch (tensor kernels on the network's device, the CPU included); auto = torch when "
                        f"the network is on CUDA, else ffmpeg (default: {DEFAULT_CONVERT})")


def _crf_scale(codec: str) -> str:
    low, high = CRF_RANGES[codec]
    return f"{low}-{high}"


def _add_encoding_arguments(p: argparse.ArgumentParser) -> None:
    """Which video stream is stylized, and how video and audio are encoded (stylempi.media.encoding)."""
    p.add_argument("--video-stream", type=int, default=None, metavar="N",
                   help="input stream number of the video to stylize (default: the one FFmpeg "
                        "picks); other video streams are dropped with a note")
    p.add_argument("--codec", default=None,
                   help=f"video encoder (default: {CONTAINERS['mp4'].default_codec}; {DEEP_CODEC} for inputs "
                        f"deeper than 8 bits, to keep their depth; {CONTAINERS['webm'].default_codec} for .webm); "
                        f"{AUTO_CODEC} = h264_nvenc (hevc_nvenc for deeper inputs) when the network is on CUDA "
                        "and NVENC opens there, else the default with a note; h264_nvenc, hevc_nvenc, "
                        "av1_nvenc need NVENC here")
    p.add_argument("--crf", type=int, default=None,
                   help=f"encoder quality, lower is better: {_crf_scale('libx264')} for x264/x265 (default "
                        f"{DEFAULT_CRF['libx264']}), {_crf_scale('libvpx-vp9')} for VP9 (default "
                        f"{DEFAULT_CRF['libvpx-vp9']}) and SVT-AV1 (default {DEFAULT_CRF['libsvtav1']}), "
                        f"{_crf_scale('h264_nvenc')} for NVENC's constant quality (default "
                        f"{DEFAULT_CRF['h264_nvenc']}); checked, with --preset, by opening the encoder before "
                        "any work starts")
    p.add_argument("--preset", default=None,
                   help=f"encoder preset (default: {DEFAULT_PRESET['libx264']} for x264/x265, "
                        f"{DEFAULT_PRESET['h264_nvenc']} for NVENC)")
    p.add_argument("--audio-codec", default=None,
                   help="re-encode with this encoder (e.g. aac, libopus) only the audio tracks OUTPUT's "
                        "container cannot hold; the others are copied bit for bit (default: none, and "
                        "audio the container cannot hold is an error, never silently re-encoded)")
    p.add_argument("--reencode-audio", action="store_true",
                   help="with --audio-codec: re-encode every audio track, not only those the container "
                        "cannot hold")


def _add_work_arguments(p: argparse.ArgumentParser) -> None:
    """Where work is kept, how it is cut into chunks, what is printed, and Blob storage."""
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="where finished chunks are kept until the job ends (default: beside OUTPUT, "
                        "in .OUTPUT.stylempi/); must be visible to every rank, or a Blob URL (az://...)")
    p.add_argument("--restart", action="store_true",
                   help="ignore chunks finished by an earlier run of this job")
    p.add_argument("--chunk-frames", type=int, default=None, metavar="N",
                   help=f"target frames per chunk, the unit of work and of resume (default: "
                        f"{DEFAULT_CHUNK_FRAMES}, fewer for short videos so that at least {MIN_CHUNKS} "
                        f"chunks exist; never below {MIN_CHUNK_FRAMES}); chunks end at keyframes where possible")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary line")
    p.add_argument("--account-url", default=None, metavar="URL",
                   help="storage account for az:// URLs (default: $AZURE_STORAGE_ACCOUNT_URL or the "
                        "account of $AZURE_STORAGE_CONNECTION_STRING)")


def cmd_run(args: argparse.Namespace) -> int:
    if args.ranks is not None:
        if not is_remote(args.model):
            resolve_model(args.model)  # a mistyped name fails here, before N ranks start up
        return _launch_ranks(args.ranks, args.argv)
    from ..job.run import run_job  # the job (torch, MPI) is imported only when one runs
    options = RunOptions.from_args(args)
    from ..job.comm import get_comm
    from ..job.staging import staged_run
    comm = get_comm()
    with staged_run(options, args.account_url, comm) as options:  # no-op unless a Blob URL is given
        summary = run_job(options, comm=comm)
    if summary is not None and comm.is_root:
        for warning in summary.warnings():
            print(f"stylempi: warning: {one_line(warning)}", file=sys.stderr, flush=True)
    if summary is not None and not args.quiet and comm.is_root:
        print(one_line(summary.line()), flush=True)  # OUTPUT's name may hold newlines or escape codes
    return 0


def _launch_ranks(ranks: int, argv: Sequence[str]) -> int:
    """``stylempi run -n N ...``: become ``mpirun -n N python -m stylempi run ...`` (stylempi.job.launcher)."""
    launcher = running_launcher(os.environ)
    if launcher is not None:
        raise UsageError(f"-n {ranks}: this process is already a rank started by {launcher}, which decides "
                         f"the ranks; leave -n out (or run `stylempi run -n {ranks} ...` outside {launcher})")
    if ranks < 1:
        raise UsageError(f"-n {ranks}: give at least 1 rank")
    mpirun = find_mpirun(os.environ)
    if mpirun is None:
        raise UsageError("-n needs MPI's mpirun, which is not on PATH: pip install 'stylempi[mpi]' "
                         "(Open MPI), or your site's MPI")
    run_args = without_ranks(argv)[1:]  # less "run"
    launch = local_launch(ranks, run_args, mpirun, sys.executable, physical_cores(), os.geteuid() == 0,
                          os.environ)
    if launch.note:
        print(f"stylempi: note: {launch.note}", file=sys.stderr, flush=True)
    # exec, not a child: mpirun's exit code is the job's, and Ctrl-C reaches it as if typed to it.
    os.execve(mpirun, launch.argv, {**os.environ, **launch.env})
    return 0  # unreachable


def add_look_arguments(p: argparse.ArgumentParser) -> None:
    """--style-scale and --preserve-colors, shared by run and preview."""
    p.add_argument("--style-scale", type=float, default=1.0, metavar="S",
                   help=f"the network sees each frame resized by S ({MIN_SCALE:g} to {MAX_SCALE:g}) and its "
                        "output is resized back "
                        "to the exact frame size: strokes come out 1/S times as big, so a style looks alike "
                        "on 480p and 4K; below 1 it is faster too (S*S of the pixels: a quarter at 0.5) "
                        "(default: 1, the frame as it is)")
    p.add_argument("--preserve-colors", action="store_true",
                   help="keep the input's colours (chroma) and take only the stylized brightness (luma), "
                        "computed with the input's colour matrix; the luma change is cut short where a channel "
                        "would leave 0..255, so the colours stay exact")
