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
from stylempi.colour.look import luma
from stylempi.errors import UsageError


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
