"""Perceptual loss networks for training styles (Johnson et al.).

Three choices, all frozen and returning a dict ``{layer_name: feature}`` for
an RGB batch in 0..255:

* ``squeezenet``: SqueezeNet v1.0 defined here in plain torch (torchvision's
  ``squeezenet1_0`` key names ``features.N.*``), weights read from a file the
  user passes (``--loss-weights``). The weights follow the Caffe convention:
  **BGR** input in 0..255 minus the mean [104, 117, 123]; fp16 weights are
  widened to fp32. Works offline; the project ships no loss-network weights.
* ``vgg16``: torchvision's ImageNet VGG-16 (the network of the paper). Needs
  ``pip install torchvision`` *and internet access* the first time (torchvision
  downloads ~530 MB of weights into its cache).
* ``random``: SqueezeNet v1.0 with seeded random weights. Its Gram matrices
  still measure texture a little; it exists for tests and smoke runs.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadFailure, UsageError

LOSS_NETS = ("squeezenet", "vgg16", "random")

#: Caffe BGR mean of the SqueezeNet weights (0..255 scale, B, G, R order).
CAFFE_BGR_MEAN = (104.0, 117.0, 123.0)
#: torchvision's ImageNet normalisation for VGG-16 (RGB, 0..1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


def squeezenet1_0_features() -> nn.Sequential:
    """The ``features`` part of torchvision's ``squeezenet1_0`` (same indices)."""
    return nn.Sequential(
        nn.Conv2d(3, 96, kernel_size=7, stride=2),        # 0
        nn.ReLU(inplace=True),                             # 1
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # 2
        Fire(96, 16, 64, 64),                              # 3
        Fire(128, 16, 64, 64),                             # 4
        Fire(128, 32, 128, 128),                           # 5
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # 6
        Fire(256, 32, 128, 128),                           # 7
        Fire(256, 48, 192, 192),                           # 8
        Fire(384, 48, 192, 192),                           # 9
        Fire(384, 64, 256, 256),                           # 10
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # 11
        Fire(512, 64, 256, 256),                           # 12
    )


class LossNet(nn.Module):
    """A frozen feature extractor: ``forward(rgb_0_255) -> {layer: feature}``.

    ``style_layers`` and ``content_layers`` name the outputs (indices into
    ``features`` as strings); ``style_layer_weights`` weighs each style layer.
    """

    name: str = "lossnet"

    def __init__(self, features: nn.Sequential, style_layers: dict[str, float],
                 content_layers: tuple[str, ...]):
        super().__init__()
        last = max(int(k) for k in (*style_layers, *content_layers))
        self.features = nn.Sequential(*list(features.children())[: last + 1])
        self.style_layers = dict(style_layers)
        self.content_layers = tuple(content_layers)
        self._wanted = set(style_layers) | set(content_layers)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(rgb)
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if str(i) in self._wanted:
                out[str(i)] = x
        return out

    def train(self, mode: bool = True) -> "LossNet":  # always frozen, always eval
        return super().train(False)


class SqueezeLossNet(LossNet):
    """SqueezeNet v1.0 on Caffe BGR input.

    Style: the first ReLU (stride 2), fire2, fire4 (stride 4), fire5 and fire7
    (stride 8) -- torchvision indices 1, 3, 5, 7, 9: fine strokes to larger
    motifs. Content: fire3 (index 4, stride 4, 128 channels), the analogue of
    VGG's relu2_2 in the paper: deep enough to leave room for the style,
    shallow enough to keep the edges of the scene (index 5 lost more of it in
    our trials at the same weights).
    """

    name = "squeezenet"

    def __init__(self, features: nn.Sequential):
        super().__init__(features,
                         style_layers={"1": 1.0, "3": 1.0, "5": 1.0, "7": 1.0, "9": 1.0},
                         content_layers=("4",))
        self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1))

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb.flip(1) - self.mean  # RGB -> BGR, 0..255 minus the Caffe mean


class VGGLossNet(LossNet):
    """torchvision VGG-16: style relu1_2, relu2_2, relu3_3, relu4_3; content relu2_2 (the paper's)."""

    name = "vgg16"

    def __init__(self, features: nn.Sequential):
        super().__init__(features, style_layers={"3": 1.0, "8": 1.0, "15": 1.0, "22": 1.0},
                         content_layers=("8",))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb - self.mean) / self.std


def load_squeezenet(weights: str | Path) -> SqueezeLossNet:
    """SqueezeNet v1.0 from a torchvision-keyed state_dict file (Caffe BGR convention)."""
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadFailure(f"--loss-weights {path}: no such file; pass a SqueezeNet v1.0 state_dict "
                               "(e.g. ../shared/models/lossnet/squeezenet1_0_caffe_bgr_fp16.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, pickled code, ...
        raise ModelLoadFailure(f"--loss-weights {path} is not a readable PyTorch state_dict: "
                               f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise ModelLoadFailure(f"--loss-weights {path} holds a {type(state).__name__}, not a state_dict")
    features = squeezenet1_0_features()
    wanted = features.state_dict()
    feats = {k[len("features."):]: v for k, v in state.items()
             if isinstance(k, str) and k.startswith("features.")}
    missing = sorted(set(wanted) - set(feats))
    if missing:
        raise ModelLoadFailure(f"--loss-weights {path} is not a torchvision squeezenet1_0 state_dict "
                               f"(missing features.{missing[0]}, ...)")
    for k, v in wanted.items():
        if not isinstance(feats[k], torch.Tensor) or feats[k].shape != v.shape:
            raise ModelLoadFailure(f"--loss-weights {path}: features.{k} has the wrong shape for "
                                   "SqueezeNet v1.0 (is it v1.1?)")
    features.load_state_dict({k: feats[k].float() for k in wanted})
    return SqueezeLossNet(features)


def random_squeezenet(seed: int = 0) -> SqueezeLossNet:
    """SqueezeNet v1.0 with seeded random (Kaiming) weights: for tests only."""
    gen = torch.Generator().manual_seed(seed)
    features = squeezenet1_0_features()
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    net = SqueezeLossNet(features)
    net.mean.zero_()  # random weights: just centre the input roughly
    net.mean += 127.5
    return net


def load_vgg16() -> VGGLossNet:
    """torchvision VGG-16 with ImageNet weights (downloads ~530 MB once: needs internet)."""
    try:
        import torchvision  # noqa: F401
        from torchvision.models import VGG16_Weights, vgg16
    except ImportError:
        raise UsageError("--loss-net vgg16 needs torchvision (pip install 'stylempi[train]', and internet "
                         "to download its weights); offline, use --loss-net squeezenet --loss-weights "
                         "FILE") from None
    try:
        model = vgg16(weights=VGG16_Weights.IMAGENET1K_V1)
    except Exception as exc:  # noqa: BLE001 - no network, proxy, disk full
        raise ModelLoadFailure(
            "could not get the VGG-16 weights (torchvision downloads them from download.pytorch.org: "
            f"this needs internet): {str(exc).strip()[:160]}; offline, use --loss-net squeezenet "
            "--loss-weights FILE") from None
    return VGGLossNet(model.features)


def build_lossnet(kind: str, weights: str | Path | None = None, seed: int = 0,
                  content_layers: tuple[str, ...] | None = None) -> LossNet:
    """The loss network named ``kind`` (see :data:`LOSS_NETS`), optionally another content layer."""
    net = _build(kind, weights, seed)
    if content_layers:
        bad = [c for c in content_layers if not c.isdigit() or int(c) >= len(net.features)]
        if bad:
            raise UsageError(f"--content-layer {bad[0]}: {kind} has feature layers 0..{len(net.features) - 1}")
        net.content_layers = tuple(content_layers)
        net._wanted = set(net.style_layers) | set(content_layers)
    return net


def _build(kind: str, weights: str | Path | None, seed: int) -> LossNet:
    if kind == "squeezenet":
        if weights is None:
            raise UsageError("--loss-net squeezenet needs --loss-weights FILE (a torchvision-keyed "
                             "squeezenet1_0 state_dict, Caffe BGR convention)")
        return load_squeezenet(weights)
    if weights is not None:
        raise UsageError(f"--loss-weights only applies to --loss-net squeezenet, not {kind}")
    if kind == "vgg16":
        return load_vgg16()
    if kind == "random":
        return random_squeezenet(seed)
    raise UsageError(f"unknown loss network {kind!r}; choose one of {', '.join(LOSS_NETS)}")


def gram(feature: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``[B, C, C]`` normalised by ``C*H*W`` (size-independent)."""
    b, c, h, w = feature.shape
    f = feature.reshape(b, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


def style_distance(grams: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                   weights: dict[str, float]) -> torch.Tensor:
    """Per-image weighted relative Gram distance ``sum_l w_l ||G_l - T_l||^2 / ||T_l||^2`` ([B])."""
    total = None
    for layer, w in weights.items():
        g, t = grams[layer], target[layer].to(grams[layer].dtype)
        if t.dim() == 2:
            t = t.unsqueeze(0)
        d = ((g - t) ** 2).sum(dim=(1, 2)) / (t ** 2).sum(dim=(1, 2)).clamp_min(1e-12)
        total = w * d if total is None else total + w * d
    assert total is not None
    return total
