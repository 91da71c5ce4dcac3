"""Colour: the matrix, range, tags, depth and HDR metadata a job keeps, decided once.

Pure logic, no I/O: :func:`stylempi.media.describe_video` reads the facts off
the input's first frame and :func:`decide` turns them into a :class:`Colour`
that every rank uses for both conversions::

    input YUV ──(input's matrix + range)──► RGB ──network──► RGB ──(same matrix + range)──► output YUV
                                                                       tags: the input's (or the guess used)

Why explicit: swscale converts with BT.601 whenever nobody says otherwise, and a
player shows an *untagged* HD file as BT.709, so converting and tagging must
agree, or every HD output is shown with shifted colours. An untagged input gets
the guess players make (BT.709 from 1280 wide or above 576 lines, BT.601 below)
on decode and encode alike, and the output is tagged with it, so nobody guesses
again. Inputs of more than 8 bits are handed to the network as 16-bit RGB, so
the output keeps its depth without banding. The signal is stylized as coded:
HLG and PQ pictures are not tone-mapped, their tags and static HDR metadata are
copied (docs/colour.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

# FFmpeg's enum values (AVColorSpace, AVColorRange, AVColorPrimaries, AVColorTransferCharacteristic).
UNSPECIFIED = 2
RANGE_LIMITED, RANGE_FULL = 1, 2
BT709, BT470BG, SMPTE170M, BT2020_NCL, BT2020_CL = 1, 5, 6, 9, 10

MATRIX_NAMES = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
                13: "chroma-derived-c", 14: "ictcp"}
PRIMARIES_NAMES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
                   9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "jedec-p22"}
TRANSFER_NAMES = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
                  9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1",
                  14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
RANGE_NAMES = {RANGE_LIMITED: "tv", RANGE_FULL: "pc"}

#: The matrices swscale converts with, by the name PyAV's reformatter takes. BT.2020 constant
#: luminance is not a matrix swscale can apply; it is refused (see :func:`decide`).
SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020"}

#: Luma coefficients (Kr, Kb) of the matrices swscale converts with (ITU-R BT.601, BT.709,
#: BT.2020, FCC, SMPTE 240M).
LUMA = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
        9: (0.2627, 0.0593)}

#: Frame side data that describes one scene at a time and cannot survive re-encoding.
DYNAMIC_HDR = ("DOVI_RPU_BUFFER", "DOVI_METADATA", "DYNAMIC_HDR_PLUS", "DYNAMIC_HDR_VIVID")


@dataclass(frozen=True)
class Colour:
    """How a job's frames are converted and how its output is tagged (values of FFmpeg's enums).

    ``matrix`` and ``range`` are never unspecified: they are what the conversions
    use, guessed where the input says nothing (``guessed``). ``depth`` is the bit
    depth the output keeps, ``chroma`` its subsampling ("420", "422" or "444").
    ``mastering`` (x265's ``master-display`` syntax) and ``light`` (MaxCLL,
    MaxFALL) are the input's static HDR metadata, when it has them.
    """

    matrix: int
    range: int
    primaries: int
    transfer: int
    depth: int = 8
    chroma: str = "420"
    guessed: bool = False
    mastering: str | None = None
    light: tuple[int, int] | None = None

    @property
    def rgb_format(self) -> str:
        """The RGB the network sees: 8-bit, or 16-bit for deeper inputs (no banding)."""
        return "rgb24" if self.depth <= 8 else "rgb48le"

    @property
    def sws_matrix(self) -> str:
        return SWS_MATRIX[self.matrix]

    @property
    def sws_range(self) -> str:
        return "JPEG" if self.range == RANGE_FULL else "MPEG"

    def pix_fmt(self, chroma: str | None = None, depth: int | None = None) -> str:
        """The planar YUV format of this subsampling and depth, e.g. ``yuv420p10le``."""
        depth = self.depth if depth is None else depth
        return f"yuv{chroma or self.chroma}p" + ("" if depth <= 8 else f"{depth}le")

    def describe(self) -> dict:
        """Names as ffprobe prints them (``probe`` and ``verify`` report these)."""
        return {"matrix": MATRIX_NAMES.get(self.matrix, str(self.matrix)),
                "range": RANGE_NAMES.get(self.range, str(self.range)),
                "primaries": PRIMARIES_NAMES.get(self.primaries, str(self.primaries)),
                "transfer": TRANSFER_NAMES.get(self.transfer, str(self.transfer)),
                "bit_depth": self.depth, "chroma": self.chroma, "guessed": self.guessed,
                "mastering_display": self.mastering,
                "content_light": list(self.light) if self.light else None}


def guess_matrix(width: int, height: int) -> int:
    """What players assume for an untagged picture: BT.709 for HD, BT.601 for SD."""
    return BT709 if width >= 1280 or height > 576 else SMPTE170M


def decide(width: int, height: int, pix_fmt: str, *, matrix: int, range_: int, primaries: int,
           transfer: int, depth: int, chroma: str, is_rgb: bool = False,
           mastering: str | None = None, light: tuple[int, int] | None = None) -> Colour:
    """The job's :class:`Colour` from what the input's first frame says.

    ``pix_fmt`` is the decoded format (``yuvj*`` formats mean full range).
    An RGB input (``is_rgb``) needs no matrix to decode; its output is YUV 4:4:4
    with the guessed matrix, tagged.
    """
    guessed = False
    if is_rgb or matrix in (0, UNSPECIFIED) or matrix not in SWS_MATRIX and matrix != BT2020_CL:
        matrix, guessed = guess_matrix(width, height), True
        chroma = "444" if is_rgb else chroma
    if matrix == BT2020_CL:
        raise ValueError("BT.2020 constant-luminance video cannot be converted exactly; "
                         "convert it to BT.2020 non-constant luminance first")
    if pix_fmt.startswith("yuvj") or range_ == RANGE_FULL and not is_rgb:
        range_ = RANGE_FULL
    else:
        range_ = RANGE_LIMITED
    if primaries in (0, UNSPECIFIED, 3):
        primaries = BT709 if matrix == BT709 else (BT2020_NCL if matrix == BT2020_NCL else SMPTE170M)
    if transfer in (0, UNSPECIFIED, 3):
        transfer = BT709
    if chroma not in ("420", "422", "444"):
        chroma = "444"
    return Colour(matrix=matrix, range=range_, primaries=primaries, transfer=transfer,
                  depth=max(8, depth), chroma=chroma, guessed=guessed, mastering=mastering, light=light)


def chroma_of(log2_w: int, log2_h: int) -> str:
    """Subsampling name from the chroma shifts of a pixel format ("420" for 1, 1)."""
    return {(1, 1): "420", (1, 0): "422", (0, 0): "444"}.get((log2_w, log2_h), "other")


def mastering_display(values: Sequence[int]) -> str | None:
    """x265's ``master-display`` string from FFmpeg's AVMasteringDisplayMetadata as 22 ints.

    The struct is R, G, B primaries and the white point as (x, y) rationals, then
    min and max luminance rationals, then has_primaries and has_luminance.
    x265 wants G, B, R, chromaticities in 1/50000 and luminances in 1/10000 cd/m².
    """
    if len(values) != 22 or not (values[20] and values[21]):
        return None
    r = [Fraction(values[i], values[i + 1] or 1) for i in range(0, 20, 2)]
    c = [round(v * 50000) for v in r[:8]]
    lo, hi = round(r[8] * 10000), round(r[9] * 10000)
    return (f"G({c[2]},{c[3]})B({c[4]},{c[5]})R({c[0]},{c[1]})WP({c[6]},{c[7]})L({hi},{lo})")


def parse_mastering(text: str) -> dict:
    """The numbers of a ``master-display`` string, for comparing two of them."""
    return {k: tuple(int(v) for v in vals.split(",")) for k, vals in re.findall(r"(\w+)\(([\d,]+)\)", text)}


def encoder_params(codec: str, colour: Colour) -> dict[str, str]:
    """Encoder-private parameters that carry the static HDR metadata into the bitstream.

    Matrix, range, primaries and transfer go through the codec context (every
    encoder writes them into its stream headers); mastering display and content
    light level need x265's or x264's own parameters (SEI messages).
    """
    params: dict[str, str] = {}
    if codec == "libx265":
        if colour.mastering:
            params["master-display"] = colour.mastering
        if colour.light:
            params["max-cll"] = f"{colour.light[0]},{colour.light[1]}"
        if colour.mastering or colour.light:
            params["hdr10"] = "1"
    elif codec == "libx264":
        if colour.mastering:
            params["mastering-display"] = colour.mastering
        if colour.light:
            params["cll"] = f"{colour.light[0]},{colour.light[1]}"
    return params


def full_range_planes(rgb, colour: Colour, chroma: str, depth: int) -> list:
    """RGB (uint8 or uint16) to full-range Y, Cb, Cr planes of ``depth`` bits, chroma box-averaged.

    Done here rather than by swscale: its full-range RGB -> YUV path biases chroma
    by about -0.6 code values (docs/colour.md), which an identity round trip shows
    as a colour cast; limited range has no such bias and stays with swscale.
    """
    import numpy as np
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    x = rgb.astype(np.float32) / np.float32(top)
    kr, kb = LUMA[colour.matrix]
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb = (b - y) / (2 * (1 - kb))
    cr = (r - y) / (2 * (1 - kr))
    if chroma in ("420", "422"):
        h, w = cb.shape
        rows = 2 if chroma == "420" else 1
        cb = cb.reshape(h // rows, rows, w // 2, 2).mean(axis=(1, 3))
        cr = cr.reshape(h // rows, rows, w // 2, 2).mean(axis=(1, 3))
    scale, mid = float(2 ** depth - 1), float(2 ** (depth - 1))
    dtype = np.uint8 if depth <= 8 else np.uint16
    return [np.clip(np.rint(p * scale + off), 0, scale).astype(dtype)
            for p, off in ((y, 0.0), (cb, mid), (cr, mid))]
