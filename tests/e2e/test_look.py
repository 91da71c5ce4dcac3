"""--style-scale and --preserve-colors: pure functions, then real jobs.

The pure part checks the promises on arrays: exact sizes back, the network
seeing the scaled frame, chroma unchanged (for any colour matrix) while the
luma is the stylized one. The jobs run the real CLI on a 1280x720 clip and
judge the output with ``stylempi verify`` and by decoding its U/V planes.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import clips
from conftest import stylempi
from stylempi.job.run import RunOptions, prepare
from stylempi.colour.look import Look, keep_colors, luma, luma_coefficients, resize, scaled_size
from stylempi.errors import UsageError


def chroma(rgb: np.ndarray, kr: float, kb: float) -> tuple[np.ndarray, np.ndarray]:
    y = luma(rgb, kr, kb)
    return (rgb[..., 2] - y) / (2 * (1 - kb)), (rgb[..., 0] - y) / (2 * (1 - kr))


def random_frames(count: int = 3, size: tuple[int, int] = (37, 23), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
def test_keep_colors_keeps_chroma_and_takes_luma(matrix):
    rng = np.random.default_rng(3)
    original = rng.integers(40, 216, (32, 48, 3), dtype=np.uint8)  # room for luma changes
    styled = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    kr, kb = luma_coefficients(matrix)
    out = keep_colors(original, styled, matrix).astype(np.float32)
    for a, b in zip(chroma(out, kr, kb), chroma(original.astype(np.float32), kr, kb)):
        assert np.abs(a - b).max() <= 0.51  # rounding to integers only
    base = original.astype(np.float32)
    want = np.clip(luma(styled, kr, kb) - luma(base, kr, kb), -base.min(axis=-1), 255 - base.max(axis=-1)) \
        + luma(base, kr, kb)
    assert np.abs(luma(out, kr, kb) - want).max() <= 0.51
    assert np.abs(luma(out, kr, kb) - luma(styled, kr, kb)).mean() < 15  # mostly the stylized luma


def test_keep_colors_never_changes_a_saturated_pixels_colour():
    original = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    styled = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    assert (keep_colors(original, styled) == original).all()


def test_matrix_names():
    assert luma_coefficients(None) == luma_coefficients("BT.709") == (0.2126, 0.0722)
    assert luma_coefficients("smpte170m") == (0.299, 0.114)
    with pytest.raises(UsageError):
        luma_coefficients("nonsense")


def test_scale_changes_what_the_network_sees_never_the_size_out():
    frames = random_frames(size=(101, 57))
    seen = []

    def network(batch):
        seen.extend(f.shape for f in batch)
        return [255 - f for f in batch]

    out = Look(scale=0.5).apply(network, frames)
    assert seen == [(28, 50, 3)] * 3 and scaled_size(101, 57, 0.5) == (50, 28)
    assert [f.shape for f in out] == [(57, 101, 3)] * 3 and all(f.dtype == np.uint8 for f in out)
    assert Look(scale=2.0).apply(lambda b: b, frames)[0].shape == (57, 101, 3)
    assert Look().apply(network, frames)[1].tolist() == (255 - frames[1]).tolist()  # scale 1: untouched
    flat = [np.full((40, 60, 3), 77, np.uint8)]
    assert (resize(flat, (30, 20))[0] == 77).all() and (resize(flat, (120, 80))[0] == 77).all()


def test_options_that_change_pixels_change_the_job_key(tmp_path):
    clip = clips.make_clip(tmp_path / "in.mp4", frames=4, size=(64, 48))
    model = clips.save_test_model(tmp_path / "m.pth")
    keys = set()
    for extra in ({}, {"style_scale": 0.5}, {"preserve_colors": True},
                  {"preserve_colors": True, "color_matrix": "bt709"}):
        prepared = prepare(RunOptions(input=str(clip), output=str(tmp_path / "out.mp4"), model=str(model),
                                      precision="fp32", **extra))
        keys.add(prepared.key)
    assert len(keys) == 4
    with pytest.raises(UsageError):
        prepare(RunOptions(input=str(clip), output=str(tmp_path / "o.mp4"), model=str(model), style_scale=0))


def decode(path: Path, fmt: str) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format=fmt) for f in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def hd_clip(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("look")
    return clips.make_clip(base / "hd.mp4", frames=6, size=(1280, 720)), clips.save_test_model(base / "m.pth")


@pytest.mark.slow
def test_style_scale_half_on_720p_passes_verify_and_is_the_same_on_two_ranks(hd_clip, tmp_path):
    clip, model = hd_clip
    outs = []
    for ranks in (1, 2):
        out = tmp_path / f"half{ranks}.mp4"
        res = stylempi("run", clip, out, "--model", model, "--style-scale", "0.5", "--compile", "off",
                       "--quiet", ranks=ranks, timeout=300)
        assert res.returncode == 0, res.stderr
        outs.append(out)
    check = stylempi("verify", clip, outs[0])
    assert check.returncode == 0, check.stdout + check.stderr
    a, b = decode(outs[0], "rgb24"), decode(outs[1], "rgb24")
    assert all((x == y).all() for x, y in zip(a, b)) and len(a) == 6
    full = tmp_path / "full.mp4"
    assert stylempi("run", clip, full, "--model", model, "--compile", "off", "--quiet").returncode == 0
    assert np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(a, decode(full, "rgb24"))]) > 1


@pytest.mark.slow
def test_preserve_colors_keeps_the_inputs_chroma(hd_clip, tmp_path):
    clip, model = hd_clip
    out, plain = tmp_path / "kept.mp4", tmp_path / "plain.mp4"
    for target, extra in ((out, ["--preserve-colors"]), (plain, [])):
        res = stylempi("run", clip, target, "--model", model, "--style-scale", "0.5", "--compile", "off",
                       "--quiet", *extra)
        assert res.returncode == 0, res.stderr
    assert stylempi("verify", clip, out).returncode == 0
    source, kept, styled = (decode(p, "yuv444p") for p in (clip, out, plain))
    for plane in (1, 2):  # U, V
        db = np.mean([psnr(s[..., plane] if s.shape[-1] == 3 else s[plane], k[..., plane] if k.shape[-1] == 3
                           else k[plane]) for s, k in zip(source, kept)])
        assert db >= 35, f"plane {plane}: {db:.1f} dB"
    # the luma is the stylized one, not the input's
    y = lambda f: f[..., 0] if f.shape[-1] == 3 else f[0]  # noqa: E731
    assert np.mean([np.abs(y(k).astype(int) - y(s)).mean() for k, s in zip(kept, source)]) > 5


def test_preview_shows_scales_and_colours_side_by_side(tmp_path):
    from PIL import Image
    from stylempi.tools.preview import GAP
    clip = clips.make_clip(tmp_path / "c.mp4", frames=10, size=(64, 48))
    model = clips.save_test_model(tmp_path / "m.pth")
    sheet = tmp_path / "s.png"
    res = stylempi("preview", clip, "--model", model, "--out", sheet, "--frames", "2", "--height", "48",
                   "--style-scale", "0.5,1", "--compare-colors")
    assert res.returncode == 0, res.stderr
    assert "scale 0.5, colours kept" in res.stdout
    img = np.asarray(Image.open(sheet))
    assert img.shape[:2] == (5 * 48 + 6 * GAP, 2 * 64 + 3 * GAP)  # input + 2 scales x 2 colour choices
    rows = [img[GAP + j * (48 + GAP) + 16:GAP + j * (48 + GAP) + 48, GAP:GAP + 64].astype(int) for j in range(5)]
    assert all(np.abs(rows[a] - rows[b]).mean() > 1 for a in range(5) for b in range(a + 1, 5))
    bad = stylempi("preview", clip, "--model", model, "--out", sheet, "--style-scale", "0.5,x")
    assert bad.returncode == 2 and bad.stderr.startswith("stylempi: error: --style-scale")
