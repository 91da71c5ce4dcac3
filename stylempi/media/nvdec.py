"""Decoding on the GPU (NVDEC): frames stay on the card and reach torch through DLPack.

::

    packets ──NVDEC──► CUDA frame (NV12, or P010/P016 for deeper video)
            ──DLPack──► torch planes on the rank's GPU (Y, Cb, Cr; copies)
            ──► stylempi.network.planes: YUV -> RGB -> network -> YUV, on the GPU

Imported only when a job decodes on the GPU (``--decode gpu``), so a CPU-only
machine never loads it. Not yet run on a GPU: the README names ``--decode gpu``
as such.
"""
from __future__ import annotations

import av
import torch
from av.codec.hwaccel import HWAccel

from ..errors import VideoDecodeFailure

#: NVDEC's output formats whose samples sit in the high bits of 16 (the rest is 8-bit NV12).
HIGH_BIT_FORMATS = ("p010le", "p016le")


def nvdec(device: torch.device, keep_on_gpu: bool = True) -> HWAccel:
    """Decode on DEVICE's NVDEC; frames kept on the card, or copied to host memory (NV12)
    for swscale when ``keep_on_gpu`` is False. No silent software fallback: the job chose
    this engine on rank 0 (stylempi.media.engines), so a decoder that cannot is an error."""
    return HWAccel("cuda", device=str(device.index or 0), allow_software_fallback=False,
                   is_hw_owned=keep_on_gpu)


def cuda_planes(frame: av.VideoFrame, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y, Cb and Cr of a decoded CUDA frame as integer tensors on its GPU, samples in the low
    ``depth`` bits (as CPU decoders give them), 4:2:0 planes of half size.

    Copies: NVDEC reuses a small pool of surfaces, so holding a batch of them would
    stall the decoder. FFmpeg (in torch's primary context, which PyAV asks for)
    fills the frame on CUDA's legacy default stream, and the copies here run on
    this thread's current stream, the same one unless a caller set another; the
    stylizer runs on a non-blocking stream of its own, which does not wait for
    it, so the copies are finished here before the planes leave this thread.
    """
    if frame.format.name != "cuda" or frame.sw_format is None:
        raise VideoDecodeFailure(f"NVDEC gave a frame in {frame.format.name}, not on the GPU; "
                                 "decode on the CPU (--decode cpu)")
    luma = torch.from_dlpack(frame.planes[0])
    chroma = torch.from_dlpack(frame.planes[1])  # (H/2, W/2, 2): Cb, Cr interleaved
    if frame.sw_format.name in HIGH_BIT_FORMATS:
        shift = 16 - depth
        # uint16 has few kernels in torch: widen to int32 before shifting.
        planes = tuple(p.to(torch.int32) >> shift for p in (luma, chroma[..., 0], chroma[..., 1]))
    elif frame.sw_format.name == "nv12":
        planes = (luma.clone(), chroma[..., 0].contiguous(), chroma[..., 1].contiguous())
    else:
        raise VideoDecodeFailure(f"NVDEC gave {frame.sw_format.name} frames, which this path does not read; "
                                 "decode on the CPU (--decode cpu)")
    torch.cuda.current_stream(luma.device).synchronize()
    return planes
