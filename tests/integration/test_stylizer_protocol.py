"""A stylizer written against the documented protocol (stylempi.network.stylize.Stylizer), by this
test and not by the project, runs through run_job with every engine a CPU has, and gets frames in
the form it declares: RGB under --convert torch too."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch

import clips
from stylempi.job.run import run_job
from stylempi.options import RunOptions
from stylempi.tools.verify import verify


class Negative:
    """Every frame's negative, in whichever form it declares; it keeps what it was given."""

    device = torch.device("cpu")
    precision = "negative"
    compiled = False
    compile_seconds = 0.0

    def __init__(self, input_kind: str, batch_size: int = 3):
        self.input_kind = input_kind
        self.batch_size = batch_size
        self.seen: list = []

    def __call__(self, frames: list) -> list:
        assert len(frames) <= self.batch_size
        self.seen.extend(frames)
        if self.input_kind == "rgb":
            return [255 - f for f in frames]
        return [tuple(p.copy() for p in f) for f in frames]  # planes: the same picture


@pytest.fixture(scope="module")
def clip_and_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("protocol")
    return clips.make_clip(base / "in.mp4", frames=5, size=(64, 48)), clips.save_test_model(base / "m.pth")


def _run(tmp_path, clip, model, stylizer, **engines):
    out = tmp_path / f"out-{'-'.join(engines.values())}-{stylizer.input_kind}.mp4"
    summary = run_job(RunOptions(input=str(clip), output=str(out), model=str(model), device="cpu", quiet=True,
                                 work_dir=str(tmp_path / "work"), **engines),
                      stylizer_factory=lambda prepared, comm: stylizer)
    assert verify(str(clip), str(out))["ok"]
    return summary, out


@pytest.mark.parametrize("decode", ["cpu", "auto"])
@pytest.mark.parametrize("convert", ["ffmpeg", "torch", "auto"])
def test_an_rgb_stylizer_gets_rgb_with_every_cpu_engine(clip_and_model, tmp_path, decode, convert):
    clip, model = clip_and_model
    stylizer = Negative("rgb")
    summary, out = _run(tmp_path, clip, model, stylizer, decode=decode, convert=convert)
    assert len(stylizer.seen) == 5 and summary.frames == 5
    assert all(isinstance(f, np.ndarray) and f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in stylizer.seen)
    assert "cpu negative batch 3" in summary.engines
    # The output is the negative, through the encoder's rounding.
    assert np.abs(_first_rgb(out).astype(int) - (255 - _first_rgb(clip).astype(int))).mean() < 8


def _first_rgb(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_a_planes_stylizer_gets_the_inputs_planes(clip_and_model, tmp_path):
    clip, model = clip_and_model
    stylizer = Negative("planes")
    summary, _ = _run(tmp_path, clip, model, stylizer, decode="cpu", convert="torch")
    assert len(stylizer.seen) == 5
    y, u, v = stylizer.seen[0]
    assert y.shape == (48, 64) and u.shape == v.shape == (24, 32)


def test_a_stylizer_declaring_another_kind_is_refused(clip_and_model, tmp_path):
    from stylempi.errors import StylempiError
    clip, model = clip_and_model
    with pytest.raises(StylempiError, match="input_kind"):
        _run(tmp_path, clip, model, Negative("bgr"))
