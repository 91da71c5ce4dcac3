"""The temporal regularization of `stylempi train` (ReReVST's compound regularization).

The pure parts are checked where the answer is known (a whole-pixel flow moves
an image exactly; a network that commutes with motion scores zero), then a
tiny real training run shows the term doing its job: trained with it, the
network's outputs follow a moved input better than trained without it.
"""
from __future__ import annotations

import torch
import pytest

from stylempi.training.temporal import compound_loss, random_flow, warp
from test_train import _args, _content_dir
from stylempi.network.model import load_network
from stylempi.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_random_flow_is_bounded_smooth_and_reproducible():
    flow = random_flow(3, 40, 50, torch.Generator().manual_seed(5), shift=10, motion=8)
    assert flow.shape == (3, 2, 40, 50) and flow.abs().max() <= 18 + 1e-4
    assert (flow[:, :, 1:] - flow[:, :, :-1]).abs().max() < 2  # smooth: no jumps between neighbours
    again = random_flow(3, 40, 50, torch.Generator().manual_seed(5), shift=10, motion=8)
    assert torch.equal(flow, again)


def test_whole_pixel_flow_moves_the_image_exactly():
    img = torch.rand(1, 3, 12, 16) * 255
    flow = torch.zeros(1, 2, 12, 16)
    flow[:, 0], flow[:, 1] = 3, -2
    moved, inside = warp(img, flow)
    torch.testing.assert_close(moved[..., 2:, :13], img[..., :10, 3:], rtol=0, atol=1e-3)
    assert inside[..., 2:, :13].all() and not inside[..., :2, :].any() and not inside[..., 13:].any()


def test_a_network_that_commutes_with_motion_scores_zero():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=gen) * 255
    pointwise = torch.nn.Conv2d(3, 3, 1)  # per-pixel colour mapping: moves with the image
    with torch.no_grad():
        assert compound_loss(pointwise, x, pointwise(x), gen, noise=0.0) < 1e-6
        ramp = torch.linspace(0, 255, 32).view(1, 1, 1, 32)
        pinned = lambda t: t * 0.5 + ramp  # noqa: E731 - a pattern fixed to the frame, as shimmer is
        assert compound_loss(pinned, x, pinned(x), gen, noise=0.0) > 1e-3


def test_training_with_the_term_makes_outputs_follow_motion(tmp_path):
    _content_dir(tmp_path)
    scores = {}
    probe = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(9)) * 200
    for weight in (0.0, 300.0):
        out = tmp_path / f"w{weight:g}.pth"
        summary = train(_args(tmp_path, out, steps=30, temporal_weight=weight))
        assert ("temporal" in summary["last"]) == (weight > 0)
        net = load_network(out.read_bytes()).eval()
        with torch.no_grad():
            scores[weight] = float(compound_loss(net, probe, net(probe), torch.Generator().manual_seed(3)))
    assert scores[300.0] < 0.7 * scores[0.0], scores


def test_cli_documents_the_option_and_refuses_a_negative_weight(tmp_path):
    from conftest import stylempi
    assert "--temporal-weight W" in stylempi("train", "--help").stdout
    _content_dir(tmp_path)
    bad = stylempi("train", "--style", str(tmp_path / "content" / "c0.png"), "--content", str(tmp_path / "content"),
                   "--out", str(tmp_path / "m.pth"), "--loss-net", "random", "--temporal-weight", "-1")
    assert bad.returncode == 2 and bad.stderr.startswith("stylempi: error: --temporal-weight")
