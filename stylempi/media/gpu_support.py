"""What this node's GPU media engines do for a job, found by trying them (rank 0, only what
the job asks for): the :class:`~stylempi.media.engines.Capabilities` table that
stylempi.media.engines's pure choices read.
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import TYPE_CHECKING, Iterable

from .engines import CPU_ONLY, Capabilities

if TYPE_CHECKING:
    import torch

#: The frame NVENC is tried on: well above its minimum frame sizes (the job's own size is
#: tried after, by check_encoder).
PROBE_SIZE = (256, 144)


def probe_capabilities(device: torch.device, codec_name: str | None = None, *,
                       input_path: str | os.PathLike | None = None, video_stream: int | None = None,
                       decode: bool = False, encoders: Iterable[str] = ()) -> Capabilities:
    """What opens here: NVDEC on the input (``decode``), and each of ``encoders``.

    NVDEC is tried only when the network is on CUDA (``device``), by opening the input
    with software fallback off and decoding its first frame on the GPU. An NVENC
    encoder is tried by encoding one small frame in memory; a named one is tried
    whatever the device, since naming it is the user's request (it is what
    ``check_encoder`` would open anyway), and on a machine without the NVIDIA driver
    FFmpeg's attempt fails at once. Every failure means "absent".
    """
    cuda = getattr(device, "type", None) == "cuda"
    encoders = tuple(encoders)
    if not cuda and not encoders:
        return CPU_ONLY
    index = device.index if cuda else None
    gpu_name = _gpu_name(device) if cuda else None
    nvdec: frozenset[str] = frozenset()
    if cuda and decode and codec_name and input_path is not None and video_stream is not None:
        if _nvdec_decodes(input_path, video_stream, index):
            nvdec = frozenset({codec_name})
    nvenc = frozenset(e for e in encoders if _nvenc_opens(e, index))
    return Capabilities(cuda=cuda, gpu_name=gpu_name, nvdec=nvdec, nvenc=nvenc)


def codec_of(decoder: str) -> str:
    """The codec a decoder decodes ("libdav1d" -> "av1"): what NVDEC support is named by."""
    import av
    try:
        return av.Codec(decoder, "r").canonical_name
    except Exception:  # noqa: BLE001 - an unknown name stays as it is
        return decoder


def _gpu_name(device: torch.device) -> str | None:
    try:
        import torch
        return torch.cuda.get_device_name(device)
    except Exception:  # noqa: BLE001 - a name is only for the notes
        return None


def _nvdec_decodes(input_path: str | os.PathLike, video_stream: int, device_index: int | None) -> bool:
    return nvdec_refusal(input_path, video_stream, device_index) is None


def _nvenc_opens(encoder: str, device_index: int | None) -> bool:
    return nvenc_refusal(encoder, device_index) is None


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def nvdec_refusal(input_path: str | os.PathLike, video_stream: int, device_index: int | None) -> str | None:
    """None when NVDEC decodes the first frame of the input's stream (no software
    fallback), else why not (benchmarks/gpu.py reports it).

    Opened exactly as the job's GPU decoder opens it (:func:`stylempi.media.nvdec.nvdec`):
    FFmpeg works in the CUDA primary context, the one torch uses, and the frame stays on
    the GPU (format ``cuda``). The input is opened as ``av.open`` opens it, with FFmpeg's
    default decoder for its codec: where that decoder has no CUDA path (libdav1d, FFmpeg's
    first choice for AV1 when built in) the answer is no, as it is for the job's decoder.
    """
    import av
    import torch

    from ._ffmpeg import stderr_captured
    from .nvdec import nvdec
    try:
        with stderr_captured():  # FFmpeg's complaints about a missing driver: the answer is "no"
            accel = nvdec(torch.device("cuda", device_index or 0))
            with av.open(os.fspath(input_path), hwaccel=accel) as container:
                stream = container.streams[video_stream]
                if not stream.codec_context.is_hwaccel:
                    return f"{stream.codec_context.name} has no CUDA path"
                for frame in container.decode(stream):
                    return None if frame.format.name == "cuda" else f"the frame came back as {frame.format.name}"
    except Exception as exc:  # noqa: BLE001 - any failure means NVDEC is not there for this input
        return _why(exc)
    return "no frame decoded"


def nvenc_refusal(encoder: str, device_index: int | None) -> str | None:
    """None when ``encoder`` opens on this GPU and encodes one small frame, in memory, else
    why not (no driver, no NVENC on this GPU, sessions exhausted)."""
    import io

    import av
    import numpy as np

    from ._ffmpeg import stderr_captured
    width, height = PROBE_SIZE
    options = {} if device_index is None else {"gpu": str(device_index)}
    try:
        with stderr_captured():
            with av.open(io.BytesIO(), "w", format="nut") as container:
                stream = container.add_stream(encoder, options=options)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.time_base = Fraction(1, 25)
                frame = av.VideoFrame.from_ndarray(np.zeros((height * 3 // 2, width), np.uint8), format="yuv420p")
                frame.pts = 0
                frame.time_base = stream.time_base
                packets = stream.encode(frame) + stream.encode(None)
                container.mux(packets)
                return None if packets else "no packet came out"
    except Exception as exc:  # noqa: BLE001 - every failure means "absent"
        return _why(exc)
