"""What this node's CPU changes in an encoder: x264 runs without its AVX-512 kernels.

x264's AVX-512 macroblock-tree kernel (``mbtree_propagate_list``) takes 8
macroblocks at a time, so on a row whose macroblock count is not a multiple of 8
(a frame width that is not a multiple of 128 pixels) it also reads the 1 to 7
entries after the row; after the last row of a frame those lie outside the frame's
arrays, and what they hold depends on what the process did before. The same frames
then encode to different bytes now and then, which breaks the promise that a
resumed job, or the same job on another rank count, writes the same video. With its
AVX2 kernels x264 writes the same bytes as with AVX-512 wherever that over-read does
not happen, and is no slower. Measurements: docs/benchmarks.md, "Why the media
code does what it does".
"""
from __future__ import annotations

import functools
from typing import Collection

#: The CPU flags (as Linux lists them) x264 needs before it picks its AVX-512 kernels.
X264_AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


def x264_asm(flags: Collection[str]) -> str | None:
    """x264's ``asm`` parameter for a CPU with these flags: ``AVX2`` (every kernel up to
    AVX2) where x264 would otherwise pick its AVX-512 ones, else None (x264 detects the
    CPU itself). Every CPU with these AVX-512 flags has AVX2, FMA3 and BMI2."""
    return "AVX2" if X264_AVX512 <= set(flags) else None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This node's CPU flags from /proc/cpuinfo; none where it cannot be read (not Linux),
    so that x264 is left to detect the CPU there."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def x264_params(params: str, flags: Collection[str] | None = None) -> str:
    """``params`` (an ``x264-params`` string) with this node's ``asm`` limit added, if any."""
    asm = x264_asm(cpu_flags() if flags is None else flags)
    return ":".join(filter(None, [params, f"asm={asm}" if asm else ""]))
