"""Opening an input file and choosing its video stream."""
from __future__ import annotations

import os
import stat

import av

from ..errors import UsageError, VideoOpenFailure
from ._ffmpeg import ffmpeg_reason


def open_input(path: str | os.PathLike, hwaccel=None, role: str = "input") -> av.container.InputContainer:
    """Open a media file, turning every failure into one clear :class:`VideoOpenFailure`.

    ``hwaccel`` (an ``av.codec.hwaccel.HWAccel``) decodes its video on that device;
    ``role`` names the file in messages ("input", or "OUTPUT" when verify reads one)."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise VideoOpenFailure(f"{role} {path} does not exist") from None
    except OSError as exc:
        raise VideoOpenFailure(f"cannot read {role} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise VideoOpenFailure(f"{role} {path} is a directory, not a video file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device has no size: it is not "empty"
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) \
            or stat.S_ISBLK(info.st_mode) else "not a regular file"
        raise VideoOpenFailure(f"{role} {path} is {kind}: stylempi reads a video several times (to index "
                               "it, then each chunk), so save the stream to a file first")
    if info.st_size == 0:
        raise VideoOpenFailure(f"{role} {path} is empty")
    try:
        return av.open(path, metadata_errors="replace", hwaccel=hwaccel)
    except av.error.FFmpegError as exc:
        raise VideoOpenFailure(f"cannot read {path} as a video: {ffmpeg_reason(exc)}") from None


def pick_video_stream(container: av.container.InputContainer, index: int | None = None) -> av.video.stream.VideoStream:
    """The stream FFmpeg would pick (``streams.best``), or stream number ``index``."""
    videos = [s for s in container.streams.video if not _is_attached_picture(s)]
    if index is not None:
        if index < 0 or index >= len(container.streams) or container.streams[index].type != "video":
            choices = ", ".join(str(s.index) for s in videos) or "none"
            raise UsageError(f"--video-stream {index} is not a video stream of {container.name} "
                             f"(video streams: {choices})")
        return container.streams[index]
    if not videos:
        raise VideoOpenFailure(f"{container.name} holds no video stream "
                               "(an audio-only file or a document?); give a video file")
    best = container.streams.best("video")
    return best if best is not None and not _is_attached_picture(best) else videos[0]


def _is_attached_picture(stream) -> bool:
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except Exception:  # noqa: BLE001 - older PyAV without dispositions
        return False

