"""The fast style-transfer network of Johnson et al. and safe checkpoint loading.

``TransformerNet`` is the architecture of pytorch/examples ``fast_neural_style``
with one generalisation: the base channel width (32 in the paper) is a
parameter, so slim checkpoints (width 8 or 16) load too. Key names are
unchanged, so every checkpoint made for pytorch/examples loads here.

Checkpoints are untrusted input: they are read with ``weights_only=True``
(no pickle code can run). TorchScript files can execute code and are only
accepted when the caller passes ``trust=True`` (CLI: ``--trust-model``).
"""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ..errors import ModelLoadFailure
from .styles import read_model

#: The widest network a checkpoint may ask for: 8 times the paper's 32 (107 M weights, 430 MB
#: in fp32). Checked before anything is allocated: the width is read from one tensor's shape,
#: and a stride-0 tensor of any shape fits in a few bytes of a file, so a 2 MB checkpoint
#: could otherwise ask for hundreds of GB.
MAX_WIDTH = 256

#: The probe batch a TorchScript model must map to the same shape of RGB frames: two frames,
#: a size that is a multiple of 4 (as stylempi.stylize pads to), not square.
PROBE_SHAPE = (2, 3, 36, 44)

#: Keys of old pytorch/examples checkpoints: InstanceNorm running stats that
#: current PyTorch neither has nor needs (track_running_stats=False).
_STALE_KEY = re.compile(r"\.running_(mean|var)$|\.num_batches_tracked$")


class ConvLayer(nn.Module):
    """Reflection-padded convolution (keeps the borders free of artefacts)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm and an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsampling then convolution (no checkerboard artefacts)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 upsample: int | None = None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = nn.functional.interpolate(x, mode="nearest", scale_factor=float(self.upsample))
        return self.conv2d(self.reflection_pad(x))


@dataclass(frozen=True)
class Layout:
    """What running an architecture needs to know of it (stylempi.network.stylize), declared by the
    architecture as its ``LAYOUT``: its first layer, kept in fp32 under bf16/fp16 (in bf16 it alone
    loses much of the quality); its last convolution, rearranged for oneDNN on CPUs; both as paths
    of submodules. ``stride``: its total downsampling, so frames are padded to a multiple of it;
    ``min_side``: the smallest side its border layers take (reflection pads need more than the pad)."""

    first_layer: str
    last_conv: str
    stride: int
    min_side: int = 16


class TransformerNet(nn.Module):
    """Image transformation network; RGB in 0..255, RGB out (clamp to 0..255).

    Sizes that are not multiples of 4 change through the two stride-2
    convolutions and upsamplings; :mod:`stylempi.network.stylize` pads and crops.
    """

    #: The 9x9 layers at both ends (their reflection pads take 4 pixels), two stride-2 stages.
    LAYOUT = Layout(first_layer="conv1", last_conv="deconv3.conv2d", stride=4, min_side=16)

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.width = width
        self.conv1 = ConvLayer(3, w, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(w, affine=True)
        self.conv2 = ConvLayer(w, 2 * w, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(2 * w, affine=True)
        self.conv3 = ConvLayer(2 * w, 4 * w, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(4 * w, affine=True)
        self.res1 = ResidualBlock(4 * w)
        self.res2 = ResidualBlock(4 * w)
        self.res3 = ResidualBlock(4 * w)
        self.res4 = ResidualBlock(4 * w)
        self.res5 = ResidualBlock(4 * w)
        self.deconv1 = UpsampleConvLayer(4 * w, 2 * w, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(2 * w, affine=True)
        self.deconv2 = UpsampleConvLayer(2 * w, w, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(w, affine=True)
        self.deconv3 = ConvLayer(w, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def layout_of(network: nn.Module) -> Layout:
    """NETWORK's declared :class:`Layout`. A trusted TorchScript file is run as it is, padded as a
    :class:`TransformerNet` (what ``stylempi export`` writes); any other architecture must declare
    its ``LAYOUT``, or its first layer and output layer would silently run unlike the real one."""
    if isinstance(network, torch.jit.ScriptModule):
        return TransformerNet.LAYOUT
    layout = getattr(type(network), "LAYOUT", None)
    if not isinstance(layout, Layout):
        raise ModelLoadFailure(f"{type(network).__name__} does not declare its LAYOUT "
                               "(stylempi.network.model.Layout: first layer, last convolution, stride)")
    return layout


# --------------------------------------------------------------------------
# Checkpoint parsing: pure functions on state dicts (unit-testable, no I/O).
# --------------------------------------------------------------------------

def clean_state_dict(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Drop stale running-stat keys and a ``module.`` prefix (DataParallel)."""
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or _STALE_KEY.search(key):
            continue
        if key.startswith("module."):
            key = key[len("module."):]
        cleaned[key] = value  # type: ignore[assignment]
    return cleaned


def infer_width(state: Mapping[str, object]) -> int:
    """Read the base width from ``conv1.conv2d.weight`` (shape ``[width, 3, 9, 9]``)."""
    weight = state.get("conv1.conv2d.weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or tuple(weight.shape[1:]) != (3, 9, 9):
        raise ModelLoadFailure(
            "not a fast-neural-style TransformerNet checkpoint: no conv1.conv2d.weight of shape "
            "[width, 3, 9, 9]; expected a pytorch/examples fast_neural_style state_dict")
    width = int(weight.shape[0])
    if not 1 <= width <= MAX_WIDTH:
        raise ModelLoadFailure(
            f"checkpoint asks for a network of width {width} (conv1.conv2d.weight is [{width}, 3, 9, 9]); "
            f"stylempi takes widths up to {MAX_WIDTH} (the paper's is 32): the file is damaged or not a "
            "style network's weights")
    return width


def expected_shapes(width: int) -> dict[str, tuple[int, ...]]:
    """Every key of a width-WIDTH :class:`TransformerNet` and its shape, allocating nothing
    (the network is built on torch's ``meta`` device)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in TransformerNet(width).state_dict().items()}


def tensor_problem(value: torch.Tensor) -> str | None:
    """Why a weight tensor cannot be used as-is, or None.

    A sparse or complex tensor would be densified or lose its imaginary part on
    load; one NaN or Inf weight turns every output pixel into the same value
    (NaN becomes 0, Inf 255), a blank video that nothing downstream would flag.
    """
    dtype = str(value.dtype).replace("torch.", "")
    if value.layout != torch.strided:
        return f"is stored as a {str(value.layout).replace('torch.', '')} tensor, not a dense one"
    if value.is_complex():
        return f"holds complex numbers ({dtype})"
    if not value.is_floating_point():
        return f"holds {dtype} values, not floating-point weights"
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = value[~finite]
        kinds = "/".join(k for k, hit in (("NaN", bool(torch.isnan(bad).any())),
                                          ("Inf", bool(torch.isinf(bad).any()))) if hit)
        return f"holds {bad.numel()} non-finite value{'s' if bad.numel() != 1 else ''} ({kinds})"
    return None


def network_from_state_dict(state: Mapping[str, object]) -> TransformerNet:
    """Build a :class:`TransformerNet` of the right width and load ``state`` strictly."""
    state = clean_state_dict(state)
    width = infer_width(state)
    expected = expected_shapes(width)  # every shape is checked before the network is allocated
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelLoadFailure(
            f"checkpoint is not a width-{width} TransformerNet ({detail}); "
            "expected a pytorch/examples fast_neural_style state_dict")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ModelLoadFailure(
                f"checkpoint tensor {key} has shape {found}, a width-{width} TransformerNet needs {shape}")
    for key in expected:
        problem = tensor_problem(state[key])
        if problem:
            raise ModelLoadFailure(f"checkpoint tensor {key} {problem}; the checkpoint is damaged or "
                                   "not a style network's weights")
    net = TransformerNet(width)
    net.load_state_dict({k: state[k].float() for k in expected})  # type: ignore[union-attr]
    return net.eval()


# --------------------------------------------------------------------------
# Loading from bytes (rank 0 reads the file once and broadcasts the bytes).
# --------------------------------------------------------------------------

def _is_torchscript(data: bytes) -> bool:
    """TorchScript archives are zip files holding a ``code/`` or ``constants.pkl`` entry."""
    if not data.startswith(b"PK"):
        return False
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return False
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


#: Field numbers of ONNX's top-level ModelProto (onnx/onnx.proto3): 7 is the graph.
_ONNX_FIELDS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25, 26})


def is_onnx(data: bytes) -> bool:
    """Whether DATA is an ONNX model: a protobuf ModelProto, read as far as its top-level
    fields (each one of ModelProto's, the graph among them, ending exactly at the end)."""
    pos, seen = 0, set()

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while pos < len(data) and shift < 64:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise ValueError("truncated varint")

    try:
        while pos < len(data):
            key = varint()
            number, wire = key >> 3, key & 7
            if number not in _ONNX_FIELDS:
                return False
            if wire == 0:
                varint()
            elif wire == 2:
                length = varint()  # not `pos += varint()`: that would add to pos as it was before the read
                pos += length
            else:
                return False
            seen.add(number)
        return pos == len(data) and 7 in seen
    except ValueError:
        return False


def load_network(data: bytes, *, trust: bool = False, name: str = "model") -> nn.Module:
    """Turn checkpoint bytes into an eval-mode network on the CPU.

    Accepts a ``state_dict`` (optionally wrapped as ``{"state_dict": ...}`` or
    ``{"model": ...}``) of any width, and TorchScript only when ``trust`` is set.
    """
    if not data:
        raise ModelLoadFailure(f"{name} is empty; expected a fast_neural_style .pth state_dict")
    if _is_torchscript(data):
        if not trust:
            raise ModelLoadFailure(
                f"{name} is a TorchScript file, which can run code when loaded; "
                "pass --trust-model if you trust its source")
        try:
            module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise ModelLoadFailure(f"{name} is not a loadable TorchScript file: {_short(exc)}") from None
        check_frames_out(module, name)
        return module
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle refusals, corrupt zips, random bytes
        if is_onnx(data):
            raise ModelLoadFailure(
                f"{name} is an ONNX file: ONNX is an export target (`stylempi export --format onnx`, for "
                "other runtimes), not a model stylempi runs; pass the .pth checkpoint it was exported from, "
                "or a built-in style name (see `stylempi models`)") from None
        reason = _short(exc)
        if not (data.startswith(b"PK") or data.startswith(b"\x80")):
            reason = "its content is neither a PyTorch zip archive nor a pickle"
        elif ("weights_only" in reason or "Weights only" in reason or "Unsupported global" in reason
                or "GLOBAL" in reason):
            reason = "it holds Python objects other than tensors (refused: unpickling them could run code)"
        raise ModelLoadFailure(
            f"{name} is not a readable PyTorch state_dict: {reason}") from None
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict):
        raise ModelLoadFailure(
            f"{name} holds a {type(state).__name__}, not a state_dict; expected a "
            "pytorch/examples fast_neural_style checkpoint")
    return network_from_state_dict(state)


def check_frames_out(module: nn.Module, name: str) -> None:
    """Refuse a (TorchScript) network that does not map a batch of RGB frames to the same
    number of RGB frames of the same size, found on a probe batch (:data:`PROBE_SHAPE`) now
    rather than as a crash, or a wrong video, after the job started."""
    n, _, h, w = PROBE_SHAPE
    what = f"the TorchScript model {name}"
    try:
        with torch.no_grad():
            out = module(torch.rand(PROBE_SHAPE) * 255)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad model
        raise ModelLoadFailure(f"{what} fails on a probe batch of {n} RGB frames of {w}x{h}: {_short(exc)}") from None
    if not isinstance(out, torch.Tensor):
        raise ModelLoadFailure(f"{what} returns a {type(out).__name__}, not one tensor of frames; stylempi "
                               "needs N RGB frames in, N RGB frames of the same size out")
    problem = None
    if out.dim() != 4:
        problem = f"a tensor of shape {tuple(out.shape)}, not N x 3 x H x W frames"
    elif not out.is_floating_point():
        problem = f"{str(out.dtype).replace('torch.', '')} values, not floating-point pixels"
    elif out.shape[1] != 3:
        problem = f"{out.shape[1]} channel{'s' if out.shape[1] != 1 else ''}, not 3 (RGB)"
    elif out.shape[0] != n:
        problem = f"a batch of {out.shape[0]} frame{'s' if out.shape[0] != 1 else ''} for a batch of {n}"
    elif tuple(out.shape[2:]) != (h, w):
        problem = f"frames of size {out.shape[3]}x{out.shape[2]} for frames of size {w}x{h}"
    if problem:
        raise ModelLoadFailure(f"{what} returns {problem}; stylempi needs N RGB frames in, N RGB frames "
                               "of the same size out")


def open_model(spec: str, *, trust: bool = False) -> nn.Module:
    """Load ``--model`` (a file or a built-in style name, :func:`stylempi.network.styles.resolve_model`)
    as an eval-mode CPU network."""
    data, name = read_model(spec)
    return load_network(data, trust=trust, name=name)


def _short(exc: BaseException) -> str:
    """The first line of an error, without terminal escape codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return "".join(c for c in line if c.isprintable())[:200]
