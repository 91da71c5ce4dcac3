"""``stylempi export MODEL --format torchscript|onnx``.

Exports the bare network (RGB float 0..255 in, RGB out; the caller clamps to
0..255, as ``stylempi run`` does), so an exported file gives the same pixels as
the checkpoint. TorchScript files load in ``stylempi run --trust-model``
(TorchScript can run code, so it is only loaded when trusted). ONNX needs the
``onnx`` package (the ``[onnx]`` extra); its batch, height and width are dynamic
(height and width multiples of 4, as for the network itself), and onnxruntime
gives the checkpoint's pixels (tests/integration/test_preview_export.py compares them).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from ..errors import OutputFailure, UsageError
from ..network.model import open_model

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def to_torchscript(net: torch.nn.Module) -> bytes:
    """TorchScript bytes of ``net`` (scripted; traced when scripting is impossible)."""
    net = net.eval()
    try:
        module = torch.jit.script(net)
    except Exception:  # noqa: BLE001 - fall back to tracing
        with torch.no_grad():
            module = torch.jit.trace(net, torch.rand(1, 3, 64, 64) * 255)
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return buf.getvalue()


def to_onnx(net: torch.nn.Module, path: Path, opset: int = 17) -> None:
    if not onnx_available():
        raise UsageError("--format onnx needs the onnx package (pip install 'stylempi[onnx]' or "
                         "pip install onnx); --format torchscript works without it")
    example = torch.rand(1, 3, 64, 64) * 255
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    kwargs = dict(input_names=["input"], output_names=["output"], dynamic_axes=axes, opset_version=opset)
    # The TorchScript-based exporter needs no onnxscript; its notes (instance norm "exported
    # with train=True", which is what the network computes, and constant folding) would
    # only bury the one line the command prints.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net.eval(), (example,), str(path), dynamo=False, **kwargs)
        except TypeError:  # older torch without the dynamo switch
            torch.onnx.export(net.eval(), (example,), str(path), **kwargs)


def export(model: str, fmt: str, out: str | Path | None = None, *, trust: bool = False) -> Path:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    net = open_model(model, trust=trust)
    if out is None:
        out = Path(Path(model).stem + SUFFIX[fmt])
    out = Path(out)
    if not out.parent.is_dir():
        raise OutputFailure(f"--out {out}: folder {out.parent} does not exist")
    try:
        if fmt == "torchscript":
            out.write_bytes(to_torchscript(net))
        else:
            to_onnx(net, out)
    except OSError as exc:
        raise OutputFailure(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
