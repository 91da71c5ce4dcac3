"""A factory of tiny test clips, written with PyAV.

Every clip is small (tens of pixels, a handful of frames) so that the whole
suite stays fast on two cores, and its pictures move (gradients, a square and
noise that change every frame) so that stylization visibly changes them and a
misplaced frame shows.

One builder, :func:`make_clip`, takes every property as a keyword; the named
helpers below (``vfr_clip``, ``rotated_clip``...) are the cases the tests use.
Each returns the path it wrote. ``tests/integration/test_clips.py`` checks with ffprobe that
the clips really have the properties asked for (a silent assumption here would
make every test built on them meaningless).

Audio is real sound: AAC packets remuxed (never re-encoded) from
``../shared/media/nasa_13013.mp4`` when present, else a chirp plus noise
encoded to AAC. Subtitles are mov_text packets built by hand (the payload is a
16-bit big-endian length followed by UTF-8 text).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NASA = (Path(os.environ.get("STYLEMPI_SHARED") or ROOT.parent / "shared") / "media" / "nasa_13013.mp4").resolve()

#: Time base of every video stream we write (exact for 25, 30 and 29.97 fps).
VIDEO_TB = Fraction(1, 90000)

_ASS_HEADER = (
    b"[Script Info]\r\nScriptType: v4.00+\r\nPlayResX: 384\r\nPlayResY: 288\r\n\r\n"
    b"[V4+ Styles]\r\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, "
    b"OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, "
    b"Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\r\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\r\n"
    b"\r\n[Events]\r\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\r\n"
)


def picture(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """RGB frame ``index``: moving gradients, a moving square and per-frame noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int32)
    rng = np.random.default_rng(seed * 100003 + index)
    r = (x * 255 // max(width - 1, 1) + index * 11) % 256
    g = (y * 255 // max(height - 1, 1) + index * 7 + seed * 40) % 256
    b = ((x + y) * 3 + index * 19) % 256
    img = np.stack([r, g, b], axis=-1)
    side = max(4, min(width, height) // 4)
    sx = (index * 3) % max(width - side, 1)
    sy = (index * 2) % max(height - side, 1)
    img[sy:sy + side, sx:sx + side] = (255 - 20 * (index % 8), 30 * (index % 5), 200)
    img = img + rng.integers(-12, 13, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def vfr_pts(frames: int, rate: Fraction = Fraction(25)) -> list[int]:
    """Irregular presentation times (ticks of VIDEO_TB): gaps of 1, 2, 1, 3, 1.5 frame periods."""
    period = VIDEO_TB ** -1 / rate
    gaps = [Fraction(1), Fraction(2), Fraction(1), Fraction(3), Fraction(3, 2), Fraction(1)]
    out, t = [], Fraction(0)
    for i in range(frames):
        out.append(int(t))
        t += period * gaps[i % len(gaps)] + (7 if i % 4 == 1 else 0)  # odd ticks too
    return out


def _add_real_audio(out: av.container.OutputContainer, tracks: int, seconds: float,
                    start: Fraction) -> list[tuple[av.stream.Stream, list[av.Packet]]]:
    """Streams holding the nasa clip's AAC packets from 1.0 s on, shifted to ``start``."""
    src = av.open(str(NASA))
    result = []
    try:
        audio = list(src.streams.audio)[:tracks]
        for s in audio:
            ost = out.add_stream_from_template(s)
            result.append((ost, []))
        for k, s in enumerate(audio):
            tb = s.time_base
            off = int(Fraction(1) / tb)
            end = off + int(Fraction(seconds + 0.3).limit_denominator(1000) / tb) + 1
            shift = int(start / tb) - off
            src.seek(0)
            for p in src.demux(s):
                if p.pts is None or p.size == 0:
                    continue
                if p.pts < off:
                    continue
                if p.pts >= end:
                    break
                q = av.Packet(bytes(p))
                q.pts = p.pts + shift
                q.dts = (p.dts if p.dts is not None else p.pts) + shift
                q.duration = p.duration
                q.time_base = tb
                q.is_keyframe = p.is_keyframe
                result[k][1].append(q)
    finally:
        src.close()
    return result


def _mux_packets(out: av.container.OutputContainer,
                 streams: list[tuple[av.stream.Stream, list[av.Packet]]]) -> None:
    """Write prepared packets, each into its output stream."""
    for stream, packets in streams:
        for packet in packets:
            packet.stream = stream
            out.mux(packet)


def _add_synth_audio(out: av.container.OutputContainer, tracks: int, seconds: float,
                     start: Fraction) -> list[tuple[av.stream.Stream, list[av.Packet]]]:
    """AAC streams of a chirp plus noise (real, varied sound), encoded here."""
    result = []
    for k in range(tracks):
        rate = 16000 if k == 0 else 22050
        st = out.add_stream("aac", rate=rate)
        st.layout = "mono"
        cc = st.codec_context
        n = int(rate * (seconds + 0.2))
        t = np.arange(n) / rate
        rng = np.random.default_rng(k + 1)
        sig = 0.3 * np.sin(2 * np.pi * (200 + 300 * k + 600 * t) * t) + 0.05 * rng.standard_normal(n)
        frame = av.AudioFrame.from_ndarray(sig.astype(np.float32)[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = int(start * rate)
        cc.time_base = Fraction(1, rate)
        pkts = list(st.encode(frame)) + list(st.encode(None))
        result.append((st, pkts))
    return result


def make_clip(path: str | os.PathLike, *, frames: int = 7, size: tuple[int, int] = (64, 48),
              rate: Fraction | int = 25, pts: Sequence[int] | None = None,
              start: Fraction | float = 0, codec: str = "libx264", pix_fmt: str | None = None,
              gop: int = 12, audio_tracks: int = 0, real_audio: bool | None = None,
              subtitles: int = 0, rotation: int | None = None, sar: Fraction | None = None,
              video_streams: int = 1, extra_sizes: Sequence[tuple[int, int]] = (), seed: int = 0,
              bframes: bool = True) -> Path:
    """Write a clip to ``path`` (container from the extension) and return the path.

    ``pts`` are ticks of :data:`VIDEO_TB` (default: constant ``rate``), offset
    by ``start`` seconds. ``video_streams`` > 1 adds more video streams of sizes
    ``extra_sizes`` (default: smaller). ``real_audio`` None means "real when
    the nasa clip is there". ``bframes`` False gives an all-P stream.
    """
    path = Path(path)
    rate = Fraction(rate)
    start = Fraction(start).limit_denominator(90000)
    width, height = size
    if pix_fmt is None:  # 4:2:0 needs even sizes; odd ones keep full chroma
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    if pts is None:
        period = VIDEO_TB ** -1 / rate
        pts = [int(i * period) for i in range(frames)]
    assert len(pts) == frames
    offset = int(start / VIDEO_TB)
    pts = [p + offset for p in pts]
    seconds = float((pts[-1] - offset) * VIDEO_TB + 1 / rate)
    if real_audio is None:
        real_audio = NASA.exists()

    sizes = [size] + list(extra_sizes or [])
    while len(sizes) < video_streams:
        w, h = sizes[-1]
        sizes.append((max(16, w // 2 + 2), max(16, h // 2 + 2)))

    out = av.open(str(path), "w")
    try:
        vstreams = []
        for k in range(video_streams):
            w, h = sizes[k]
            st = out.add_stream(codec, rate=rate)
            st.width, st.height = w, h
            fmt = pix_fmt if k == 0 else ("yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p")
            st.pix_fmt = fmt
            cc = st.codec_context
            if codec == "mpeg2video":  # MPEG-2 only knows standard rates: ticks of one frame
                cc.time_base = 1 / rate
            else:
                cc.time_base = VIDEO_TB
                st.time_base = VIDEO_TB
            cc.gop_size = gop
            if codec in ("libx264", "libx265"):
                opts = {"preset": "veryfast", "crf": "20"}
                if codec == "libx264":
                    opts["bf"] = "2" if bframes else "0"
                    opts["sc_threshold"] = "0"
                    opts["threads"] = "1"
                else:
                    opts["x265-params"] = "log-level=error:pools=1:frame-threads=1"
                st.options = opts
            elif codec == "libvpx-vp9":
                st.options = {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}
            if sar is not None and k == 0:
                cc.sample_aspect_ratio = Fraction(sar)
            if rotation is not None and k == 0:
                st.set_display_rotation(rotation)
            vstreams.append(st)

        subs = []
        for k in range(subtitles):
            st = out.add_stream("mov_text")
            st.codec_context.subtitle_header = _ASS_HEADER
            st.time_base = Fraction(1, 1000)
            subs.append(st)

        audio = []
        if audio_tracks:
            maker = _add_real_audio if real_audio else _add_synth_audio
            audio = maker(out, audio_tracks, seconds, start)

        for k, st in enumerate(vstreams):
            w, h = sizes[k]
            for i, p in enumerate(pts):
                frame = av.VideoFrame.from_ndarray(picture(i, w, h, seed + 7 * k), format="rgb24")
                frame.pts = p
                frame.time_base = VIDEO_TB
                if codec == "mpeg2video":
                    frame.pts = int(p * VIDEO_TB * rate)
                    frame.time_base = 1 / rate
                for packet in st.encode(frame):
                    out.mux(packet)
            for packet in st.encode(None):
                out.mux(packet)

        _mux_packets(out, audio)

        for k, st in enumerate(subs):
            ms0 = int(start * 1000)
            total = max(int(seconds * 1000), 200)
            cues = [(ms0, total // 3, f"cue one, track {k}"), (ms0 + total // 2, total // 3, f"cue two {k}")]
            for t0, dur, text in cues:
                data = text.encode()
                packet = av.Packet(len(data).to_bytes(2, "big") + data)
                packet.pts = packet.dts = t0
                packet.duration = dur
                packet.time_base = Fraction(1, 1000)
                packet.stream = st
                out.mux(packet)
    finally:
        out.close()
    return path


# ---------------------------------------------------------------------------
# The named cases (each property once; the tests combine them sparingly).
# ---------------------------------------------------------------------------

def basic_clip(path, frames: int = 7, **kw) -> Path:
    """Constant 25 fps H.264, 64x48, no audio."""
    return make_clip(path, frames=frames, **kw)


def vfr_clip(path, frames: int = 12, **kw) -> Path:
    """Variable frame rate: irregular gaps between presentation times."""
    return make_clip(path, frames=frames, pts=vfr_pts(frames), **kw)


def odd_size_clip(path, frames: int = 7, **kw) -> Path:
    """67x41: odd width and height (yuv444p, libx264 refuses yuv420p there)."""
    return make_clip(path, frames=frames, size=(67, 41), **kw)


def not_mult4_clip(path, frames: int = 7, **kw) -> Path:
    """70x46: even, but not multiples of 4 (TransformerNet would change it)."""
    return make_clip(path, frames=frames, size=(70, 46), **kw)


def two_audio_clip(path, frames: int = 9, **kw) -> Path:
    """Two AAC tracks of real sound."""
    return make_clip(path, frames=frames, audio_tracks=2, **kw)


def subtitle_clip(path, frames: int = 7, **kw) -> Path:
    """One audio track plus a mov_text subtitle stream (mp4)."""
    kw.setdefault("audio_tracks", 1)
    return make_clip(path, frames=frames, subtitles=1, **kw)


def rotated_clip(path, frames: int = 7, rotation: int = 90, **kw) -> Path:
    """A display matrix saying: rotate by ``rotation`` degrees."""
    return make_clip(path, frames=frames, rotation=rotation, **kw)


def sar_clip(path, frames: int = 7, sar: Fraction = Fraction(4, 3), **kw) -> Path:
    """Non-square pixels (sample aspect ratio 4:3 by default)."""
    return make_clip(path, frames=frames, sar=sar, **kw)


def multi_video_clip(path, frames: int = 7, **kw) -> Path:
    """Two video streams (64x48 and 34x26) plus one audio track."""
    kw.setdefault("audio_tracks", 1)
    return make_clip(path, frames=frames, video_streams=2, **kw)


def start_offset_clip(path, frames: int = 7, start: float = 0.5, **kw) -> Path:
    """First presentation time at ``start`` seconds (0.5 by default)."""
    return make_clip(path, frames=frames, start=start, **kw)


def audio_only_clip(path, seconds: float = 0.5) -> Path:
    """An mp4 holding one AAC track and no video."""
    out = av.open(str(path), "w")
    try:
        maker = _add_real_audio if NASA.exists() else _add_synth_audio
        for st, packets in maker(out, 1, seconds, Fraction(0)):
            for packet in packets:
                packet.stream = st
                out.mux(packet)
    finally:
        out.close()
    return Path(path)


def png_image(path, size: tuple[int, int] = (64, 48)) -> Path:
    """A still PNG picture."""
    from PIL import Image
    Image.fromarray(picture(3, *size)).save(path)
    return Path(path)


def derive(src: str | os.PathLike, dst: str | os.PathLike, *, video_stream: int | None = None,
           drop_frame: int | None = None, shift_frame: tuple[int, int] | None = None,
           reencode_audio: bool = False, drop_audio: bool = False, keep_rotation: bool = True,
           sar: Fraction | None = None, size: tuple[int, int] | None = None,
           invert: bool = False, audio_shift: Fraction = Fraction(0)) -> Path:
    """Transcode ``src`` the way a correct stylizer would (frames re-encoded with
    the same timestamps, geometry and rotation; audio and subtitles copied packet
    for packet), optionally breaking one property on purpose.

    ``drop_frame=k`` loses frame k; ``shift_frame=(k, ticks)`` moves frame k by
    ``ticks`` of the video time base; ``reencode_audio`` decodes and re-encodes
    the audio to AAC; ``keep_rotation=False`` forgets the display matrix;
    ``sar``/``size`` override the geometry; ``invert`` changes the pictures
    (a stand-in for stylization that keeps everything else); ``audio_shift``
    moves every copied audio packet by that many seconds (bytes unchanged).
    """
    dst = Path(dst)
    inp = av.open(str(src))
    out = av.open(str(dst), "w")
    try:
        vin = inp.streams.best("video") if video_stream is None else inp.streams[video_stream]
        w, h = size or (vin.codec_context.width, vin.codec_context.height)
        vout = out.add_stream("libx264", rate=vin.average_rate or 25)
        vout.width, vout.height = w, h
        vout.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        vout.codec_context.time_base = vin.time_base
        vout.time_base = vin.time_base
        vout.options = {"preset": "veryfast", "crf": "20", "threads": "1"}
        in_sar = vin.codec_context.sample_aspect_ratio
        if sar is not None:
            vout.codec_context.sample_aspect_ratio = sar
        elif in_sar:
            vout.codec_context.sample_aspect_ratio = in_sar
        others = []
        for st in inp.streams:
            if st.type == "audio" and not drop_audio:
                if reencode_audio:
                    ost = out.add_stream("aac", rate=st.codec_context.sample_rate)
                    ost.layout = st.codec_context.layout
                    ost.options = {"b": "96k"}
                else:
                    ost = out.add_stream_from_template(st)
                others.append((st, ost))
            elif st.type == "subtitle":
                others.append((st, out.add_stream_from_template(st)))
        rotation = None
        for i, frame in enumerate(inp.decode(vin)):
            if rotation is None:
                rotation = frame.rotation
                if keep_rotation and rotation:
                    vout.set_display_rotation(rotation)
            if i == drop_frame:
                continue
            img = frame.to_ndarray(format="rgb24")
            if invert:
                img = 255 - img
            new = av.VideoFrame.from_ndarray(img, format="rgb24")
            if size:
                new = new.reformat(width=w, height=h)
            new.pts = frame.pts
            if shift_frame and shift_frame[0] == i:
                new.pts += shift_frame[1]
            new.time_base = vin.time_base
            for p in vout.encode(new):
                out.mux(p)
        for p in vout.encode(None):
            out.mux(p)
        for st, ost in others:
            inp.seek(0)
            if st.type == "audio" and reencode_audio:
                for frame in inp.decode(st):
                    frame.pts = None
                    for p in ost.encode(frame):
                        out.mux(p)
                for p in ost.encode(None):
                    out.mux(p)
                continue
            for p in inp.demux(st):
                if p.dts is None and p.pts is None:
                    continue
                if st.type == "audio" and audio_shift:
                    ticks = int(Fraction(audio_shift) / st.time_base)
                    if p.pts is not None:
                        p.pts += ticks
                    if p.dts is not None:
                        p.dts += ticks
                p.stream = ost
                out.mux(p)
    finally:
        out.close()
        inp.close()
    return dst


def test_network():
    """A width-8 TransformerNet, seeded, whose pictures are far from black.

    A plain random init gives outputs within +-3 of zero, i.e. black frames that
    all look alike (and compress to nothing): then a misplaced frame could not
    show, and a full disk would not fill. The output layer is scaled up.
    """
    import torch
    from stylempi.network.model import TransformerNet
    torch.manual_seed(1234)
    net = TransformerNet(8).eval()
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(170.0)
        net.deconv3.conv2d.bias.fill_(128.0)
    return net


def save_test_model(path: str | os.PathLike) -> Path:
    """``torch.save`` the state_dict of :func:`test_network` (a plain checkpoint)."""
    import torch
    torch.save(test_network().state_dict(), path)
    return Path(path)


# ---------------------------------------------------------------------------
# Colour cases: smooth pictures written with an explicit matrix, range and depth
# ---------------------------------------------------------------------------

def smooth_picture(index: int, width: int, height: int) -> np.ndarray:
    """16-bit RGB like footage: smooth colour gradients, a soft moving disc, fine luma texture.

    (``picture``'s per-pixel colour noise is fine for placement checks but no
    4:2:0 file can hold it, so it would measure the chroma subsampling.)
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    r = 0.15 + 0.7 * u
    g = 0.1 + 0.6 * v + 0.1 * np.sin(6 * u + index * 0.3)
    b = 0.8 - 0.5 * u * v
    cx, cy = 0.3 + 0.05 * index, 0.5
    disc = np.exp(-(((u - cx) * width) ** 2 + ((v - cy) * height) ** 2) / (2 * (0.12 * min(width, height)) ** 2))
    r, g, b = r + 0.2 * disc, g - 0.1 * disc, b - 0.3 * disc
    texture = 0.02 * np.sin(x * 0.9 + index) * np.sin(y * 0.7)
    rgb = np.clip(np.stack([r, g, b], axis=-1) + texture[..., None], 0, 1)
    return np.round(rgb * 65535).astype(np.uint16)


def colour_clip(path, *, frames: int = 6, size: tuple[int, int] = (64, 48), codec: str = "libx264",
                pix_fmt: str = "yuv420p", matrix: int | None = None, range_: int | None = None,
                primaries: int | None = None, transfer: int | None = None, mastering: str | None = None,
                light: tuple[int, int] | None = None, audio_tracks: int = 0, ramp: bool = False,
                rate: int = 25) -> Path:
    """A clip whose colour description is exactly as asked (``None``: left untagged).

    Pixels are converted with ``matrix`` and ``range_`` (BT.709 / limited where
    untagged and HD, BT.601 for SD, as players guess) so that the file *means*
    what its tags say. ``ramp`` writes a horizontal luma ramp over ~600 code
    values of a 10-bit format instead (for banding checks), neutral chroma.
    """
    path = Path(path)
    width, height = size
    sws = {1: "ITU709", 5: "ITU601", 6: "ITU601", 9: "BT2020"}
    conv = matrix if matrix is not None else (1 if width >= 1280 or height > 576 else 6)
    full = range_ == 2 or pix_fmt.startswith("yuvj")
    out = av.open(str(path), "w")
    try:
        st = out.add_stream(codec, rate=rate)
        st.width, st.height, st.pix_fmt = width, height, pix_fmt
        cc = st.codec_context
        cc.time_base = VIDEO_TB
        st.time_base = VIDEO_TB
        for attr, value in (("colorspace", matrix), ("color_range", range_), ("color_primaries", primaries),
                            ("color_trc", transfer)):
            if value is not None:
                setattr(cc, attr, value)
        params = [f"{k}={v}" for k, v in (("master-display", mastering),
                                          ("max-cll", f"{light[0]},{light[1]}" if light else None)) if v]
        if codec == "libx265":
            st.options = {"preset": "ultrafast", "crf": "0" if ramp else "12",
                          "x265-params": ":".join(["log-level=error", *params, *(["lossless=1"] if ramp else [])])}
        elif codec == "libx264":
            st.options = {"preset": "veryfast", "crf": "0" if ramp else "12", "threads": "1"}
        audio = _add_real_audio(out, audio_tracks, frames / rate, Fraction(0)) if audio_tracks and NASA.exists() \
            else (_add_synth_audio(out, audio_tracks, frames / rate, Fraction(0)) if audio_tracks else [])
        period = int(VIDEO_TB ** -1 / rate)
        for i in range(frames):
            if ramp:
                frame = av.VideoFrame(width, height, pix_fmt)
                luma = np.round(200 + np.arange(width) * 600 / max(width - 1, 1) + 0 * i).astype(np.uint16)
                planes = [np.tile(luma, (height, 1))] + [None, None]
                for k, plane in enumerate(frame.planes):
                    comp = frame.format.components[k]
                    data = planes[k] if k == 0 else np.full((comp.height, comp.width), 512, np.uint16)
                    stride = plane.line_size // 2
                    buf = np.zeros((comp.height, stride), np.uint16)
                    buf[:, :comp.width] = data
                    plane.update(buf.tobytes())
            else:
                frame = av.VideoFrame.from_ndarray(smooth_picture(i, width, height), format="rgb48le")
                frame = frame.reformat(format=pix_fmt, dst_colorspace=sws[conv],
                                       dst_color_range="JPEG" if full else "MPEG")
            frame.pts = i * period
            frame.time_base = VIDEO_TB
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
        _mux_packets(out, audio)
    finally:
        out.close()
    return path
