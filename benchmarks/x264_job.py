"""One x264 encoder of the CPU ceiling in benchmarks/gpu.py (one process per encoder).

Encoder ``I`` of ``P`` takes the I-th contiguous share of the clip's frames (as
a rank takes its chunks), decodes it and converts it to the encoder's YUV with
the job's colour *before* timing, then prints ``ready`` and waits for a line on
its standard input, so that the P encoders start together. It encodes its
frames with exactly the settings ``stylempi run`` would pick for an ``.mp4``
output of this clip (:func:`stylempi.media.choose_encoding`, options from
:func:`stylempi.media.encoder_options`, opened by
:func:`stylempi.media.add_video_stream`), into memory, and prints one JSON line:
its frame count, the wall-clock start and end of the encode, and the seconds
the RGB-to-YUV conversion took (swscale, untimed in the encode).

    python benchmarks/x264_job.py CLIP I P
"""
from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stylempi.media import (add_video_stream, choose_encoding, decode_frames, describe_video,  # noqa: E402
                            index_frames, open_input, pick_video_stream, to_yuv)


def main() -> int:
    clip, index, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open_input(clip) as container:
        stream = pick_video_stream(container)
        info = describe_video(container, stream)
    settings = choose_encoding(Path(clip).with_suffix(".out.mp4"), info, None)
    pts = index_frames(clip, info.index).pts
    share = -(-len(pts) // count)
    mine = pts[index * share:(index + 1) * share]
    rgb = [frame for _, frame in decode_frames(clip, info.index, mine, colour=info.colour)]
    t = time.perf_counter()
    yuv = [to_yuv(frame, settings) for frame in rgb]
    convert_s = time.perf_counter() - t
    del rgb
    print("ready", flush=True)
    sys.stdin.readline()
    container = av.open(io.BytesIO(), "w", format="nut")
    started = time.time()
    stream = add_video_stream(container, settings)
    for pts_value, frame in zip(mine, yuv):
        frame.pts = pts_value
        frame.time_base = settings.time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    ended = time.time()
    container.close()
    print(json.dumps({"encoder": index, "frames": len(yuv), "start": started, "end": ended,
                      "convert_s": convert_s, "codec": settings.codec,
                      "options": dict(settings.options)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
