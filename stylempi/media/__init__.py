"""Media I/O with PyAV: probe, index, decode exact frame runs, encode segments, assemble.

Everything happens in process (PyAV bundles FFmpeg): no frames on disk as
images, no ``ffmpeg`` command lines. Timestamps are carried as integers in the
input stream's time base, so nothing is ever re-timed.

The data path of a job, and the module of each step:

1. :func:`open_input` opens INPUT, :func:`pick_video_stream` chooses the video
   stream and :func:`describe_video` reads what the output must keep of it
   (``inputs``, ``describe``).
2. :func:`index_frames` lists the presentation timestamps and keyframes of the
   chosen video stream by demuxing packets (no decoding, so it is fast)
   (``indexing``).
3. :func:`decode_frames` yields exactly the frames of one chunk as RGB arrays,
   seeking from the keyframe before it and checking every timestamp, because a
   seek does not always land where asked (``decoding``; the RGB conversion both
   ways, with the job's colour, is in ``pixels``).
4. :class:`SegmentWriter` encodes a rank's stylized chunk into a NUT file (any
   codec, any time base, exact timestamps) with the settings
   :func:`choose_encoding` picked (``encoding``: the place to change encoder
   settings).
5. :func:`assemble` joins the segments by packet copy and muxes the original
   audio and subtitle packets untouched, interleaved by time, into a temporary
   file that is renamed onto OUTPUT only when complete (``assembly``).

Callers import from here (``from stylempi.media import ...``); the submodules
are how the code is arranged, not part of the interface.

Imports stylempi.colour, stylempi.errors and PyAV (torch only for NVDEC frames); never
stylempi.network, options, job, storage or above.
"""
from __future__ import annotations

from .assembly import CopyPlan, assemble, check_muxing, partial_output_path, plan_stream_copy
from .decoding import decode_frames
from .describe import VideoStreamInfo, describe_video, probe
from .encoding import (CRF_RANGES, DEEP_CODEC, DEFAULT_CRF, DEFAULT_PRESET, ENCODER_LOOKAHEAD, EncoderRequest,
                       SegmentWriter,
                       add_video_stream, check_crf, check_encoder, choose_encoding, default_codec, encoder_options,
                       encoding_notes, output_format, segment_offset, tag_colour)
from .indexing import FrameIndex, index_frames
from .inputs import open_input, pick_video_stream
from .pixels import TO_RGB, TO_YUV, frame_colour, planes_frame, to_planes, to_rgb, to_yuv
from .settings import EncodeSettings

__all__ = [
    "CRF_RANGES", "DEEP_CODEC", "DEFAULT_CRF", "DEFAULT_PRESET", "ENCODER_LOOKAHEAD", "TO_RGB", "TO_YUV",
    "CopyPlan", "EncodeSettings", "EncoderRequest", "FrameIndex", "SegmentWriter", "VideoStreamInfo",
    "add_video_stream", "assemble", "check_crf", "check_encoder", "check_muxing", "choose_encoding", "decode_frames",
    "default_codec", "describe_video", "encoder_options", "encoding_notes", "frame_colour", "index_frames",
    "open_input", "output_format", "partial_output_path", "pick_video_stream", "plan_stream_copy", "planes_frame",
    "probe", "segment_offset", "tag_colour", "to_planes", "to_rgb", "to_yuv",
]
