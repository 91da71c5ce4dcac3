"""Scene cuts, found on the frames a rank already decodes, so the temporal filter can reset.

The score is PySceneDetect's ``ContentDetector`` measure (its defaults: the
mean absolute change of hue, saturation and value between consecutive frames,
equally weighted, on OpenCV's 8-bit HSV, frames scaled down to
:data:`ANALYSIS_WIDTH` columns first), and a cut is a score of
:data:`CUT_THRESHOLD` or more, its default threshold. It is computed here
rather than through the library so that it runs on frames in hand, one pair
at a time, with no extra pass over the file and no extra dependency; the
decision for frame t depends only on frames t-1 and t, so every chunk and
every rank that sees a pair decides it alike. Like PySceneDetect's
``AdaptiveDetector``, a cut must also stand out from the pair before it
(:data:`ADAPTIVE_RATIO`), so steady fast motion does not reset the filter on
every frame; the decision for frame t then depends on frames t-2..t only.

A slow pan or a fade changes each pair little and stays far below the
threshold (tests/unit/test_temporal_filter.py; docs/benchmarks.md, "Temporal filter").
"""
from __future__ import annotations

import numpy as np

#: PySceneDetect ContentDetector's default threshold on its content score (0..255 scale).
CUT_THRESHOLD = 27.0
#: A cut also needs a score this many times the previous pair's (PySceneDetect
#: AdaptiveDetector's default ratio, here against the pair before only, so the decision needs
#: no frame after it): a fast pan of fine texture scores high on every pair, a cut stands out.
ADAPTIVE_RATIO = 3.0
#: Frames are scored at this width (PySceneDetect's default downscaling lands near it).
ANALYSIS_WIDTH = 256


def _hsv(rgb: np.ndarray) -> np.ndarray:
    import cv2
    if rgb.dtype != np.uint8:  # deep inputs reach the network as 16-bit RGB
        rgb = (rgb >> 8).astype(np.uint8)
    h, w = rgb.shape[:2]
    if w > ANALYSIS_WIDTH:
        rgb = cv2.resize(np.ascontiguousarray(rgb), (ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w))),
                         interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV).astype(np.int16)


def content_score(previous: np.ndarray, current: np.ndarray) -> float:
    """PySceneDetect's content value between two RGB uint8 frames: mean |dH|, |dS|, |dV|, averaged."""
    a, b = _hsv(previous), _hsv(current)
    return float(np.mean(np.abs(a - b), axis=(0, 1)).mean())


class CutDetector:
    """Feed frames in order; :meth:`is_cut` says whether each one starts a new shot."""

    def __init__(self, threshold: float = CUT_THRESHOLD, ratio: float = ADAPTIVE_RATIO):
        self.threshold = threshold
        self.ratio = ratio
        self._previous: np.ndarray | None = None
        self._score: float | None = None

    def reset(self) -> None:
        self._previous = None
        self._score = None

    def is_cut(self, rgb: np.ndarray) -> bool:
        """True at a cut (and for the first frame fed: nothing before it belongs to its shot)."""
        hsv = _hsv(rgb)
        previous, self._previous = self._previous, hsv
        if previous is None or previous.shape != hsv.shape:
            self._score = None
            return True
        score, before = float(np.mean(np.abs(previous - hsv), axis=(0, 1)).mean()), self._score
        self._score = score
        return score >= self.threshold and (before is None or score >= self.ratio * before)


def last_cut(frames) -> int:
    """The index of the last of ``frames`` (in order) that starts a shot, as a fresh
    :class:`CutDetector` fed them all decides: 0 when only the first does. Nothing before it
    reaches a filter that resets there."""
    detector = CutDetector()
    return max(i for i, frame in enumerate(frames) if detector.is_cut(frame))

