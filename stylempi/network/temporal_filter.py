"""A flow-guided temporal filter after the network: steady strokes on moving video.

A style network paints every frame on its own, so its strokes crawl and shimmer
where the picture barely moves. This filter blends each network frame ``S_t``
with the previous *output* ``O_{t-1}`` carried along the input's optical flow,
where that flow can be trusted::

    O_t = S_t + w_t * (warp(O_{t-1}, b_t) - S_t)

* the flow ``b_t`` (frame t -> t-1) is computed on the **input** frames (the
  strokes would mislead it): OpenCV DIS (preset FAST) on grey frames scaled to
  :attr:`FilterSettings.flow_height` rows, refined down to half those rows,
  then scaled back up to the frame; the masks below are computed at the
  flow's size too, which is most of the saving. The flow's error grows with
  the motion, and carried strokes follow that error, so a frame whose median
  flow exceeds :attr:`FilterSettings.fast_motion` gets its flow again, refined
  down to the full flow size, and a looser brightness check (below): a
  hand-held shot, say; a slow pan never pays for it;
* ``w_t`` is :attr:`FilterSettings.weight` where the flow is trusted and falls
  to 0 elsewhere (Ruder et al. 2016): the forward flow must undo the backward
  one (occlusions), the flow must not sit on a motion boundary, the warped
  previous input must match the current one (brightness change, newly
  uncovered things), and the source must lie inside the frame. The mask is
  soft (a Gaussian fall-off of each error) and lightly smoothed, so the weight
  never jumps between neighbouring pixels;
* the warp is bicubic: bilinear resampling, repeated frame after frame, blurs the
  carried strokes (docs/benchmarks.md, "The temporal filter");
* a scene cut (:mod:`stylempi.media.cuts`) or the first frame resets the state: that
  frame is the network's own frame, bit for bit.

Only what the filter is given decides its output: :meth:`TemporalFilter.step`
is a pure function of the frames since the last reset, so a chunk that warms
the filter up on the same frames gives the same pixels on any rank.
OpenCV runs single-threaded here, so its arithmetic does not depend on how
many threads a rank has.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Hashable

import numpy as np

#: Ruder et al. 2016, eq. (5)-(6), as in stylempi.tools.stability: occlusion and motion-boundary tolerances.
OCCLUSION_FACTOR, OCCLUSION_OFFSET = 0.01, 0.5
BOUNDARY_FACTOR, BOUNDARY_OFFSET = 0.01, 0.002


@dataclass(frozen=True)
class FilterSettings:
    """The filter's tuning (docs/benchmarks.md, "Temporal filter"); part of a job's resume key."""

    #: Largest share of the carried previous output in a frame (where the flow is trusted).
    weight: float = 0.9
    #: Rows the optical flow and the masks are computed at (frames with fewer rows: their own size).
    flow_height: int = 180
    #: OpenCV DIS preset of the flow: "ultrafast", "fast" or "medium".
    preset: str = "fast"
    #: Finest pyramid level of the flow (0: flow_height rows, 1: half...; None: the preset's own,
    #: 2 for "ultrafast" and "fast", 1 for "medium").
    finest_scale: int | None = 1
    #: Median flow length (pixels a frame at flow_height rows, as ``preset`` finds it) above which
    #: the frame's flow is computed again, refined down to ``fast_finest_scale`` (0: never).
    fast_motion: float = 1.0
    #: Finest pyramid level (0: full resolution, 1: half...) of the flow on frames that move faster
    #: than ``fast_motion``; the presets stop at 2 ("ultrafast", "fast") or 1 ("medium").
    fast_finest_scale: int = 0
    #: Brightness mismatch (grey levels, 0..255) at which the weight falls to exp(-1/2) of its top.
    brightness_sigma: float = 12.0
    #: The same on frames that move faster than ``fast_motion``: there the input's motion blur
    #: changes with the camera's speed and the flow's sub-pixel error shifts steep texture, which
    #: is no occlusion (the forward-backward test still catches what the flow cannot follow).
    fast_brightness_sigma: float = 30.0
    #: Frames run through the filter before a chunk that starts mid-shot (never across a cut).
    warmup: int = 24
    #: Unsharp-mask amount given back to the carried frame, against the blur that repeated
    #: resampling along an imperfect flow accumulates (0: none). Kept below 1/weight - 1 (+ the
    #: resampling's own loss), so the loop's gain stays under 1 at every spatial frequency.
    sharpen: float = 0.5
    #: Share of the network frame's fine-detail amplitude the restoration aims at.
    detail_target: float = 0.9
    #: Interpolation of the carried output: "cubic" or "linear".
    interpolation: str = "cubic"

    def as_dict(self) -> dict:
        return asdict(self)


def _cv2():
    import cv2  # a core dependency (opencv-python-headless)
    cv2.setNumThreads(1)
    return cv2


def eight_bit(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame as 8-bit (deep inputs reach the network as 16-bit RGB): flow and cut scores
    need no more precision than that."""
    return rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


class TemporalFilter:
    """The recursive filter of the module docstring; one per stream of consecutive frames."""

    def __init__(self, settings: FilterSettings = FilterSettings(), remember: int = 0):
        """``remember``: how many recent frame pairs keep their flow and weight, and frames their
        network frame's detail energy (see :meth:`step`'s key)."""
        self.settings = settings
        self._remember = remember
        self._motions: dict[tuple[Hashable, Hashable], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._detail_energies: dict[Hashable, np.ndarray] = {}
        self._cv2 = _cv2()
        presets = {"ultrafast": self._cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                   "fast": self._cv2.DISOPTICAL_FLOW_PRESET_FAST, "medium": self._cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        self._dis = self._cv2.DISOpticalFlow_create(presets[settings.preset])
        if settings.finest_scale is not None:
            self._dis.setFinestScale(settings.finest_scale)
        self._fast_dis = self._cv2.DISOpticalFlow_create(presets[settings.preset])
        self._fast_dis.setFinestScale(settings.fast_finest_scale)
        self._grid: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame comes out as the network made it."""
        self._previous_grey: np.ndarray | None = None
        self._previous_out: np.ndarray | None = None
        self._previous_key: Hashable | None = None

    def _xy(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if (h, w) not in self._grid:
            self._grid[(h, w)] = _grid(h, w)
        return self._grid[(h, w)]

    def _small_grey(self, rgb: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        grey = cv2.cvtColor(np.ascontiguousarray(eight_bit(rgb)), cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        rows = self.settings.flow_height
        if h > rows:
            grey = cv2.resize(grey, (max(8, round(w * rows / h)), rows), interpolation=cv2.INTER_AREA)
        return grey

    def weights(self, previous_grey: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(backward flow t -> t-1, blend weight in [0, weight]) at the flow's resolution."""
        bu, bv, trust = self._motion_planes(previous_grey, grey)
        return self._cv2.merge((bu, bv)), trust

    def _motion_planes(self, previous_grey: np.ndarray, grey: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`weights` with the flow as two contiguous planes (x, y), as the warp takes them."""
        cv2 = self._cv2
        s = self.settings
        backward = self._dis.calc(grey, previous_grey, None)
        dis, sigma = self._dis, s.brightness_sigma
        # the median over every 4th row and column: cheap, and a pure function of the frames
        sample = backward[::4, ::4]
        if s.fast_motion > 0 and np.median(np.hypot(sample[..., 0], sample[..., 1])) > s.fast_motion:
            dis, sigma = self._fast_dis, s.fast_brightness_sigma
            backward = dis.calc(grey, previous_grey, None)
        forward = dis.calc(previous_grey, grey, None)
        h, w = grey.shape
        xs, ys = self._xy(h, w)
        # One contiguous plane per flow component: numpy is several times slower on the
        # interleaved (H, W, 2) views, and this runs on every frame.
        bu, bv = cv2.split(backward)
        mx, my = xs + bu, ys + bv
        fu, fv = cv2.split(cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        # Occlusion: the forward flow where a pixel came from must bring it back.
        b2 = bu * bu + bv * bv
        du, dv = fu + bu, fv + bv
        score = (du * du + dv * dv) / (OCCLUSION_FACTOR * (fu * fu + fv * fv + b2) + OCCLUSION_OFFSET)
        # Motion boundary: a steep flow gradient means two motions meet.
        gy_u, gx_u = np.gradient(bu)
        gy_v, gx_v = np.gradient(bv)
        score += (gx_u * gx_u + gy_u * gy_u + gx_v * gx_v + gy_v * gy_v) / (BOUNDARY_FACTOR * b2 + BOUNDARY_OFFSET)
        # Brightness: what the flow brings must look like what is there.
        warped_grey = cv2.remap(previous_grey.astype(np.float32), mx, my, cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        bright = cv2.subtract(warped_grey, grey, dtype=cv2.CV_32F) * np.float32(1.0 / sigma)
        score += bright * bright
        inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        trust = np.exp(score * np.float32(-0.5)) * inside
        trust = cv2.GaussianBlur(trust, (0, 0), 1.0)
        return bu, bv, trust * np.float32(s.weight)

    def _restore_detail(self, out: np.ndarray, styled: np.ndarray, key: Hashable | None = None) -> np.ndarray:
        """Give back the fine detail the blend lost, locally, up to the network frame's own.

        Strokes carried along a flow that is off by a fraction of a pixel, frame after frame,
        diffuse: the output grows softer than any network frame. The local energy of the fine
        detail (frame minus its Gaussian blur, sigma 1) of the output is raised to that of the
        network frame, by a gain of at most 1 + ``sharpen`` and never below 1; the gain is set per
        8x8 block and smoothed, so it changes slowly in space and (as the style's texture does)
        in time. It only amplifies detail that is there, carried, so it stays steady.
        """
        cv2 = self._cv2
        h, w = out.shape[:2]
        small = (max(1, w // 8), max(1, h // 8))
        o = out.astype(np.float32)
        detail = o - cv2.GaussianBlur(o, (0, 0), 1.0)
        # Block energies: an area resize of each channel's square, then the channels' sum (the
        # same sums as summing the channels first, without a slow reduction over the last axis).
        e_out = cv2.resize(detail * detail, small, interpolation=cv2.INTER_AREA).sum(axis=-1)
        e_ref = self._remembered(self._detail_energies, key, lambda: self._detail_energy(styled, small))
        gain = self.settings.detail_target * np.sqrt((e_ref + 1.0) / (e_out + 1.0))
        gain = cv2.GaussianBlur(np.clip(gain, 1.0, 1.0 + self.settings.sharpen), (0, 0), 1.0)
        gain = cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR) - np.float32(1.0)
        # Rounded to nearest and saturated to the frame's type in the same pass.
        # (cv2.multiply of 3-channel planes: numpy's broadcast over the last axis is several times slower)
        boost = cv2.multiply(detail, cv2.merge((gain, gain, gain)))
        return cv2.add(o, boost, dtype=cv2.CV_8U if out.dtype == np.uint8 else cv2.CV_16U)

    def _detail_energy(self, styled: np.ndarray, small: tuple[int, int]) -> np.ndarray:
        """The network frame's fine-detail energy per 8x8 block (see :meth:`_restore_detail`)."""
        cv2 = self._cv2
        s = styled.astype(np.float32)
        ref = s - cv2.GaussianBlur(s, (0, 0), 1.0)
        return cv2.resize(ref * ref, small, interpolation=cv2.INTER_AREA).sum(axis=-1)

    def _remembered(self, cache: dict, key: Hashable | None, compute):
        """``compute()``, kept in ``cache`` under ``key`` while it is among the last ``remember`` keys."""
        if key is None or not self._remember:
            return compute()
        if key not in cache:
            cache[key] = compute()
            while len(cache) > self._remember:
                del cache[next(iter(cache))]
        return cache[key]

    def _motion(self, grey: np.ndarray, key: Hashable | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_motion_planes` from the previous frame to this one, remembered by the two frames' keys."""
        pair = None if key is None or self._previous_key is None else (self._previous_key, key)
        previous = self._previous_grey
        return self._remembered(self._motions, pair, lambda: self._motion_planes(previous, grey))

    def step(self, rgb: np.ndarray, styled: np.ndarray, cut: bool = False, key: Hashable | None = None
             ) -> np.ndarray:
        """The output frame for input ``rgb`` whose network frame is ``styled`` (both HxWx3 uint8).

        ``cut``: a new shot starts here (the filter resets first). ``key`` names the frame (its
        timestamp; a key always comes with the same input and network frame): the flow and weight
        between two frames depend on those frames alone, and the network frame's detail energy on
        that frame, so when they come again (a chunk's warm-up over frames this filter just
        filtered as the chunk before's tail, stylempi.job.worker) they are reused, which is most
        of the cost.
        """
        cv2 = self._cv2
        grey = self._small_grey(rgb)
        if cut or self._previous_out is None or self._previous_out.shape != styled.shape:
            self._previous_grey, self._previous_out, self._previous_key = grey, styled, key
            return styled
        bu, bv, weight = self._motion(grey, key)
        h, w = styled.shape[:2]
        fh, fw = grey.shape
        if (fh, fw) != (h, w):
            # one 2-channel resize: its rounding differs from two 1-channel ones
            bu, bv = cv2.split(cv2.resize(cv2.merge((bu, bv)), (w, h), interpolation=cv2.INTER_LINEAR))
            bu *= w / fw
            bv *= h / fh
            weight = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)
        xs, ys = self._xy(h, w)
        interp = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR, "lanczos": cv2.INTER_LANCZOS4}[self.settings.interpolation]
        # The carried frame is the previous output as written (rounded), so the state is exactly
        # what a viewer saw; cubic on integers rounds once per frame, a negligible noise.
        carried = cv2.remap(self._previous_out, xs + bu, ys + bv, interp, borderMode=cv2.BORDER_REPLICATE)
        if styled.dtype == np.uint8:
            out = cv2.blendLinear(carried, np.ascontiguousarray(styled), weight, 1.0 - weight)
        else:  # blendLinear takes 8-bit or float frames only
            mixed = cv2.blendLinear(carried.astype(np.float32), styled.astype(np.float32), weight, 1.0 - weight)
            out = np.clip(np.rint(mixed), 0, np.iinfo(styled.dtype).max).astype(styled.dtype)
        if self.settings.sharpen > 0:
            out = self._restore_detail(out, styled, key)
        self._previous_grey, self._previous_out, self._previous_key = grey, out, key
        return out
