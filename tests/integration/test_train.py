"""`stylempi train`: the loss networks, training, checkpoints and resuming."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import need_shared, stylempi
from stylempi.errors import ModelLoadFailure, UsageError
from stylempi.training.lossnet import build_lossnet, gram, load_squeezenet, squeezenet1_0_features
from stylempi.network.model import load_network, open_model
from stylempi.cli.train import add_train_arguments, train_main
from stylempi.training.train import TrainOptions, state_path, train

LOSS_WEIGHTS = ("models", "lossnet", "squeezenet1_0_caffe_bgr_fp16.pth")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _content_dir(root: Path, n: int = 4, size: int = 56) -> Path:
    """A folder of small natural-ish pictures: smooth gradients, blobs and a little noise."""
    d = root / "content"
    d.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        img = np.stack([np.sin(6 * x + i) * 0.5 + 0.5, y, (x * y + i / n) % 1], -1) * 200
        cy, cx = rng.uniform(0.2, 0.8, 2)
        img[((y - cy) ** 2 + (x - cx) ** 2) < 0.04] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"c{i}.png")
    return d


def _style_image(root: Path, size: int = 64) -> Path:
    """Strong diagonal stripes in saturated colours: a texture far from the content."""
    y, x = np.mgrid[0:size, 0:size]
    band = ((x + y) // 4) % 3
    palette = np.array([[230, 40, 30], [30, 60, 220], [250, 220, 20]], dtype=np.uint8)
    path = root / "style.png"
    Image.fromarray(palette[band]).save(path)
    return path


def _args(tmp: Path, out: Path, **over) -> TrainOptions:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    argv = ["--style", str(_style_image(tmp) if not (tmp / "style.png").exists() else tmp / "style.png"),
            "--content", str(tmp / "content"), "--out", str(out), "--loss-net", "random",
            "--width", "8", "--image-size", "48", "--batch-size", "2", "--steps", "40",
            "--style-weight", "10", "--lr", "5e-3", "--quiet", "--threads", "1",
            "--temporal-weight", "0"]  # tests/integration/test_temporal.py trains with it
    args = parser.parse_args(argv)
    for k, v in over.items():
        setattr(args, k, v)
    return TrainOptions.from_args(args)


def _mean(history, key, part):
    vals = [h[key] for h in history]
    n = max(1, len(vals) // 4)
    return sum(vals[:n]) / n if part == "first" else sum(vals[-n:]) / n


def test_random_lossnet_training_lowers_style_loss_and_checkpoint_loads(tmp_path):
    _content_dir(tmp_path)
    out = tmp_path / "m.pth"
    summary = train(_args(tmp_path, out))
    hist = summary["history"]
    assert len(hist) == 40
    assert _mean(hist, "style", "last") < 0.7 * _mean(hist, "style", "first")
    net = load_network(out.read_bytes())  # the loader `stylempi run` uses
    assert net.width == 8
    # The shipped file is a plain state_dict of tensors, no training state inside.
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not state_path(out).exists()  # removed without --keep-state


def test_squeezenet_training_lowers_style_loss(tmp_path):
    weights = need_shared(*LOSS_WEIGHTS)
    _content_dir(tmp_path, size=72)
    out = tmp_path / "sq.pth"
    args = _args(tmp_path, out, loss_net="squeezenet", loss_weights=str(weights), image_size=64,
                 steps=40, lr=1e-2, content_weight=0.1)
    summary = train(args)
    hist = summary["history"]
    assert _mean(hist, "style", "last") < 0.7 * _mean(hist, "style", "first")
    assert load_network(out.read_bytes()).width == 8


def test_resume_continues_exactly(tmp_path):
    _content_dir(tmp_path)
    full = tmp_path / "full.pth"
    train(_args(tmp_path, full, steps=12, checkpoint_every=0))
    part = tmp_path / "part.pth"
    train(_args(tmp_path, part, steps=6, keep_state=True))
    assert state_path(part).exists()
    summary = train(_args(tmp_path, part, steps=12, resume=True))
    assert summary["start"] == 6 and len(summary["history"]) == 6
    a, b = torch.load(full, weights_only=True), torch.load(part, weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_resume_refuses_other_options(tmp_path):
    _content_dir(tmp_path)
    out = tmp_path / "m.pth"
    train(_args(tmp_path, out, steps=2, keep_state=True))
    with pytest.raises(UsageError, match="width"):
        train(_args(tmp_path, out, steps=4, width=16, resume=True))


def test_video_content_and_half_checkpoint(tmp_path):
    import clips

    video = clips.basic_clip(tmp_path / "c.mp4", frames=6, size=(80, 64))
    _style_image(tmp_path)
    (tmp_path / "content").mkdir()
    out = tmp_path / "v.pth"
    summary = train(_args(tmp_path, out, content=[str(video)], steps=2, frames_per_video=3,
                          half=True))
    assert summary["images"] == 3
    assert load_network(out.read_bytes()).width == 8
    assert next(iter(torch.load(out, weights_only=True).values())).dtype == torch.float16


def test_squeezenet_matches_torchvision_layout_and_recognises_shapes():
    weights = need_shared(*LOSS_WEIGHTS)
    net = load_squeezenet(weights)
    assert set(net.style_layers) == {"1", "3", "5", "7", "9"} and net.content_layers == ("4",)
    feats = net(torch.rand(1, 3, 64, 64) * 255)
    g = gram(feats["9"])
    assert g.shape == (1, 384, 384) and torch.isfinite(g).all()
    keys = set(squeezenet1_0_features().state_dict())
    assert "3.expand3x3.weight" in keys and "12.squeeze.bias" in keys


def test_lossnet_errors(tmp_path):
    with pytest.raises(UsageError, match="--loss-weights"):
        build_lossnet("squeezenet", None)
    with pytest.raises(ModelLoadFailure, match="no such file"):
        build_lossnet("squeezenet", tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ModelLoadFailure, match="squeezenet1_0"):
        build_lossnet("squeezenet", bad)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="internet"):
            build_lossnet("vgg16")


def test_train_usage_errors(tmp_path):
    _content_dir(tmp_path)
    with pytest.raises(UsageError, match="image-size"):
        train(_args(tmp_path, tmp_path / "m.pth", image_size=30))
    with pytest.raises(UsageError, match="no such file"):
        train(_args(tmp_path, tmp_path / "m.pth", content=[str(tmp_path / "missing")]))


def test_init_takes_a_builtin_style_name(tmp_path):
    """`--init scream` starts from the built-in weights: one small step later they are still there."""
    _content_dir(tmp_path)
    out = tmp_path / "m.pth"
    train(_args(tmp_path, out, init="Scream", width=16, steps=1, lr=1e-4))
    trained = load_network(out.read_bytes()).state_dict()
    scream = open_model("scream").state_dict()
    gap = max(float((trained[k] - scream[k]).abs().max()) for k in scream if scream[k].is_floating_point())
    assert gap <= 2e-4, gap  # one Adam step moves a weight by about lr
    train(_args(tmp_path, out, width=16, steps=1, lr=1e-4))  # without --init: far from it
    fresh = load_network(out.read_bytes()).state_dict()
    assert max(float((fresh[k] - scream[k]).abs().max()) for k in scream if scream[k].is_floating_point()) > 0.1


def test_arguments_are_checked_before_the_slow_set_up(tmp_path, monkeypatch):
    """A bad --init, --style or --loss-weights fails before content is read (videos: minutes)."""
    _content_dir(tmp_path)

    def too_late(*args, **kwargs):
        raise AssertionError("the content was read before the arguments were checked")
    monkeypatch.setattr("stylempi.training.train.collect_content", too_late)
    with pytest.raises(ModelLoadFailure, match="did you mean scream"):
        train(_args(tmp_path, tmp_path / "m.pth", init="sream", width=16))
    with pytest.raises(UsageError, match="width 16, not --width 8"):
        train(_args(tmp_path, tmp_path / "m.pth", init="scream"))
    with pytest.raises(UsageError, match="--style"):
        train(_args(tmp_path, tmp_path / "m.pth", style=str(tmp_path / "missing.png")))
    with pytest.raises(ModelLoadFailure, match="--loss-weights"):
        train(_args(tmp_path, tmp_path / "m.pth", loss_net="squeezenet", loss_weights=str(tmp_path / "no.pth")))


def test_cli_train_one_line_error_and_success(tmp_path):
    _content_dir(tmp_path)
    style = _style_image(tmp_path)
    args = ["train", "--style", style, "--content", tmp_path / "content", "--out", tmp_path / "m.pth",
            "--loss-net", "random", "--width", "8", "--batch-size", "1", "--steps", "2", "--threads", "1"]
    ok = stylempi(*args, "--image-size", "32", timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout and "step" in ok.stderr  # the tqdm bar goes to stderr
    assert load_network((tmp_path / "m.pth").read_bytes()).width == 8
    bad = stylempi(*args, "--image-size", "30", timeout=120)
    assert bad.returncode == 2 and "image-size" in bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr and len(bad.stderr.strip().splitlines()) == 1
