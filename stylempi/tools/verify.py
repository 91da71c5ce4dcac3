"""Check that an output video is the input, frame for frame, in a new style.

``verify`` decodes both files completely and compares what must not change:
the frame count and every frame's timestamp (within half a tick of the input's
time base, or half a millisecond where the output's container rounds to 1 ms
ticks, as Matroska does: see :func:`timestamp_tolerance`), the displayed size,
the sample aspect ratio, the rotation, every audio packet byte for byte (AAC
payloads without the ADTS headers that MPEG-TS adds), and the picture's
description: colour matrix, range, primaries, transfer, bit depth and static
HDR metadata, as a player shows them (an untagged field reads as players guess
it). Subtitle packets are compared where the output container can hold them.

Pixels are not compared: they are meant to differ. So verify cannot see which
input frame an output frame was made from: frames reordered or duplicated with
their timestamps kept pass (:data:`NOT_CHECKED`, also in the report).
"""
from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

from ..colour.matrices import MATRIX_NAMES, PRIMARIES_NAMES, RANGE_NAMES, TRANSFER_NAMES
from ..errors import VideoOpenFailure
from ..media import frame_colour, open_input, output_format, pick_video_stream
from ..media.containers import COARSEST_CONTAINER_TICK, timestamp_tolerance  # noqa: F401 - verify's interface


#: What a passing report does not vouch for; printed in the report itself.
NOT_CHECKED = ["pixels: which input frame each output frame was stylized from (frames swapped or "
               "duplicated in place, keeping their timestamps, pass)"]

def _video_facts(path: str, stream_index: int | None, role: str = "input") -> dict:
    with open_input(path, role=role) as container:
        stream = pick_video_stream(container, stream_index)
        stream.thread_type = "AUTO"
        time_base = Fraction(stream.time_base)
        times: list[Fraction] = []
        sizes: set[tuple[int, int]] = set()
        rotation = None
        for frame in container.decode(stream):
            if frame.pts is None:
                times.append(Fraction(-1))
                continue
            times.append(frame.pts * time_base)
            sizes.add((frame.width, frame.height))
            if rotation is None:
                rotation = int(round(frame.rotation or 0)) % 360
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        return {"stream": stream.index, "time_base": time_base, "times": times, "sizes": sizes,
                "rotation": rotation or 0, "sar": Fraction(sar) if sar and sar.numerator else Fraction(1)}


def _packet_streams(path: str, kind: str) -> list[dict]:
    with open_input(path) as container:
        streams = [s for s in container.streams if s.type == kind]
        facts = {s.index: {"index": s.index, "codec": s.codec_context.name, "time_base": Fraction(s.time_base),
                           "hashes": [], "times": []} for s in streams}
        if streams:
            for packet in container.demux(*streams):
                if packet.size == 0:
                    continue
                data = bytes(packet)
                if kind == "subtitle" and len(data) <= 2:
                    continue  # empty mov_text cues that MP4 muxers insert between subtitles
                entry = facts[packet.stream_index]
                if entry["codec"] == "aac":
                    data = _without_adts(data)
                entry["hashes"].append(hashlib.sha256(data).hexdigest())
                ts = packet.pts if packet.pts is not None else packet.dts
                entry["times"].append(None if ts is None else ts * entry["time_base"])
        return [facts[s.index] for s in streams]


def _without_adts(data: bytes) -> bytes:
    """An AAC frame's payload: MPEG-TS carries AAC with a 7- or 9-byte ADTS header, MP4 without."""
    if len(data) > 7 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return data[7 if data[1] & 1 else 9:]
    return data


def _colour_facts(path: str, stream_index: int | None) -> dict:
    """What a file's picture means (untagged fields read as players guess them), and its raw tags,
    both from its first frame."""
    with open_input(path) as container:
        stream = pick_video_stream(container, stream_index)
        for frame in container.decode(stream):
            colour, _ = frame_colour(frame, frame.width, frame.height, frame.format.name, path)
            meaning = colour.describe()
            tags = {"matrix": MATRIX_NAMES.get(int(frame.colorspace), "unknown"),
                    "range": RANGE_NAMES.get(int(frame.color_range), "unknown"),
                    "primaries": PRIMARIES_NAMES.get(int(frame.color_primaries), "unknown"),
                    "transfer": TRANSFER_NAMES.get(int(frame.color_trc), "unknown")}
            if frame.format.name.startswith("yuvj"):
                tags["range"] = "pc"
            shown = {k: meaning[k] for k in ("matrix", "range", "primaries", "transfer", "bit_depth",
                                              "mastering_display", "content_light")}
            return {"shown": shown, "tags": tags}
    raise VideoOpenFailure(f"{path}: no video frame to read the colour of")


def _colour_check(source: dict, result: dict) -> dict:
    """The output must show as the input does: same matrix, range, primaries, transfer, depth
    and HDR metadata, each as tagged or, where untagged, as a player guesses it."""
    want, have = source["shown"], result["shown"]
    differ = {k: {"input": want[k], "output": have[k]} for k in want if want[k] != have[k]}
    return {"ok": not differ, "input": want, "output": have, "output_tags": result["tags"],
            **({"differ": differ} if differ else {})}


def _forced_shift(output_path: str, streams_times: list[list]) -> Fraction:
    """The shift MPEG-TS forces on an input that starts before zero (it cannot store negative
    times; the muxer moves every stream by the same amount, keeping all spacing exactly)."""
    if output_format(output_path).muxer != "mpegts":
        return Fraction(0)
    earliest = min((t for times in streams_times for t in times[:1] if t is not None), default=Fraction(0))
    return -earliest if earliest < 0 else Fraction(0)


def _times_match(a: list, b: list, tolerance: Fraction) -> tuple[bool, str]:
    if len(a) != len(b):
        return False, f"{len(a)} in input, {len(b)} in output"
    for i, (x, y) in enumerate(zip(a, b)):
        if x is None or y is None:
            continue
        if abs(x - y) > tolerance:
            return False, f"item {i}: {float(x):.6f}s in input, {float(y):.6f}s in output"
    return True, f"{len(a)} match"


def verify(input_path: str, output_path: str, video_stream: int | None = None) -> dict:
    """Compare INPUT and OUTPUT; the report's ``ok`` is True only if every check passes."""
    if not Path(output_path).exists():
        raise VideoOpenFailure(f"OUTPUT {output_path} does not exist")
    source = _video_facts(input_path, video_stream)
    result = _video_facts(output_path, None, "OUTPUT")
    in_audio, out_audio = _packet_streams(input_path, "audio"), _packet_streams(output_path, "audio")
    shift = _undo_forced_shift(output_path, source, in_audio)
    checks = _video_checks(source, result, shift)
    checks["video_streams"] = _video_streams_check(output_path)
    checks["audio"] = _audio_check(in_audio, out_audio)
    checks["colour"] = _colour_check(_colour_facts(input_path, video_stream), _colour_facts(output_path, None))
    checks["subtitles"] = _subtitles_check(input_path, output_path)
    return {"ok": all(c["ok"] for c in checks.values()), "input": str(Path(input_path)),
            "output": str(Path(output_path)), "video_stream": source["stream"],
            "frames": len(result["times"]), "checks": checks, "not_checked": NOT_CHECKED}


def _undo_forced_shift(output_path: str, source: dict, in_audio: list[dict]) -> Fraction:
    """Move the input's video and audio times by the shift OUTPUT's container forced on them
    (see :func:`_forced_shift`), so that they compare with the output's; returns the shift."""
    shift = _forced_shift(output_path, [source["times"], *(a["times"] for a in in_audio)])
    if shift:
        source["times"] = [t + shift for t in source["times"]]
        for a in in_audio:
            a["times"] = [None if t is None else t + shift for t in a["times"]]
    return shift


def _video_checks(source: dict, result: dict, shift: Fraction) -> dict[str, dict]:
    """Frame count, every timestamp, size, sample aspect ratio and rotation."""
    half_tick = timestamp_tolerance(source["time_base"], result["time_base"])
    checks: dict[str, dict] = {}
    checks["frame_count"] = {"ok": len(source["times"]) == len(result["times"]),
                             "input": len(source["times"]), "output": len(result["times"])}
    ok, detail = _times_match(source["times"], result["times"], half_tick)
    checks["timestamps"] = {"ok": ok, "detail": detail, "tolerance_s": float(half_tick),
                            **({"whole_video_shifted_s": float(shift)} if shift else {})}
    checks["size"] = {"ok": source["sizes"] == result["sizes"] and len(result["sizes"]) == 1,
                      "input": sorted(source["sizes"]), "output": sorted(result["sizes"])}
    checks["sample_aspect_ratio"] = {"ok": source["sar"] == result["sar"],
                                     "input": str(source["sar"]), "output": str(result["sar"])}
    checks["rotation"] = {"ok": source["rotation"] == result["rotation"],
                          "input": source["rotation"], "output": result["rotation"]}
    return checks


def _video_streams_check(output_path: str) -> dict:
    """OUTPUT holds exactly one video stream."""
    with open_input(output_path) as container:
        out_videos = len(container.streams.video)
    return {"ok": out_videos == 1, "output": out_videos}


def _audio_check(in_audio: list[dict], out_audio: list[dict]) -> dict:
    """Every audio track, in order: same codec, same packet bytes, same timestamps."""
    audio_ok = len(in_audio) == len(out_audio)
    details = []
    for a, b in zip(in_audio, out_audio):
        same_bytes = a["hashes"] == b["hashes"]
        times_ok, detail = _times_match(a["times"], b["times"], timestamp_tolerance(a["time_base"], b["time_base"]))
        audio_ok = audio_ok and same_bytes and times_ok and a["codec"] == b["codec"]
        details.append({"input_stream": a["index"], "output_stream": b["index"], "codec": b["codec"],
                        "packets": len(b["hashes"]), "bit_identical": same_bytes, "timestamps": detail})
    return {"ok": audio_ok, "input_tracks": len(in_audio), "output_tracks": len(out_audio), "tracks": details}


def _subtitles_check(input_path: str, output_path: str) -> dict:
    """The input's subtitle tracks that OUTPUT's container can hold, packet for packet."""
    holder = output_format(output_path)
    in_subs = [s for s in _packet_streams(input_path, "subtitle") if holder.holds(s["codec"])]
    out_subs = _packet_streams(output_path, "subtitle")
    subs_ok = len(in_subs) == len(out_subs) and all(a["hashes"] == b["hashes"] for a, b in zip(in_subs, out_subs))
    return {"ok": subs_ok, "input_tracks": len(in_subs), "output_tracks": len(out_subs)}
