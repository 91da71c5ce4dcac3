"""Which engine decodes, converts and encodes a job: decided once on rank 0, the same on every rank.

A job has three media engines besides the network (stylempi.network.placement):

* **decode**: ``cpu`` (FFmpeg's software decoders) or ``gpu`` (NVDEC, frames stay in GPU memory);
* **convert** (YUV <-> RGB around the network): ``ffmpeg`` (swscale) or ``torch`` (tensor kernels,
  on the network's device, the CPU included);
* **encode**: the encoder name (``libx264``, ``h264_nvenc`` ...), kept in ``EncodeSettings.codec``.

The choices change pixels, so they are made once, on rank 0 (stylempi.job.prepare), recorded in
the job's key, and broadcast: every rank of every N runs the same engines. The
functions that choose are pure: they take what the user asked for, where the network runs
and a :class:`Capabilities` table (what opens on this node's GPU), and return a
:class:`Choice`, with a short note when ``auto`` fell back, or raise one
:class:`~stylempi.errors.UsageError` when an explicit request cannot be met.
:func:`stylempi.media.gpu_support.probe_capabilities` fills the table by trying the real
thing, and only where it is asked: the default job (``--decode cpu --convert ffmpeg``, no
NVENC codec) probes nothing, and a CPU-only job never initialises CUDA nor imports the GPU
decoder. This module does no I/O.

The GPUs of a job are assumed alike: rank 0's GPU stands for every node's. A rank whose
GPU lacks an engine rank 0's has fails when it opens it, with that engine's error.

:data:`GPU_FAMILIES` is what NVIDIA documents of each GPU family's media engines; it
words the notes ("H200: Hopper GPUs have no NVENC") and never decides anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..errors import UsageError

DECODE_MODES = ("auto", "cpu", "gpu")
CONVERT_MODES = ("auto", "ffmpeg", "torch")
#: The defaults stay the CPU engines: the GPU paths have not been measured on a GPU yet.
DEFAULT_DECODE = "cpu"
DEFAULT_CONVERT = "ffmpeg"
#: ``--codec auto``: NVENC where it opens, else the container's own default.
AUTO_CODEC = "auto"
#: FFmpeg's NVENC encoders. ``--codec auto`` takes the first two (HEVC for inputs deeper
#: than 8 bits: H.264 NVENC writes 8-bit only); av1_nvenc only when named.
NVENC_ENCODERS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")


@dataclass(frozen=True)
class Capabilities:
    """What this node's GPU does, as far as this job asked (empty sets: not there, or not asked)."""

    cuda: bool = False
    gpu_name: str | None = None
    #: Codecs (FFmpeg's codec names, e.g. "h264", "av1") whose first frame NVDEC decoded here.
    nvdec: frozenset[str] = frozenset()
    #: NVENC encoder names (e.g. "h264_nvenc") that opened and encoded a frame here.
    nvenc: frozenset[str] = frozenset()


#: A machine without a usable GPU (or a job that asked for no GPU engine).
CPU_ONLY = Capabilities()


@dataclass(frozen=True)
class Choice:
    """An engine chosen, and why it is not the one asked for (``auto`` fell back), if so."""

    value: str
    note: str | None = None


class GpuFamily(NamedTuple):
    """What NVIDIA documents of one GPU family's video engines (wording only): its
    ``products`` are regular expressions matched against whole words of the name
    torch.cuda.get_device_name gives ("NVIDIA A100-SXM4-80GB" is an A100, "NVIDIA A10" is not)."""

    name: str
    products: tuple[str, ...]
    nvenc: bool
    av1_decode: bool

    def matches(self, gpu_name: str) -> bool:
        return any(re.search(rf"(?<![A-Za-z0-9])(?:{p})(?![A-Za-z0-9])", gpu_name) for p in self.products)


#: NVIDIA's per-family facts, from the Video Codec SDK 13.0 application notes ("NVDEC
#: Hardware Capabilities": AV1 decode only on GA10x, Ada and Blackwell, not on Volta,
#: Turing, GA100 or Hopper) and the "Video Encode and Decode GPU Support Matrix" (no NVENC
#: on A100, A30, H100, H200). Used to word the notes, never to decide: decisions come from
#: what opens (:func:`stylempi.media.gpu_support.probe_capabilities`), so a GPU missing here is decided alike.
GPU_FAMILIES: tuple[GpuFamily, ...] = (
    GpuFamily("Hopper", ("H100", "H200", "H800", "H20", "GH200"), nvenc=False, av1_decode=False),
    GpuFamily("Ampere GA100", ("A100", "A800", "A30"), nvenc=False, av1_decode=False),
    GpuFamily("Volta", ("V100", "TITAN V"), nvenc=True, av1_decode=False),
    GpuFamily("Turing", ("T4", r"RTX 20\d0( Ti| SUPER)?", r"Quadro RTX \d000"), nvenc=True, av1_decode=False),
    GpuFamily("Ada", ("L4", "L40S?", r"RTX 40\d0( Ti| SUPER)?", r"RTX \d000 Ada"), nvenc=True, av1_decode=True),
)


def gpu_family(gpu_name: str | None) -> GpuFamily | None:
    if not gpu_name:
        return None
    return next((f for f in GPU_FAMILIES if f.matches(gpu_name)), None)


def _gpu(caps: Capabilities) -> str:
    return caps.gpu_name or "this GPU"


# ---------------------------------------------------------------------------
# The choices (pure)
# ---------------------------------------------------------------------------

def choose_decode(requested: str, device_type: str, codec_name: str, caps: Capabilities) -> Choice:
    """``cpu`` or ``gpu`` (NVDEC): ``gpu`` needs the network on CUDA and NVDEC for the input's codec."""
    if requested not in DECODE_MODES:
        raise UsageError(f"--decode must be one of {', '.join(DECODE_MODES)}")
    if requested == "cpu":
        return Choice("cpu")
    if device_type != "cuda":
        if requested == "gpu":
            raise UsageError("--decode gpu decodes on the network's GPU, but this job runs the network on the "
                             "CPU (no CUDA GPU here, or --device cpu); use --decode cpu, or --decode auto to "
                             "decode on the GPU where there is one")
        return Choice("cpu")  # nothing fell back: there is no GPU to use
    if codec_name in caps.nvdec:
        return Choice("gpu")
    family = gpu_family(caps.gpu_name)
    why = f" ({family.name} GPUs decode no AV1)" if codec_name == "av1" and family and not family.av1_decode else ""
    if requested == "gpu":
        raise UsageError(f"--decode gpu: NVDEC cannot decode this input's {codec_name} on {_gpu(caps)}{why}; "
                         "use --decode cpu (or --decode auto, which falls back to the CPU)")
    return Choice("cpu", f"NVDEC cannot decode {codec_name} on {_gpu(caps)}{why}: decoding on the CPU")


def choose_convert(requested: str, device_type: str) -> Choice:
    """``ffmpeg`` (swscale) or ``torch``: ``auto`` takes torch on CUDA, swscale on a CPU.

    ``torch`` is allowed anywhere: on a CPU it runs the tensor conversions there.
    """
    if requested not in CONVERT_MODES:
        raise UsageError(f"--convert must be one of {', '.join(CONVERT_MODES)}")
    if requested == "auto":
        return Choice("torch" if device_type == "cuda" else "ffmpeg")
    return Choice(requested)


def fit_frame_path(decode: Choice, convert: Choice, requested_decode: str, requested_convert: str,
                   chroma: str, plain_look: bool) -> tuple[Choice, Choice]:
    """The decode and convert choices, narrowed to what the torch colour path does.

    ``--style-scale`` and ``--preserve-colors`` work on RGB arrays on the CPU
    (stylempi.colour.look), so a job with either keeps swscale; and NVDEC frames
    reach torch as NV12 or P010 only (PyAV's DLPack export: 4:2:0), so other
    subsamplings decode on the CPU when torch converts. An explicit request
    that cannot be met is a usage error; ``auto`` falls back with a note.
    """
    if convert.value == "torch" and not plain_look:
        if requested_convert == "torch":
            raise UsageError("--convert torch cannot apply --style-scale or --preserve-colors (they work on "
                             "the CPU's RGB frames); use --convert ffmpeg with them")
        convert = Choice("ffmpeg", "--style-scale and --preserve-colors need swscale: converting colour with it")
    if decode.value == "gpu" and convert.value == "torch" and chroma != "420":
        what = f"4:{chroma[1]}:{chroma[2]}" if len(chroma) == 3 else chroma
        if requested_decode == "gpu":
            raise UsageError(f"--decode gpu hands torch 4:2:0 frames only, and this input is {what}; use "
                             "--convert ffmpeg, or --decode cpu")
        decode = Choice("cpu", f"NVDEC frames reach torch as 4:2:0 only: decoding this {what} input on the CPU")
    return decode, convert


class _Holds(Protocol):
    extension: str

    def holds(self, codec: str) -> bool: ...


def auto_nvenc(container: _Holds, depth: int) -> str | None:
    """The NVENC encoder ``--codec auto`` tries for this output, None if the container holds none."""
    wanted = "hevc_nvenc" if depth > 8 else "h264_nvenc"
    return wanted if container.holds(wanted) else None


def choose_codec(requested: str | None, default_codec: str, container: _Holds, depth: int, device_type: str,
                 caps: Capabilities) -> Choice:
    """The encoder: ``auto`` takes NVENC when the network is on CUDA and NVENC opens here, else
    ``default_codec`` (today's default for this container and depth); a named NVENC encoder
    that does not open here is a usage error; any other name is left to the encoder checks."""
    if requested is None:
        return Choice(default_codec)
    if requested in NVENC_ENCODERS:
        if requested not in caps.nvenc:
            raise UsageError(f"--codec {requested} needs NVENC, and it does not open here "
                             f"({_nvenc_absence(caps)}); leave --codec out for {default_codec}, or use "
                             "--codec auto to take NVENC where it opens")
        return Choice(requested)
    if requested != AUTO_CODEC:
        return Choice(requested)
    if device_type != "cuda":
        return Choice(default_codec)  # nothing fell back: there is no GPU to use
    wanted = auto_nvenc(container, depth)
    if wanted is None:
        return Choice(default_codec, f"a .{container.extension} file holds no NVENC codec: encoding with "
                                     f"{default_codec}")
    if wanted not in caps.nvenc:
        return Choice(default_codec, f"{_nvenc_absence(caps, wanted)}: encoding with {default_codec}")
    return Choice(wanted)


def _nvenc_absence(caps: Capabilities, encoder: str | None = None) -> str:
    """"no NVENC on NVIDIA H200 (Hopper GPUs have none)", in the fewest words that are true."""
    if not caps.cuda:
        return "no NVIDIA GPU with NVENC here"
    family = gpu_family(caps.gpu_name)
    if family is not None and not family.nvenc:
        return f"no NVENC on {_gpu(caps)} ({family.name} GPUs have none)"
    if encoder is not None and caps.nvenc:
        return f"{encoder} does not open on {_gpu(caps)}"
    return f"NVENC does not open on {_gpu(caps)}"


def describe_engines(decode: str, convert: str, codec: str) -> str:
    """"decode cpu, convert ffmpeg, encode libx264": the summary line's words."""
    return f"decode {decode}, convert {convert}, encode {codec}"


def nvenc_to_probe(requested: str | None, container: _Holds, depth: int, device_type: str) -> tuple[str, ...]:
    """The NVENC encoders :func:`choose_codec` will ask about: the one named, or ``auto``'s on CUDA."""
    if requested in NVENC_ENCODERS:
        return (requested,)
    if requested == AUTO_CODEC and device_type == "cuda":
        wanted = auto_nvenc(container, depth)
        return (wanted,) if wanted else ()
    return ()
