"""Temporal stability of a stylized video: the warping error E_warp.

The figure is the temporal warping error of Lai et al. 2018 ("Learning
Blind Video Temporal Consistency"), with the occlusion mask of Ruder et al.
2016. Feed-forward style networks are trained on still images, so small
changes between input frames move the painted strokes; this measures how
much, relative to what the input's own motion explains:

* optical flow is computed on the **input** frames (the output's strokes
  would mislead a flow estimator): OpenCV's DIS, preset MEDIUM, on the
  frames converted to grey (BT.601 weights, OpenCV's ``COLOR_RGB2GRAY``);
* for each pair (t-1, t) the backward flow t -> t-1 warps frame t-1 of the
  video being measured onto frame t (bilinear);
* a pixel counts only where the flow is trusted (Ruder et al. 2016): the
  forward flow t-1 -> t, sampled where the backward flow points, must undo
  it (``|f + b|^2 <= 0.01 (|f|^2 + |b|^2) + 0.5``), the backward flow must
  not be on a motion boundary (``|grad b|^2 <= 0.01 |b|^2 + 0.002``), and it
  must point inside frame t-1;
* E_warp of a pair is the mean squared difference, over those pixels and the
  three RGB channels on [0, 1]; a video's E_warp is the mean over its pairs.

Lower is steadier. The input's own E_warp (flow error, lighting changes,
noise) is the floor, so the useful number is the ratio output / input.
Independent noise of standard deviation s (on [0, 1]) in every frame adds
2 s^2: it is in both the frame and the warped previous one.

Everything here is pure (arrays in, numbers out) except :func:`read_frames`.
OpenCV (``opencv-python-headless``, a core dependency since the temporal
filter) computes the flow and the warp; it is imported only when a figure is
asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UsageError

#: Ruder et al. 2016, eq. (5)-(6): occlusion and motion-boundary thresholds.
OCCLUSION_FACTOR, OCCLUSION_OFFSET = 0.01, 0.5
BOUNDARY_FACTOR, BOUNDARY_OFFSET = 0.01, 0.002
#: Frames and analysis height the CLI and benchmark use unless told otherwise.
DEFAULT_FRAMES = 90
DEFAULT_HEIGHT = 360


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UsageError("the stability figure needs OpenCV, a dependency of stylempi: "
                         "pip install opencv-python-headless") from None
    return cv2


#: The flow methods a figure can be scored with: the default, and a second one to check that a
#: result steadied along one flow (the temporal filter uses DIS) holds along another.
FLOWS = ("dis", "farneback")


def flow_pair(previous: np.ndarray, current: np.ndarray, method: str = "dis") -> tuple[np.ndarray, np.ndarray]:
    """(forward t-1 -> t, backward t -> t-1) flows between two RGB uint8 frames, HxWx2.

    ``method``: "dis" (OpenCV DIS, preset MEDIUM) or "farneback" (OpenCV Farneback,
    pyramid 0.5 x 3, window 15, 3 iterations, poly_n 5, sigma 1.2).
    """
    cv2 = _cv2()
    a = cv2.cvtColor(np.ascontiguousarray(previous), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(np.ascontiguousarray(current), cv2.COLOR_RGB2GRAY)
    if method == "farneback":
        return (cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0),
                cv2.calcOpticalFlowFarneback(b, a, None, 0.5, 3, 15, 3, 5, 1.2, 0))
    if method != "dis":
        raise UsageError(f"unknown flow method {method!r}; use one of {', '.join(FLOWS)}")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None), dis.calc(b, a, None)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``p + flow(p)`` for every pixel p (bilinear, float32)."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(np.asarray(image, dtype=np.float32), xs + flow[..., 0], ys + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def valid_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of frame t whose backward flow is trusted (see the module docstring)."""
    h, w = backward.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = xs + backward[..., 0], ys + backward[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    f = warp(forward, backward)  # the forward flow at where each pixel came from
    agree = np.sum((f + backward) ** 2, axis=-1) <= \
        OCCLUSION_FACTOR * (np.sum(f ** 2, axis=-1) + np.sum(backward ** 2, axis=-1)) + OCCLUSION_OFFSET
    gy_u, gx_u = np.gradient(backward[..., 0])
    gy_v, gx_v = np.gradient(backward[..., 1])
    gradient = gx_u ** 2 + gy_u ** 2 + gx_v ** 2 + gy_v ** 2
    smooth = gradient <= BOUNDARY_FACTOR * np.sum(backward ** 2, axis=-1) + BOUNDARY_OFFSET
    return inside & agree & smooth


def pair_error(previous: np.ndarray, current: np.ndarray, backward: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared RGB difference on [0, 1] between ``current`` and the warped ``previous``, over ``mask``."""
    if not mask.any():
        return float("nan")
    warped = warp(previous, backward)
    diff = (np.asarray(current, dtype=np.float32) - warped) / 255.0
    return float(np.mean((diff ** 2)[mask]))


def strength(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Style strength: the mean absolute difference of OUTPUT from INPUT, RGB on [0, 1]."""
    return float(np.mean([np.abs(o.astype(np.float32) - i.astype(np.float32)).mean()
                          for i, o in zip(inputs, outputs)]) / 255.0)


def sharpness(frames: Sequence[np.ndarray]) -> float:
    """Sharpness: the mean gradient magnitude of the grey (RGB mean) frames, on [0, 1] per pixel.

    A filter that steadies by blurring shows here (and in :func:`strength` if it fades the style).
    """
    values = []
    for frame in frames:
        g = frame.astype(np.float32).mean(axis=-1) / 255.0
        values.append(float(np.mean(np.hypot(np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1]))))
    return float(np.mean(values))


@dataclass
class Stability:
    """E_warp of a video against the input it was made from."""

    frames: int
    output: float
    input: float
    #: Mean share of pixels that passed the mask.
    coverage: float
    #: The flow the figure was scored with (:data:`FLOWS`).
    flow: str = "dis"
    #: :func:`strength` and :func:`sharpness` of the output (None where not measured).
    strength: float | None = None
    sharpness: float | None = None

    @property
    def ratio(self) -> float:
        return self.output / self.input if self.input > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"frames": self.frames, "e_warp_output": self.output, "e_warp_input": self.input,
                "ratio": self.ratio, "mask_coverage": self.coverage, "flow": self.flow,
                "style_strength": self.strength, "sharpness": self.sharpness,
                "definition": f"Lai et al. 2018 E_warp: {FLOW_NAMES[self.flow]} flow on the input, "
                              "Ruder et al. 2016 mask, MSE of RGB on [0,1]; style strength = mean |out - in|, "
                              "sharpness = mean gradient magnitude, both on [0,1]"}


FLOW_NAMES = {"dis": "DIS MEDIUM", "farneback": "Farneback"}


def warping_error(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray] | None = None,
                  flow: str = "dis") -> Stability:
    """E_warp of ``outputs`` (default: the inputs themselves) with flow from ``inputs``.

    Both are equal-length lists of HxWx3 uint8 RGB frames of one size; at least two.
    """
    outputs = inputs if outputs is None else outputs
    if len(inputs) < 2 or len(inputs) != len(outputs):
        raise UsageError(f"the stability figure needs two or more frames in each video "
                         f"(got {len(inputs)} and {len(outputs)})")
    if inputs[0].shape != outputs[0].shape:
        raise UsageError(f"frame sizes differ: {inputs[0].shape[1]}x{inputs[0].shape[0]} and "
                         f"{outputs[0].shape[1]}x{outputs[0].shape[0]}")
    errors_in, errors_out, coverage = [], [], []
    for t in range(1, len(inputs)):
        forward, backward = flow_pair(inputs[t - 1], inputs[t], flow)
        mask = valid_mask(forward, backward)
        coverage.append(float(mask.mean()))
        errors_in.append(pair_error(inputs[t - 1], inputs[t], backward, mask))
        errors_out.append(errors_in[-1] if outputs is inputs
                          else pair_error(outputs[t - 1], outputs[t], backward, mask))
    return Stability(frames=len(inputs), output=float(np.nanmean(errors_out)),
                     input=float(np.nanmean(errors_in)), coverage=float(np.mean(coverage)), flow=flow,
                     strength=strength(inputs, outputs), sharpness=sharpness(outputs))


def analysis_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    """Frames are measured at ``max_height`` rows at most (even sizes, aspect kept)."""
    if not max_height or height <= max_height:
        return width, height
    return max(2, round(width * max_height / height / 2) * 2), max_height


def read_frames(path: str, count: int = DEFAULT_FRAMES, max_height: int | None = DEFAULT_HEIGHT,
                video_stream: int | None = None) -> list[np.ndarray]:
    """The first ``count`` frames of a video as RGB uint8, scaled to ``max_height`` rows at most."""
    from ..media import open_input, pick_video_stream

    frames: list[np.ndarray] = []
    with open_input(path) as container:
        stream = pick_video_stream(container, video_stream)
        stream.thread_type = "AUTO"
        size = None
        for frame in container.decode(stream):
            if size is None:
                size = analysis_size(frame.width, frame.height, max_height)
            frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            if len(frames) >= count:
                break
    return frames


def video_stability(input_path: str, output_path: str, count: int = DEFAULT_FRAMES,
                    max_height: int | None = DEFAULT_HEIGHT, video_stream: int | None = None,
                    flow: str = "dis") -> Stability:
    """E_warp of OUTPUT against INPUT over their first ``count`` frames."""
    inputs = read_frames(input_path, count, max_height, video_stream)
    outputs = read_frames(output_path, count, max_height)
    n = min(len(inputs), len(outputs))
    return warping_error(inputs[:n], outputs[:n], flow)


def stability_report(input_path: str, output_path: str, count: int = DEFAULT_FRAMES,
                     max_height: int | None = DEFAULT_HEIGHT, video_stream: int | None = None,
                     reference: str | None = None) -> dict:
    """``verify --stability``: E_warp with DIS and with Farneback, style strength and sharpness of
    OUTPUT; with ``reference`` (the same job made with ``--temporal off``) each also relative to it."""
    inputs = read_frames(input_path, count, max_height, video_stream)
    outputs = read_frames(output_path, count, max_height)
    n = min(len(inputs), len(outputs))
    report = warping_error(inputs[:n], outputs[:n]).as_dict()
    second = warping_error(inputs[:n], outputs[:n], "farneback")
    report["farneback"] = {"e_warp_output": second.output, "e_warp_input": second.input, "ratio": second.ratio}
    if reference is not None:
        others = read_frames(reference, count, max_height)[:n]
        if len(others) != n or others[0].shape != outputs[0].shape:
            raise UsageError(f"{reference}: the reference must have the frames and size of OUTPUT")
        ref = warping_error(inputs[:n], others)
        ref_second = warping_error(inputs[:n], others, "farneback")
        report["relative_to_reference"] = {
            "reference": reference, "e_warp": report["e_warp_output"] / ref.output if ref.output else None,
            "e_warp_farneback": second.output / ref_second.output if ref_second.output else None,
            "style_strength": report["style_strength"] / ref.strength if ref.strength else None,
            "sharpness": report["sharpness"] / ref.sharpness if ref.sharpness else None}
    return report
