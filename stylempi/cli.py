"""The ``stylempi`` command: a thin layer over the library.

Each subcommand parses its flags, calls the library, and turns a
:class:`~stylempi.errors.StylempiError` into one line on stderr and the
error's exit code. Exit codes: 0 success, 1 verify found differences or a
general error, 2 usage, 3 input video, 4 model, 5 output, 6 storage, 7 another
rank failed, 70 internal error (a bug: please report it), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from . import __version__, prefer_huge_pages, stability
from .comm import SharedError
from .compile_cache import DEFAULT_MAX_DAYS, DEFAULT_MAX_MB, ENV_MAX_DAYS, ENV_MAX_MB
from .containers import ACCEPTED, CONTAINERS
from .engine import (BF16_MIN_WIDTH, COMPILE_MIN_FRAMES, COMPILE_MODES, DEFAULT_BATCH_SIZE, DEFAULT_COMPILE,
                     DEFAULT_DEVICE, DEFAULT_PRECISION, DEVICES, PRECISIONS)
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, StylempiError, UsageError, one_line
from .hardware import AUTO_CODEC, CONVERT_MODES, DECODE_MODES, DEFAULT_CONVERT, DEFAULT_DECODE
from .look import MAX_SCALE, MIN_SCALE
from .media import CRF_RANGES, DEEP_CODEC, DEFAULT_CRF, DEFAULT_PRESET
from .plan import DEFAULT_CHUNK_FRAMES, MIN_CHUNK_FRAMES, MIN_CHUNKS

EPILOG = """examples:
  mpirun -n 4 stylempi run in.mp4 out.mp4 --model my.pth
  stylempi run in.mp4 out.mp4 --model scream --device cpu
  stylempi models
  stylempi verify in.mp4 out.mp4
  stylempi probe in.mp4
"""


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


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="stylize every frame of a video (launch under mpirun for many ranks)",
        description="Stylize every frame of INPUT into OUTPUT, keeping every timestamp, the size, "
                    "aspect and rotation, and copying audio and subtitle packets untouched. Run it "
                    "as one process, or as `mpirun -n N stylempi run ...`: rank 0 plans chunks of "
                    "frames, every rank stylizes and encodes its chunks, rank 0 joins them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  mpirun -n 4 stylempi run in.mp4 out.mp4 --model my.pth\n"
               "  stylempi verify in.mp4 out.mp4")
    _add_run_files(p)
    _add_engine_arguments(p)
    add_look_arguments(p)
    _add_temporal_argument(p)
    _add_encoding_arguments(p)
    _add_work_arguments(p)
    p.set_defaults(func=cmd_run)


def _add_temporal_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temporal", choices=("on", "off"), default="on",
                   help="steady the strokes: blend each frame with the previous output carried along the "
                        "input's optical flow, where that flow is trusted; resets at scene cuts; costs about "
                        "a tenth more time on CPUs; off = every frame painted on its own, as the network "
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
    """Where and how the network runs (stylempi.engine decides ``auto``)."""
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
                        "frame size compiles for about a minute, later ones load it at once; capped at "
                        f"${ENV_MAX_MB} ({DEFAULT_MAX_MB}) MB and ${ENV_MAX_DAYS} ({DEFAULT_MAX_DAYS:g}) days "
                        "unused, old formats removed); auto = on CPUs with a C++ compiler, for videos of "
                        f"{COMPILE_MIN_FRAMES} frames or more, off on GPUs; on a GPU, on = torch.compile "
                        f"(default: {DEFAULT_COMPILE})")
    p.add_argument("--decode", choices=DECODE_MODES, default=DEFAULT_DECODE,
                   help="where frames are decoded: cpu (FFmpeg); gpu (NVDEC, frames stay on the network's "
                        "GPU; needs the network on CUDA and NVDEC for the input's codec, else an error); auto = "
                        "gpu where it works, else cpu with a note; the GPU path is not yet run on a GPU "
                        f"(default: {DEFAULT_DECODE})")
    p.add_argument("--convert", choices=CONVERT_MODES, default=DEFAULT_CONVERT,
                   help="what converts YUV to RGB and back around the network: ffmpeg (swscale, on the CPU); "
                        "torch (tensor kernels on the network's device, the CPU included; not yet run on a "
                        "GPU); auto = torch when "
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
                        "av1_nvenc need NVENC here (not yet run on a GPU)")
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
    from .job import RunOptions, run_job
    options = RunOptions.from_args(args)
    from .comm import get_comm
    from .storage import staged_run
    comm = get_comm()
    with staged_run(options, args.account_url, comm) as options:  # no-op unless a Blob URL is given
        summary = run_job(options, comm=comm)
    if summary is not None and comm.is_root:
        for warning in summary.warnings():
            print(f"stylempi: warning: {one_line(warning)}", file=sys.stderr, flush=True)
    if summary is not None and not args.quiet and comm.is_root:
        print(one_line(summary.line()), flush=True)  # OUTPUT's name may hold newlines or escape codes
    return 0


def _add_probe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="describe a video's streams as JSON",
                       description="Print a JSON description of INPUT: streams, codecs, frame count, "
                                   "frame rate, duration, size, aspect, rotation, audio tracks.")
    p.add_argument("input", metavar="INPUT")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    from .media import probe
    print(json.dumps(probe(args.input), indent=2))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check OUTPUT holds exactly INPUT's frames, timestamps and audio",
                       description="Exit 0 only when OUTPUT holds exactly the input's frames with the same "
                                   "timestamps (within half a tick of the input's time base, or 0.5 ms where "
                                   "OUTPUT's container keeps 1 ms ticks), size, aspect and orientation, and "
                                   "bit-identical audio. Prints a JSON report. It does not compare pixels, so it "
                                   "cannot see which input frame an output frame was made from: frames swapped "
                                   "or duplicated in place, keeping their timestamps, pass (the report's "
                                   "not_checked says so).")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("output", metavar="OUTPUT")
    p.add_argument("--video-stream", type=int, default=None, metavar="N",
                   help="the input stream that was stylized (default: the one FFmpeg picks)")
    p.add_argument("--stability", action="store_true",
                   help="also report temporal stability: the warping error E_warp of OUTPUT and of INPUT "
                        "(Lai et al. 2018; flow on INPUT, lower is steadier) and their ratio, scored with "
                        "DIS and with Farneback flow, and OUTPUT's style strength and sharpness; informative, "
                        "it does not change the exit code")
    p.add_argument("--stability-reference", default=None, metavar="OFF",
                   help="with --stability: the same job made with --temporal off; each figure is also "
                        "given relative to it")
    p.add_argument("--stability-frames", type=int, default=None, metavar="N",
                   help=f"frames the stability figure uses, from the start (default: {stability.DEFAULT_FRAMES})")
    p.add_argument("--stability-height", type=int, default=None, metavar="H",
                   help=f"frames are scaled down to H rows for the figure (default: {stability.DEFAULT_HEIGHT}; "
                        "0 = full size)")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify
    if args.stability:
        frames = stability.DEFAULT_FRAMES if args.stability_frames is None else args.stability_frames
        height = stability.DEFAULT_HEIGHT if args.stability_height is None else args.stability_height
        if frames < 2 or height < 0:
            raise UsageError("--stability-frames must be at least 2 and --stability-height at least 0")
    report = verify(args.input, args.output, args.video_stream)
    if args.stability:
        report["stability"] = stability.stability_report(args.input, args.output, frames, height or None,
                                                         args.video_stream, args.stability_reference)
    print(json.dumps(report, indent=2, default=str))
    if not report["ok"]:
        failed = ", ".join(k for k, v in report["checks"].items() if not v["ok"])
        print(f"stylempi: verify: OUTPUT differs from INPUT in: {failed}", file=sys.stderr)
        return 1
    return 0


#: Subcommands contributed by other modules: (module, adder function name).
_PLUGINS: list[tuple[str, str]] = [("stylempi.watch", "add_watch_parser"),
                                   ("stylempi.train", "register"),    # train
                                   ("stylempi.preview", "register"),  # preview, models
                                   ("stylempi.export", "register")]   # export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylempi", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Apply a fast neural style network to every frame of a video, across MPI ranks, "
                    "keeping every frame, timestamp and audio track.")
    parser.add_argument("--version", action="version", version=f"stylempi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for adder in (_add_run, _add_probe, _add_verify):
        adder(sub)
    for module, name in _PLUGINS:
        import importlib
        getattr(importlib.import_module(module), name)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prefer_huge_pages()  # before torch allocates anything (every subcommand, every rank)
    args = build_parser().parse_args(argv)
    return _call(args.func, args)


def _call(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand; what escapes it becomes one line on stderr and its exit code."""
    try:
        return func(args)
    except StylempiError as exc:
        shared = isinstance(exc, SharedError)
        if not (shared and exc.reported):
            print(f"stylempi: error: {one_line(str(exc))}", file=sys.stderr, flush=True)
        return _leave(exc.exit_code, shared)
    except KeyboardInterrupt:
        print("stylempi: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug; still one line unless debugging
        if os.environ.get("STYLEMPI_DEBUG"):
            raise
        print(f"stylempi: internal error: {type(exc).__name__}: {exc} (this is a bug; rerun with "
              "STYLEMPI_DEBUG=1 for a traceback and report it)", file=sys.stderr, flush=True)
        return _leave(EXIT_INTERNAL, shared=False)


def _leave(code: int, shared: bool) -> int:
    """Under mpirun, rank 0 ends last so that its error stays the last line (stylempi.launcher)."""
    from .launcher import shared_error_exit
    return shared_error_exit(code, shared)


if __name__ == "__main__":
    sys.exit(main())
