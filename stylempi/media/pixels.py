"""Pixels between FFmpeg's frames and the network's RGB arrays, with the job's colour.

:func:`frame_colour` reads a decoded frame's colour description;
:func:`to_rgb` and :func:`to_yuv` convert with it, both ways. The torch
colour path (``--convert torch``) converts on the network's device instead:
it takes the decoded planes as they are (:func:`to_planes`) and gives back
the encoder's planes (:func:`planes_frame`).
"""
from __future__ import annotations

import struct

import av
import numpy as np

from ..colour import matrices as colours
from ..colour.matrices import Colour
from ..errors import VideoOpenFailure
from .settings import EncodeSettings


def frame_colour(frame, width: int, height: int, pix_fmt: str | None, name: str) -> tuple[Colour, list[str]]:
    """The job's :class:`~stylempi.colour.matrices.Colour` from a decoded frame, and what cannot be kept.

    ``frame`` None (a stream that decodes nothing) gives the guess for ``width`` x ``height``.
    """
    notes: list[str] = []
    if frame is None:
        return colours.decide(width, height, pix_fmt or "yuv420p", matrix=colours.UNSPECIFIED,
                              range_=colours.UNSPECIFIED, primaries=colours.UNSPECIFIED,
                              transfer=colours.UNSPECIFIED, depth=8, chroma="420"), notes
    fmt = frame.format
    depth = max(c.bits for c in fmt.components)
    luma, chroma = fmt.components[0], fmt.components[min(1, len(fmt.components) - 1)]
    shifts = (int(chroma.width < luma.width), int(chroma.height < luma.height))
    mastering = light = None
    for entry in frame.side_data:  # PyAV 18.1.0 iterates the side data, 18.1.1 their types (its keys)
        side = entry if hasattr(entry, "type") else frame.side_data[entry]
        kind = side.type.name
        if kind == "MASTERING_DISPLAY_METADATA" and len(bytes(side)) >= 88:
            mastering = colours.mastering_display(struct.unpack("<22i", bytes(side)[:88]))
        elif kind == "CONTENT_LIGHT_LEVEL" and len(bytes(side)) >= 8:
            light = struct.unpack("<2I", bytes(side)[:8])
        elif kind in colours.DYNAMIC_HDR:
            what = "Dolby Vision" if kind.startswith("DOVI") else "dynamic HDR (HDR10+/Vivid)"
            if not any(what in n for n in notes):
                notes.append(f"the input's {what} metadata cannot survive re-encoding and is dropped; "
                             "the static HDR tags and metadata are kept")
    matrix = int(frame.colorspace)
    if matrix not in (0, colours.UNSPECIFIED) and matrix not in colours.SWS_MATRIX \
            and matrix != colours.BT2020_CL:
        notes.append(f"the input's colour matrix {colours.MATRIX_NAMES.get(matrix, matrix)} cannot be "
                     "converted; it is read and tagged as the usual guess for its size")
    try:
        colour = colours.decide(
            width, height, fmt.name, matrix=matrix, range_=int(frame.color_range),
            primaries=int(frame.color_primaries), transfer=int(frame.color_trc), depth=depth,
            chroma=colours.chroma_of(*shifts), is_rgb=fmt.is_rgb, mastering=mastering,
            light=tuple(light) if light else None)
    except ValueError as exc:
        raise VideoOpenFailure(f"{name}: {exc}") from None
    return colour, notes


#: swscale flags of the two conversions. Exact rounding and full-resolution chroma on the
#: way in remove the mean colour shift of swscale's fast paths, so an identity round trip
#: comes much closer to its input (docs/colour.md has the table).
TO_RGB = ("BICUBIC", "ACCURATE_RND", "FULL_CHR_H_INT")
TO_YUV = ("BICUBIC", "ACCURATE_RND")


def to_rgb(frame: av.VideoFrame, colour: Colour | None) -> np.ndarray:
    """A decoded frame as RGB with the job's matrix and range (16-bit for deep inputs)."""
    if colour is None:
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(format=colour.rgb_format, src_colorspace=colour.sws_matrix,
                          src_color_range=colour.sws_range, interpolation=_flags(TO_RGB)).to_ndarray()


def to_yuv(rgb: np.ndarray, settings: EncodeSettings) -> av.VideoFrame:
    """A stylized RGB frame (8- or 16-bit) as the encoder's YUV, with the job's matrix and range."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
    colour = settings.colour
    if colour is None:
        return frame
    if colour.range == colours.RANGE_FULL:
        return encoder_frame(colours.full_range_planes(rgb, colour, colour.chroma, colour.depth), settings)
    return frame.reformat(format=settings.pix_fmt, dst_colorspace=colour.sws_matrix,
                          dst_color_range=colour.sws_range, interpolation=_flags(TO_YUV))


def to_planes(frame: av.VideoFrame, colour: Colour) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decoded frame's Y, Cb, Cr planes in the job's planar format (``colour.pix_fmt()``).

    A frame decoded in that format (or its ``yuvj`` full-range name) is copied
    plane by plane, untouched; any other (NV12 from a hardware decoder, RGB,
    another subsampling) is converted to it by swscale first, keeping the
    job's matrix and range on both sides.
    """
    wanted = colour.pix_fmt()
    if frame.format.name.replace("yuvj", "yuv") != wanted:
        frame = frame.reformat(format=wanted, src_colorspace=colour.sws_matrix, dst_colorspace=colour.sws_matrix,
                               src_color_range=colour.sws_range, dst_color_range=colour.sws_range)
    dtype = np.dtype(np.uint8 if colour.depth <= 8 else "<u2")
    planes = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
        planes.append(rows[:, :plane.width].copy())
    return planes[0], planes[1], planes[2]


def encoder_frame(planes: list[np.ndarray], settings: EncodeSettings) -> av.VideoFrame:
    """The encoder's frame from planes of the output's planar format (``colour.pix_fmt()``).

    An encoder fed that format's semi-planar twin (NVENC takes ``p010le`` for
    10-bit 4:2:0) gets it repacked by swscale: the same samples, interleaved.
    """
    frame = planes_frame(planes, settings.colour.pix_fmt())
    return frame if frame.format.name == settings.pix_fmt else frame.reformat(format=settings.pix_fmt)


def planes_frame(planes: list[np.ndarray], pix_fmt: str) -> av.VideoFrame:
    """A planar frame from whole planes (each plane's rows padded to FFmpeg's line size)."""
    height, width = planes[0].shape
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, data in zip(frame.planes, planes):
        stride = plane.line_size // data.itemsize
        padded = np.zeros((data.shape[0], stride), data.dtype)
        padded[:, :data.shape[1]] = data
        plane.update(padded.tobytes())
    return frame


def _flags(names: tuple[str, ...]) -> int:
    from av.video.reformatter import Interpolation
    flags = 0
    for name in names:
        flags |= Interpolation[name]
    return flags
