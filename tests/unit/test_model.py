"""Checkpoint loading: every width, stale keys, TorchScript only when trusted, clear refusals."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from stylempi.errors import ModelLoadFailure
from stylempi.network.model import TransformerNet, infer_width, load_network
from stylempi.network.stylize import NetworkStylizer

from conftest import need_shared


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("width", [8, 16, 32])
@pytest.mark.parametrize("stale", [False, True])
def test_widths_and_stale_running_stats_load(width, stale):
    torch.manual_seed(width)
    state = TransformerNet(width).state_dict()
    if stale:  # old pytorch/examples checkpoints carry InstanceNorm running stats
        for name in ("in1", "in2", "res1.in1"):
            state[f"{name}.running_mean"] = torch.zeros(1)
            state[f"{name}.running_var"] = torch.ones(1)
    net = load_network(_bytes(state))
    assert net.width == width
    x = torch.rand(1, 3, 32, 32) * 255
    reference = TransformerNet(width)
    reference.load_state_dict(TransformerNet(width).state_dict() if False else
                              {k: v for k, v in state.items() if "running" not in k})
    assert torch.allclose(net(x), reference.eval()(x))


def test_real_third_party_checkpoints_load():
    for name, width in (("candy_nc8.pth", 8), ("mosaic_nc16.pth", 16)):
        data = need_shared("models", "pretrained", name).read_bytes()
        assert load_network(data).width == width


def test_torchscript_needs_trust():
    scripted = torch.jit.script(TransformerNet(8).eval())
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    with pytest.raises(ModelLoadFailure, match="--trust-model"):
        load_network(buf.getvalue())
    assert load_network(buf.getvalue(), trust=True) is not None


@pytest.mark.parametrize("payload,message", [
    (b"", "empty"),
    (b"\x00garbage" * 100, "not a readable"),
    (_bytes(torch.nn.Sequential(torch.nn.Linear(2, 2)).state_dict()), "not a fast-neural-style"),
    (_bytes({"conv1.conv2d.weight": torch.zeros(8, 3, 9, 9)}), "missing"),
    (_bytes([1, 2, 3]), "not a state_dict"),
])
def test_wrong_files_are_refused_clearly(payload, message):
    with pytest.raises(ModelLoadFailure, match=message):
        load_network(payload)


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle
    data = _bytes({"x": Evil()}) if False else pickle.dumps({"conv1.conv2d.weight": Evil()})
    with pytest.raises(ModelLoadFailure):
        load_network(data)
    assert not marker.exists()


def test_infer_width_reads_conv1():
    assert infer_width({"conv1.conv2d.weight": torch.zeros(24, 3, 9, 9)}) == 24
    with pytest.raises(ModelLoadFailure):
        infer_width({"conv1.conv2d.weight": torch.zeros(24, 4, 9, 9)})


@pytest.mark.parametrize("size", [(41, 67), (46, 70), (3, 5), (48, 64)])
def test_stylizer_keeps_exact_sizes(size):
    net = TransformerNet(8)
    stylizer = NetworkStylizer(net, torch.device("cpu"), "fp32", batch_size=2)
    frames = [np.random.randint(0, 255, (*size, 3), np.uint8) for _ in range(3)]
    out = stylizer(frames)
    assert len(out) == 3 and all(o.shape == (*size, 3) and o.dtype == np.uint8 for o in out)


@pytest.mark.parametrize("in_ch, out_ch, kernel, size", [
    (32, 3, 9, (2, 40, 56)),   # the network's last layer, its padded input
    (8, 3, 9, (1, 26, 34)),    # width 8
    (6, 4, 5, (1, 17, 23)),    # odd sizes: the plain convolution
])
def test_space_to_depth_layer_equals_the_plain_convolution(in_ch, out_ch, kernel, size):
    """The last layer's CPU rearrangement (stylize._SpaceToDepthConv2d) sums the same products."""
    from stylempi.network.stylize import _SpaceToDepthConv2d
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(in_ch, out_ch, kernel).eval()
    batch, height, width = size
    x = torch.randn(batch, in_ch, height, width) * 4
    with torch.inference_mode():
        expected = conv(x)
        got = _SpaceToDepthConv2d(conv)(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()


def test_stylizer_uses_the_rearranged_last_layer_on_cpu_with_the_same_pixels():
    torch.manual_seed(4)
    net = TransformerNet(8).eval()
    with torch.no_grad():  # visible pictures, as tests/clips.test_network
        net.deconv3.conv2d.weight.mul_(170.0)
        net.deconv3.conv2d.bias.fill_(128.0)
    frame = np.random.default_rng(5).integers(0, 256, (36, 52, 3), dtype=np.uint8)
    with torch.inference_mode():
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
        plain = net(x).clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    stylizer = NetworkStylizer(net, torch.device("cpu"), "fp32", 1)
    assert type(stylizer.network.deconv3.conv2d).__name__ == "_SpaceToDepthConv2d"
    got = stylizer([frame])[0]
    # Float rounding may move a value across .5 on a few pixels; never by more than 1.
    diff = np.abs(got.astype(int) - plain.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_stylizer_leaves_the_callers_network_as_it_was():
    """The layer rewrites go to the stylizer's own copy: the same network can be given to
    stylizers of other precisions, or saved, afterwards."""
    torch.manual_seed(6)
    net = TransformerNet(8).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    frame = np.random.default_rng(6).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    bf16 = NetworkStylizer(net, torch.device("cpu"), "bf16", 1)
    assert type(bf16.network.conv1).__name__ == "_Float32"
    assert type(net.conv1).__name__ == "ConvLayer" and type(net.deconv3.conv2d) is torch.nn.Conv2d
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    pristine = TransformerNet(8).eval()
    pristine.load_state_dict(before)
    after = NetworkStylizer(net, torch.device("cpu"), "fp32", 1)([frame])[0]
    np.testing.assert_array_equal(after, NetworkStylizer(pristine, torch.device("cpu"), "fp32", 1)([frame])[0])


def test_auto_precision_keeps_narrow_networks_in_fp32_on_cpus():
    """bf16 costs a width-8 network ~3 dB more than the 38 dB line (docs/benchmarks.md)."""
    from stylempi.network.placement import BF16_MIN_WIDTH, cpu_has_fast_bf16, network_width, resolve_precision
    cpu = torch.device("cpu")
    wide = "bf16" if cpu_has_fast_bf16() else "fp32"
    assert resolve_precision("auto", cpu, 8) == "fp32"
    assert resolve_precision("auto", cpu, BF16_MIN_WIDTH) == wide
    assert resolve_precision("auto", cpu, 32) == wide
    assert resolve_precision("auto", cpu, None) == wide
    assert resolve_precision("bf16", cpu, 8) == "bf16"  # asked for: given
    assert network_width(TransformerNet(8)) == 8 and network_width(torch.nn.Conv2d(3, 3, 1)) is None


def test_a_tiny_checkpoint_asking_for_a_huge_width_is_refused_before_allocating():
    # Stride-0 tensors store one value for any shape: this state is a few kB and claims a
    # network of width 100000 (terabytes once built, or once checked for NaN).
    state = {k: torch.zeros(1).expand(v.shape) for k, v in TransformerNet(8).state_dict().items()}
    state["conv1.conv2d.weight"] = torch.zeros(1, 3, 9, 9).expand(100_000, 3, 9, 9)
    data = _bytes(state)
    assert len(data) < 200_000
    with pytest.raises(ModelLoadFailure, match="width 100000"):
        load_network(data)


def test_every_shape_is_checked_against_the_width_before_allocating():
    state = TransformerNet(8).state_dict()
    state["res3.conv1.conv2d.weight"] = torch.zeros(1).expand(4096, 4096, 3, 3)  # 600 MB if materialised
    with pytest.raises(ModelLoadFailure, match="res3.conv1.conv2d.weight has shape"):
        load_network(_bytes(state))


class _Other(torch.nn.Module):
    """Another architecture, with its own layer names and a total stride of 2."""

    LAYOUT = None  # set below, once Layout is imported in the test

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(3, 4, 5, padding=2)
        self.down = torch.nn.Conv2d(4, 4, 2, stride=2)
        self.up = torch.nn.Upsample(scale_factor=2)
        self.tail = torch.nn.Sequential(torch.nn.ReflectionPad2d(2), torch.nn.Conv2d(4, 3, 5))

    def forward(self, x):
        return self.tail(self.up(self.down(self.head(x))))


def test_another_architecture_gets_the_rewrites_through_its_declared_layout():
    from stylempi.network.model import Layout
    from stylempi.network.stylize import _Float32, _SpaceToDepthConv2d, prepare_network
    _Other.LAYOUT = Layout(first_layer="head", last_conv="tail.1", stride=2, min_side=6)
    net = prepare_network(_Other(), torch.device("cpu"), "bf16", torch.channels_last)
    assert isinstance(net.head, _Float32) and isinstance(net.tail[1], _SpaceToDepthConv2d)
    frames = [np.full((7, 9, 3), 100, np.uint8)]  # odd sizes: padded to the stride, cropped back
    assert NetworkStylizer(_Other(), torch.device("cpu"), "fp32", 1)(frames)[0].shape == (7, 9, 3)


def test_an_architecture_without_a_layout_is_refused():
    class Bare(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ModelLoadFailure, match="LAYOUT"):
        NetworkStylizer(Bare(), torch.device("cpu"), "fp32", 1)
