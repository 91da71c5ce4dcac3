"""An oracle independent of stylempi: Debian's ffprobe/ffmpeg, via argv lists.

``stylempi verify`` is the product's own judge of an output; a bug shared by
``run`` and ``verify`` (same helper, same misreading of a time base) would hide
from it. This module answers the same questions with another program built on
another FFmpeg (Debian's /usr/bin/ffprobe, not the one inside PyAV's wheel):

* the selected video stream's frames, each with its presentation time as an
  exact rational (``pts * time_base``), width, height and sample aspect ratio;
* the stream's rotation (the display matrix side data);
* every audio (and subtitle) packet's SHA-256, so bit-identity of the copied
  audio is checked here too;
* per-frame MD5s of the decoded pictures (``ffmpeg -f framemd5``).

:func:`compare` lists every way OUTPUT differs from INPUT; empty means equal.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest

FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def need_ffprobe() -> None:
    """Skip when Debian's ffprobe is absent (``.ci/run`` installs the ffmpeg package)."""
    if not Path(FFPROBE).exists():
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg; .ci/run does it)")


def _probe(path: str | Path, *args: str) -> dict:
    cmd = [FFPROBE, "-v", "error", "-of", "json", *args, str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"ffprobe failed on {path}: {res.stderr.strip()[:500]}")
    return json.loads(res.stdout or "{}")


def _ratio(text: str | None) -> Fraction:
    if not text or text in ("N/A", "0:1", "0/1"):
        return Fraction(1)
    num, _, den = text.replace(":", "/").partition("/")
    return Fraction(int(num), int(den or 1))


def _rotation(side_data: list[dict] | None) -> int:
    for item in side_data or []:
        if item.get("side_data_type") == "Display Matrix" and "rotation" in item:
            return int(round(float(item["rotation"]))) % 360
    return 0


def streams(path: str | Path) -> list[dict]:
    """ffprobe's stream list (each a dict with index, codec_type, codec_name...)."""
    return _probe(path, "-show_streams")["streams"]


def start_time(path: str | Path) -> Fraction | None:
    fmt = _probe(path, "-show_format").get("format", {})
    value = fmt.get("start_time")
    return None if value in (None, "N/A") else Fraction(value)


@dataclass
class Video:
    index: int
    codec: str
    width: int
    height: int
    sar: Fraction
    rotation: int
    time_base: Fraction
    times: list[Fraction] = field(default_factory=list)  # per frame, in decode order
    frame_sizes: list[tuple[int, int]] = field(default_factory=list)
    frame_sars: list[Fraction] = field(default_factory=list)


def video(path: str | Path, index: int | None = None) -> Video:
    """The frames of video stream ``index`` (absolute stream index; default the first video)."""
    all_streams = streams(path)
    vids = [s for s in all_streams if s["codec_type"] == "video"
            and not s.get("disposition", {}).get("attached_pic")]
    if not vids:
        raise AssertionError(f"{path} has no video stream")
    st = vids[0] if index is None else next(s for s in all_streams if s["index"] == index)
    tb = _ratio(st["time_base"])
    data = _probe(path, "-select_streams", str(st["index"]), "-show_frames",
                  "-show_entries",
                  "frame=pts,best_effort_timestamp,pkt_duration,duration,width,height,sample_aspect_ratio")
    info = Video(index=st["index"], codec=st.get("codec_name", "?"), width=int(st["width"]),
                 height=int(st["height"]), sar=_ratio(st.get("sample_aspect_ratio")),
                 rotation=_rotation(st.get("side_data_list")), time_base=tb)
    prev_duration = None
    for fr in data.get("frames", []):
        ts = fr.get("pts")
        if ts is None:
            ts = fr.get("best_effort_timestamp")
        duration = fr.get("duration", fr.get("pkt_duration"))
        if ts is None and info.times and prev_duration is not None:
            # Debian's FFmpeg 5.1 leaves the last (flushed) frame of an MPEG-2
            # program stream without a time; newer FFmpeg gives it the previous
            # frame's time plus its duration, and so do we.
            info.times.append(info.times[-1] + prev_duration)
        elif ts is None:
            raise AssertionError(f"{path}: a frame without a timestamp")
        else:
            info.times.append(int(ts) * tb)
        prev_duration = None if duration in (None, "N/A") else int(duration) * tb
        info.frame_sizes.append((int(fr["width"]), int(fr["height"])))
        info.frame_sars.append(_ratio(fr.get("sample_aspect_ratio")))
    return info


@dataclass
class Packets:
    index: int
    codec: str
    time_base: Fraction
    hashes: list[str]
    times: list[Fraction]
    sizes: list[int]


def packets(path: str | Path, index: int) -> Packets:
    """Every packet of stream ``index`` with its SHA-256 and presentation time."""
    st = next(s for s in streams(path) if s["index"] == index)
    tb = _ratio(st["time_base"])
    data = _probe(path, "-select_streams", str(index), "-show_packets", "-show_data_hash", "sha256",
                  "-show_entries", "packet=pts,dts,size,data_hash")
    hashes, times, sizes = [], [], []
    for p in data.get("packets", []):
        hashes.append(p.get("data_hash", ""))
        ts = p.get("pts", p.get("dts"))
        times.append(None if ts is None else int(ts) * tb)
        sizes.append(int(p.get("size", 0)))
    return Packets(index, st.get("codec_name", "?"), tb, hashes, times, sizes)


def frame_md5s(path: str | Path, index: int | None = None) -> list[str]:
    """MD5 of each decoded picture of a video stream, by Debian's ffmpeg (no re-timing)."""
    spec = "0:v:0" if index is None else f"0:{index}"
    cmd = [FFMPEG, "-v", "error", "-nostdin", "-i", str(path), "-map", spec, "-fps_mode", "passthrough",
           "-f", "framemd5", "-"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"ffmpeg framemd5 failed on {path}: {res.stderr.strip()[:500]}")
    return [line.rsplit(",", 1)[1].strip() for line in res.stdout.splitlines()
            if line and not line.startswith("#")]


def best_video_index(path: str | Path) -> int:
    """The stream FFmpeg would pick (PyAV's ``streams.best('video')``): the spec's default."""
    import av
    with av.open(str(path)) as c:
        best = c.streams.best("video")
        if best is None:
            raise AssertionError(f"{path}: no video stream")
        return best.index


def _adts(path: str | Path, stream: dict) -> bytes:
    """A stream's AAC packets rewritten as one ADTS stream by Debian's ffmpeg (packet copy).

    MPEG-TS stores AAC with ADTS headers, MP4 and Matroska without: the same
    packets then hash differently, but their ADTS rewrites are equal bytes.
    """
    cmd = [FFMPEG, "-v", "error", "-nostdin", "-i", str(path), "-map", f"0:{stream['index']}", "-c", "copy",
           "-f", "adts", "-"]
    return subprocess.run(cmd, capture_output=True, timeout=300, check=True).stdout


def _close(a: Fraction, b: Fraction, tol: Fraction) -> bool:
    return abs(a - b) <= tol


def compare(inp: str | Path, out: str | Path, video_stream: int | None = None, *,
            check_audio_times: bool = True, check_subtitles: bool = True) -> list[str]:
    """Every way ``out`` fails to carry ``inp``'s frames, timestamps, geometry and audio.

    Times compare as rationals, within half a tick of the output's time base.
    Audio: the output's audio streams, in order, must hold the input's packets
    bit for bit (same SHA-256 sequence) at the same times. Subtitles: the
    non-empty packets must be carried too (mp4 adds empty ones for gaps).
    """
    problems: list[str] = []
    src_index = best_video_index(inp) if video_stream is None else video_stream
    vi = video(inp, src_index)
    out_streams = streams(out)
    out_vids = [s for s in out_streams if s["codec_type"] == "video"]
    if len(out_vids) != 1:
        problems.append(f"output has {len(out_vids)} video streams, expected 1")
        if not out_vids:
            return problems
    vo = video(out, out_vids[0]["index"])
    if (vo.width, vo.height) != (vi.width, vi.height):
        problems.append(f"size {vo.width}x{vo.height} != input {vi.width}x{vi.height}")
    bad_sizes = {s for s in vo.frame_sizes if s != (vi.width, vi.height)}
    if bad_sizes:
        problems.append(f"output frames of size {sorted(bad_sizes)}")
    if vo.sar != vi.sar:
        problems.append(f"sample aspect ratio {vo.sar} != input {vi.sar}")
    if vo.rotation != vi.rotation:
        problems.append(f"rotation {vo.rotation} != input {vi.rotation}")
    if len(vo.times) != len(vi.times):
        problems.append(f"{len(vo.times)} frames != input {len(vi.times)}")
    tol = vo.time_base / 2
    shifted = [(k, a, b) for k, (a, b) in enumerate(zip(vi.times, vo.times)) if not _close(a, b, tol)]
    if shifted:
        k, a, b = shifted[0]
        problems.append(f"{len(shifted)} frame times differ, first frame {k}: {b} s != input {a} s "
                        f"(output time base {vo.time_base})")

    in_audio = [s for s in streams(inp) if s["codec_type"] == "audio"]
    out_audio = [s for s in out_streams if s["codec_type"] == "audio"]
    if len(out_audio) != len(in_audio):
        problems.append(f"{len(out_audio)} audio streams != input {len(in_audio)}")
    for k, (si, so) in enumerate(zip(in_audio, out_audio)):
        pi, po = packets(inp, si["index"]), packets(out, so["index"])
        if po.codec != pi.codec:
            problems.append(f"audio {k}: codec {po.codec} != input {pi.codec}")
        if po.hashes != pi.hashes and not (po.codec == pi.codec == "aac" and _adts(inp, si) == _adts(out, so)):
            same = sum(a == b for a, b in zip(pi.hashes, po.hashes))
            problems.append(f"audio {k}: packets differ ({len(po.hashes)} vs {len(pi.hashes)} packets, "
                            f"{same} identical in place)")
        elif check_audio_times:
            atol = po.time_base / 2
            off = [(j, a, b) for j, (a, b) in enumerate(zip(pi.times, po.times))
                   if a is not None and b is not None and not _close(a, b, atol)]
            if off:
                j, a, b = off[0]
                problems.append(f"audio {k}: {len(off)} packet times differ, first packet {j}: {b} != {a}")

    if check_subtitles:
        in_subs = [s for s in streams(inp) if s["codec_type"] == "subtitle"]
        out_subs = [s for s in out_streams if s["codec_type"] == "subtitle"]
        if Path(out).suffix.lower() in (".mkv", ".webm"):
            # Matroska cannot hold mov_text: the spec keeps "the subtitle
            # streams the container can hold", so those may be dropped.
            in_subs = [s for s in in_subs if s.get("codec_name") != "mov_text"]
            out_subs = [s for s in out_subs if s.get("codec_name") != "mov_text"]
        if len(out_subs) != len(in_subs):
            problems.append(f"{len(out_subs)} subtitle streams != input {len(in_subs)}")
        for k, (si, so) in enumerate(zip(in_subs, out_subs)):
            pi, po = packets(inp, si["index"]), packets(out, so["index"])
            hi = [h for h, n in zip(pi.hashes, pi.sizes) if n > 2]
            ho = [h for h, n in zip(po.hashes, po.sizes) if n > 2]
            if hi != ho:
                problems.append(f"subtitle {k}: cues differ ({len(ho)} vs {len(hi)})")
    return problems


# ---------------------------------------------------------------------------
# Colour as a player shows it: YUV planes -> RGB with the file's own tags
# ---------------------------------------------------------------------------

#: Luma coefficients (Kr, Kb) of the matrices, by ffprobe's names (ITU-R BT.601/709/2020).
LUMA = {"bt709": (0.2126, 0.0722), "smpte170m": (0.299, 0.114), "bt470bg": (0.299, 0.114),
        "bt2020nc": (0.2627, 0.0593)}


def colour_tags(path: str | Path) -> dict:
    """The video stream's colour fields as ffprobe reports them (``unknown`` where untagged)."""
    s = _probe(path, "-select_streams", "v:0", "-show_streams")["streams"][0]
    return {k: s.get(k, "unknown") for k in ("color_space", "color_range", "color_primaries",
                                               "color_transfer", "pix_fmt")}


def displayed_rgb(path: str | Path, frames: int = 3) -> list:
    """The first ``frames`` pictures as a player shows them, as float RGB on a 0..255 scale.

    Independent of stylempi's conversions: planes are read raw, chroma is repeated
    to full size, and the BT.601/709/2020 equations are applied with the file's
    tags, or with a player's guess when it has none (BT.709 from 1280 wide or
    above 576 lines, limited range).
    """
    import av
    import numpy as np
    tags = colour_tags(path)
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            w, h = frame.width, frame.height
            matrix = tags["color_space"]
            if matrix not in LUMA:
                matrix = "bt709" if w >= 1280 or h > 576 else "smpte170m"
            full = tags["color_range"] == "pc" or frame.format.name.startswith("yuvj")
            depth = frame.format.components[0].bits
            planes = []
            for plane, comp in zip(frame.planes, frame.format.components):
                dtype = np.uint16 if depth > 8 else np.uint8
                a = np.frombuffer(bytes(plane), dtype).reshape(-1, plane.line_size // dtype().itemsize)
                a = a[:comp.height, :comp.width].astype(np.float64)
                a = np.repeat(np.repeat(a, -(-h // comp.height), axis=0), -(-w // comp.width), axis=1)[:h, :w]
                planes.append(a)
            y, cb, cr = planes[:3]
            scale = 2 ** (depth - 8)
            if full:
                top = 2 ** depth - 1
                y, cb, cr = y / top, (cb - 128 * scale) / top, (cr - 128 * scale) / top
            else:
                y, cb, cr = (y - 16 * scale) / (219 * scale), (cb - 128 * scale) / (224 * scale), \
                    (cr - 128 * scale) / (224 * scale)
            kr, kb = LUMA[matrix]
            r = y + 2 * (1 - kr) * cr
            b = y + 2 * (1 - kb) * cb
            g = (y - kr * r - kb * b) / (1 - kr - kb)
            out.append(np.clip(np.stack([r, g, b], axis=-1), 0, 1) * 255)
            if len(out) == frames:
                break
    return out


def picture_match(inp: str | Path, out: str | Path, frames: int = 3) -> tuple[float, list[float]]:
    """PSNR (dB, RGB, 0..255) and mean shift per channel of OUTPUT against INPUT as displayed."""
    import numpy as np
    a, b = displayed_rgb(inp, frames), displayed_rgb(out, frames)
    assert len(a) == len(b) == frames, (len(a), len(b))
    diff = np.stack(b) - np.stack(a)
    mse = float(np.mean(diff ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
    return psnr, [float(v) for v in diff.reshape(-1, 3).mean(axis=0)]


def pix_fmt_depth(pix_fmt: str) -> int:
    """Bits per sample of a pixel format name (``yuv420p10le`` -> 10)."""
    import re
    found = re.search(r"p(\d+)(le|be)$", pix_fmt)
    return int(found.group(1)) if found else 8


def first_frame_side_data(path: str | Path) -> dict:
    """HDR side data of the first frame, as ffprobe reports it (mastering display, content light)."""
    frames = _probe(path, "-select_streams", "v:0", "-show_frames", "-read_intervals", "%+#1")["frames"]
    merged: dict = {}
    for entry in frames[0].get("side_data_list", []) if frames else []:
        merged.update(entry)
    return merged


def distinct_luma(path: str | Path) -> int:
    """How many distinct luma code values the first frame has (a banding measure)."""
    import av
    import numpy as np
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        plane = frame.planes[0]
        dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
        data = np.frombuffer(bytes(plane), dtype).reshape(frame.height, -1)[:, :frame.width]
        return int(len(np.unique(data)))
