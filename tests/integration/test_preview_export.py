"""`stylempi preview`, `stylempi export` and `stylempi models`."""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clips
from conftest import need_shared, stylempi
from stylempi.errors import ModelLoadFailure, UsageError
from stylempi.cli.export import add_export_arguments, export_main
from stylempi.tools.export import export, onnx_available
from stylempi.network.model import TransformerNet, is_onnx, load_network, network_from_state_dict
from stylempi.tools.preview import GAP, contact_sheet, list_models, preview, sample_frames, stylize_image
from stylempi.network.styles import BUILTIN, builtin_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def checkpoint(tmp_path):
    """A small random width-8 network with non-trivial norms, saved as a plain state_dict."""
    torch.manual_seed(3)
    net = TransformerNet(8)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("in") or ".in" in name:
                p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    return path


def test_sample_frames_spreads_over_the_video(tmp_path):
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=25, size=(64, 48))  # 1 s at 25 fps
    shots = sample_frames(clip, 4)
    times = [t for t, _ in shots]
    assert len(shots) == 4 and times == sorted(times) and len(set(times)) == 4
    assert times[0] < 0.3 and times[-1] > 0.7
    assert shots[0][1].shape == (48, 64, 3) and shots[0][1].dtype == np.uint8
    # Each frame is the one shown at its time: compare with a plain full decode.
    import av

    with av.open(str(clip)) as c:
        decoded = {round(f.time, 4): f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
    for t, img in shots:
        np.testing.assert_array_equal(img, decoded[round(t, 4)])


def test_preview_sheet_layout(tmp_path, checkpoint):
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=20, size=(64, 48))
    out = tmp_path / "sheet.png"
    info = preview(clip, str(checkpoint), out, frames=3, height=48, device="cpu", precision="fp32")
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape == (2 * 48 + 3 * GAP, 3 * 64 + 4 * GAP, 3)
    assert info["size"] == (3 * 64 + 4 * GAP, 2 * 48 + 3 * GAP)
    net = network_from_state_dict(torch.load(checkpoint, weights_only=True))
    shots = sample_frames(clip, 3)
    for i, (_, frame) in enumerate(shots):
        x = GAP + i * (64 + GAP)
        np.testing.assert_array_equal(sheet[GAP:GAP + 48, x:x + 64], frame)  # before, top row
        np.testing.assert_array_equal(sheet[2 * GAP + 48:2 * GAP + 96, x:x + 64],
                                      stylize_image(net, frame))           # after, below


def test_preview_pixels_are_the_runs(tmp_path, monkeypatch):
    """A stylized tile of the sheet is what `stylempi run`'s own stylizer makes of the tile above
    it (same flags). 70x46 is no multiple of 4, so the network sees padded frames and every
    pixel near the borders depends on how they were padded (reflected, as run does)."""
    from stylempi.job.comm import get_comm
    from stylempi.job.run import RunOptions, build_stylizer, prepare

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the run's stylizer takes its thread count from it
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=10, size=(70, 46))
    model = clips.save_test_model(tmp_path / "m.pth")  # visible pictures, not black ones
    preview(clip, str(model), tmp_path / "sheet.png", frames=2, height=46, device="cpu", precision="fp32")
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    prepared = prepare(RunOptions(input=str(clip), output=str(tmp_path / "out.mp4"), model=str(model),
                                  device="cpu", precision="fp32", compile="off"))
    tiles = [(sheet[GAP:GAP + 46, x:x + 70], sheet[2 * GAP + 46:2 * GAP + 92, x:x + 70])
             for x in (GAP, 2 * GAP + 70)]
    frames = [np.ascontiguousarray(before) for before, _ in tiles]
    for (_, styled), expected in zip(tiles, build_stylizer(prepared, get_comm())(frames)):  # one batch
        assert 20 < styled.mean() < 235
        np.testing.assert_array_equal(styled, expected)


def test_preview_scales_down_and_is_fast_on_real_footage(tmp_path):
    flower = need_shared("media", "flower.mp4")
    name = sorted(BUILTIN)[0] if BUILTIN else None
    if name is None:
        pytest.skip("no built-in style is installed yet")
    t0 = time.monotonic()
    info = preview(flower, name, tmp_path / "s.png", frames=4, height=135)
    assert time.monotonic() - t0 < 60  # seconds, not minutes (one seek per frame)
    assert info["size"] == (4 * 240 + 5 * GAP, 2 * 135 + 3 * GAP)


def test_stylize_image_keeps_sizes_not_multiple_of_4(checkpoint):
    net = load_network(checkpoint.read_bytes())
    img = (np.random.default_rng(0).random((37, 45, 3)) * 255).astype(np.uint8)
    assert stylize_image(net, img).shape == (37, 45, 3)


def test_contact_sheet_needs_matching_rows():
    with pytest.raises(ValueError):
        contact_sheet([np.zeros((4, 4, 3), np.uint8)], [])


def test_preview_errors(tmp_path, checkpoint):
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=5)
    with pytest.raises(ModelLoadFailure, match="built-in"):
        preview(clip, "no-such-style", tmp_path / "s.png")
    with pytest.raises(UsageError, match=".png"):
        preview(clip, str(checkpoint), tmp_path / "s.txt")


def test_torchscript_export_gives_the_same_pixels(tmp_path, checkpoint):
    out = export(str(checkpoint), "torchscript", tmp_path / "net.pt")
    data = out.read_bytes()
    with pytest.raises(ModelLoadFailure, match="trust"):
        load_network(data)  # TorchScript can run code: refused unless trusted
    scripted = load_network(data, trust=True)
    plain = load_network(checkpoint.read_bytes())
    for shape in ((45, 61, 3), (64, 64, 3)):
        img = (np.random.default_rng(1).random(shape) * 255).astype(np.uint8)
        # On a CPU the plain network's last layer runs rearranged (stylize._SpaceToDepthConv2d:
        # the same products summed in another order), TorchScript's as it is: a value may
        # round the other way, never by more than one level.
        diff = np.abs(stylize_image(scripted, img).astype(int) - stylize_image(plain, img).astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_export_cli_and_onnx(tmp_path, checkpoint, capsys):
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    args = parser.parse_args([str(checkpoint), "--out", str(tmp_path / "x.pt")])
    assert export_main(args) == 0 and (tmp_path / "x.pt").stat().st_size > 0
    assert "trust-model" in capsys.readouterr().out
    if not onnx_available():
        with pytest.raises(UsageError, match="stylempi\\[onnx\\]"):
            export(str(checkpoint), "onnx", tmp_path / "x.onnx")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("which", ["random-width-8", "builtin"])
def test_onnx_export_matches_torch_in_onnxruntime(tmp_path, checkpoint, which):
    """The exported file run by onnxruntime gives torch's pixels on real decoded frames (>= 45 dB)."""
    if not onnx_available():
        pytest.skip("the onnx package is not installed (pip install -e '.[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")
    import onnx

    model = str(checkpoint) if which != "builtin" else (sorted(BUILTIN) or [None])[0]
    if model is None:
        pytest.skip("no built-in style is installed")
    out = export(model, "onnx", tmp_path / "net.onnx")
    onnx.checker.check_model(onnx.load(str(out)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    net = load_network(open_model_bytes(model))
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=10, size=(96, 64))
    frames = np.stack([f for _, f in sample_frames(clip, 3)])  # N x H x W x 3, one batch
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        expected = net(x).clamp(0, 255).round().byte().numpy()
    got = np.clip(session.run(None, {"input": x.numpy()})[0], 0, 255).round().astype(np.uint8)
    assert got.shape == expected.shape == (3, 3, 64, 96)
    assert _psnr(got, expected) >= 45
    assert not np.array_equal(expected, x.byte().numpy())  # the network really changed the frames


def open_model_bytes(model: str) -> bytes:
    path = builtin_checkpoint(model)
    return (path if path is not None else Path(model)).read_bytes()


def test_onnx_export_cli_prints_one_line(tmp_path):
    if not onnx_available() or not BUILTIN:
        pytest.skip("needs the onnx package and a built-in style")
    result = stylempi("export", sorted(BUILTIN)[0], "--format", "onnx", "--out", tmp_path / "s.onnx")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith(f"wrote {tmp_path / 's.onnx'} (") and (tmp_path / "s.onnx").stat().st_size
    # Given back to `run --model`, the export is recognised as ONNX, and the line says what to pass.
    clip = clips.basic_clip(tmp_path / "c.mp4", frames=4)
    done = stylempi("run", clip, tmp_path / "o.mp4", "--model", tmp_path / "s.onnx")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 4 and len(lines) == 1, done.stderr
    assert "is an ONNX file" in lines[0] and "export target" in lines[0] and ".pth checkpoint" in lines[0]
    assert is_onnx((tmp_path / "s.onnx").read_bytes()) and not is_onnx(open_model_bytes(sorted(BUILTIN)[0]))


def test_builtin_styles_are_listed_small_and_load():
    rows = list_models()
    assert len(rows) >= 3, "the project promises at least three built-in styles"
    for row in rows:
        path = builtin_checkpoint(row["name"])
        assert path is not None and row["size"] == path.stat().st_size <= 2_000_000
        net = load_network(path.read_bytes(), name=row["name"])
        assert net.width == row["width"] == BUILTIN[row["name"]].width
        assert row["painting"] and row["licence"]
        # A plain state_dict of tensors (what `stylempi run` loads), no training state.
        state = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
