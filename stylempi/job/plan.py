"""Work planning: cut a video's frames into chunks and hand chunks to ranks.

Pure logic, no MPI and no I/O, so it can be tested on its own.

A *chunk* is a run of consecutive frames (in presentation order), named by the
frames' timestamps. The cut points depend only on the video (its timestamps and
keyframes) and the target chunk length, never on the number of ranks: the same
video gives the same chunks on 1 or 100 ranks, so outputs are reproducible and
a job can resume with a different rank count.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

#: Longest default target chunk length in frames: long enough that the seek to
#: the chunk's keyframe is cheap next to the network, short enough to balance load.
DEFAULT_CHUNK_FRAMES = 48
#: A short video is still cut into about this many chunks, so many ranks help.
MIN_CHUNKS = 16
#: The shortest default target chunk length, however short the video.
MIN_CHUNK_FRAMES = 8


def auto_chunk_frames(total_frames: int) -> int:
    """The default target chunk length: :data:`DEFAULT_CHUNK_FRAMES`, shorter for short videos
    (about :data:`MIN_CHUNKS` chunks, never below :data:`MIN_CHUNK_FRAMES`).

    It depends on the video alone, never on the rank count.
    """
    return max(MIN_CHUNK_FRAMES, min(DEFAULT_CHUNK_FRAMES, -(-total_frames // MIN_CHUNKS)))


@dataclass(frozen=True)
class Chunk:
    """Frames ``pts`` (stream time-base units, ascending) stylized as one segment.

    ``seek_from`` is the clean keyframe at or before the first frame, where its
    decoder starts (``None``: from the start of the stream).
    """

    index: int
    pts: tuple[int, ...]
    seek_from: int | None = None

    @property
    def frames(self) -> int:
        return len(self.pts)

    @property
    def first(self) -> int:
        return self.pts[0]

    @property
    def last(self) -> int:
        return self.pts[-1]


def plan_chunks(pts: Sequence[int], keyframes: Sequence[int] | set[int] = (),
                target: int = DEFAULT_CHUNK_FRAMES) -> list[Chunk]:
    """Cut ``pts`` (ascending, unique) into chunks of about ``target`` frames.

    A chunk ends at the first keyframe once it holds ``target`` frames, so that
    most chunks start on a keyframe and decode without waste; when keyframes are
    sparse a chunk is cut at ``2 * target`` frames regardless (its decoder then
    seeks to the keyframe before it and skips the frames in between).
    """
    if target < 1:
        raise ValueError("target chunk length must be at least 1 frame")
    if any(b <= a for a, b in zip(pts, pts[1:])):
        raise ValueError("frame timestamps must be strictly increasing")
    keys = set(keyframes)
    ordered = sorted(keys)
    chunks: list[Chunk] = []
    start = 0
    for i in range(1, len(pts) + 1):
        length = i - start
        at_end = i == len(pts)
        if at_end or (length >= target and pts[i] in keys) or length >= 2 * target:
            before = bisect.bisect_right(ordered, pts[start])
            chunks.append(Chunk(len(chunks), tuple(pts[start:i]), ordered[before - 1] if before else None))
            start = i
    return chunks


def assign_chunks(chunks: Sequence[Chunk], ranks: int, warmup: int = 0) -> list[list[Chunk]]:
    """Split ``chunks`` into ``ranks`` contiguous runs of about equal cost.

    Contiguous runs let a rank decode consecutive chunks without seeking back, and
    warm the temporal filter up only once: a run that starts after the first
    chunk first stylizes about ``warmup`` frames before it (warmup_frames), so
    such a run gets that many frames fewer, and every rank's frames plus
    warm-up come out about equal. Ranks beyond the number of chunks get an empty
    list (they stay idle).
    """
    if ranks < 1:
        raise ValueError("need at least one rank")
    total = sum(c.frames for c in chunks)
    out: list[list[Chunk]] = [[] for _ in range(ranks)]
    if not chunks:
        return out
    if len(chunks) <= ranks:
        for i, chunk in enumerate(chunks):
            out[i].append(chunk)
        return out
    # Every run gets SHARE frames of work: the first run its frames alone (it starts the video, or
    # the first pending chunk of a resume, whose warm-up is not counted), every later run its
    # frames plus a warm-up.
    share = (total + (ranks - 1) * warmup) / ranks
    later = share - warmup  # the frames of a run that pays a warm-up
    done = 0
    for chunk in chunks:
        # The chunk goes to the rank whose share holds the chunk's midpoint.
        middle = done + chunk.frames / 2
        rank = 0 if middle < share or later <= 0 else 1 + int((middle - share) / later)
        out[min(ranks - 1, rank)].append(chunk)
        done += chunk.frames
    return out


def warmup_frames(chunks: Sequence[Chunk], index: int, count: int, batch: int = 1
                  ) -> tuple[tuple[int, ...], int | None]:
    """(pts, seek_from): the frames that warm the temporal filter up before chunk ``index``,
    and the keyframe a decoder starts from to reach them.

    They are the last ``count`` or more frames before the chunk (fewer at the video's start),
    taken from the chunks before it, in the oldest of them from a multiple of ``batch`` frames
    after its start: the network then sees every warm-up frame in exactly the batch it saw it in
    when its own chunk was stylized, so a rank that has just stylized those chunks reuses their
    frames, and one that has not computes the same pixels. They depend on the plan alone, so
    every rank warms up alike.
    """
    pts: list[int] = []
    seek_from = None
    i = index - 1
    while i >= 0 and len(pts) < count:
        chunk = chunks[i]
        start = max(0, chunk.frames - (count - len(pts)))
        start -= start % max(1, batch)
        pts[:0] = chunk.pts[start:]
        seek_from = chunk.seek_from
        i -= 1
    return tuple(pts), seek_from
