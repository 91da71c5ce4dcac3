"""Hostile input, each failure in its class (issue 26): a closed output pipe is not a bug, a
TorchScript model with the wrong outputs is a model error, a frame too big for memory is a
resource error with a hint, never "internal error (a bug)".

Each case runs the real CLI in one process on a tiny generated clip.
"""
from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest
import torch

import clips
from conftest import stylempi, stylempi_cli, stylempi_lines
from stylempi.errors import out_of_memory
TIMEOUT = 180
#: The documented exit codes these cases end with (README, "When things go wrong").
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, as a Unix tool killed by it
EXIT_RESOURCE = 8


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return clips.make_clip(work / "in.mp4", frames=4, size=(32, 32), gop=2)


def one_error(res: subprocess.CompletedProcess, code: int, *mention: str) -> str:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    assert res.returncode == code, f"exit {res.returncode}, expected {code}: {res.stderr[-2000:]}"
    lines = stylempi_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("stylempi: error:"), res.stderr[-2000:]
    for word in mention:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------
# Defect 8: a closed output pipe (`stylempi models | head -1`)
# ---------------------------------------------------------------------------

def _into_closed_pipe(*args: str | os.PathLike) -> subprocess.CompletedProcess:
    """Run stylempi with stdout a pipe whose reader is already gone (as after `| head -1`
    has read its line): every write fails with EPIPE, deterministically."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*stylempi_cli(), *map(str, args)], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=TIMEOUT)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command", ["models", "verify"])
def test_a_closed_output_pipe_ends_quietly(command, clip):
    args = ("models",) if command == "models" else ("verify", clip, clip)
    res = _into_closed_pipe(*args)
    assert res.returncode in (0, EXIT_PIPE_CLOSED), res.stderr
    assert res.stderr == "", res.stderr  # no "this is a bug", no "Exception ignored"


# ---------------------------------------------------------------------------
# Defect 6: TorchScript models whose output is not a frame per frame
# ---------------------------------------------------------------------------

class _OneChannel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class _Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class _Half(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2)


class _FirstFrame(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:1]


class _Integers(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.int64)


@pytest.mark.parametrize("module,mention", [(_OneChannel, "channel"), (_Pair, "tuple"), (_Half, "size"),
                                            (_FirstFrame, "batch"), (_Integers, "int64")],
                         ids=["one-channel", "tuple", "size", "batch", "integers"])
def test_torchscript_with_wrong_outputs_is_a_model_error(module, mention, work, clip, tmp_path):
    model = tmp_path / "bad.pt"
    torch.jit.save(torch.jit.script(module()), str(model))
    out = tmp_path / "out.mp4"
    res = stylempi("run", clip, out, "--model", model, "--trust-model", "--device", "cpu", "--compile", "off",
                   "--quiet", timeout=TIMEOUT)
    one_error(res, 4, "TorchScript", mention)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4")]


def test_torchscript_that_keeps_frames_still_runs(work, clip, tmp_path):
    model = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(clips.test_network()), str(model))
    res = stylempi("run", clip, tmp_path / "out.mp4", "--model", model, "--trust-model", "--device", "cpu",
                   "--compile", "off", "--quiet", timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------
# Defect 5: a checkpoint that asks for more memory than it holds; a frame too big for memory
# ---------------------------------------------------------------------------

def test_a_tiny_checkpoint_claiming_a_huge_width_is_refused_before_allocating(work, clip, tmp_path):
    # Stride-0 (expanded) tensors store one value for any shape: a few kB on disk claim
    # a network of width 100000 (terabytes once built).
    state = {k: torch.zeros(1).expand(v.shape) if k != "conv1.conv2d.weight" else
             torch.zeros(1, 3, 9, 9).expand(100_000, 3, 9, 9) for k, v in clips.test_network().state_dict().items()}
    model = tmp_path / "huge.pth"
    torch.save(state, model)
    assert model.stat().st_size < 2_000_000
    res = stylempi("run", clip, tmp_path / "out.mp4", "--model", model, "--device", "cpu", "--quiet",
                   timeout=TIMEOUT)
    one_error(res, 4, "width")


#: The address space a run may use beyond what the same run on a tiny clip needs. A
#: 3840x2160 frame through even a width-8 network needs gigabytes; the tiny clip none.
_HEADROOM = 700 << 20


def _limited(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def _peak_address_space(cmd: list[str]) -> int:
    """The address space (bytes) CMD needs: the smallest RLIMIT_AS, to 128 MB, it still exits 0 under."""
    low, high = 768 << 20, 16 << 30
    while high - low > 128 << 20:
        mid = (low + high) // 2
        ok = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, preexec_fn=_limited(mid)).returncode == 0
        low, high = (low, mid) if ok else (mid, high)
    return high


@pytest.mark.slow
def test_a_frame_too_big_for_memory_is_a_resource_error_with_a_hint(work, clip, tmp_path):
    big = clips.make_clip(work / "uhd.mp4", frames=2, size=(3840, 2160), gop=1)
    model = clips.save_test_model(tmp_path / "m.pth")
    base = [*stylempi_cli(), "run", "--device", "cpu", "--compile", "off", "--quiet", "--model", str(model),
            "--batch-size", "1"]
    need = _peak_address_space([*base, str(clip), str(tmp_path / "small.mp4")])
    out = tmp_path / "big.mp4"
    res = subprocess.run([*base, str(big), str(out)], capture_output=True, text=True, timeout=TIMEOUT,
                         preexec_fn=_limited(need + _HEADROOM))
    one_error(res, EXIT_RESOURCE, "memory", "--batch-size", "--style-scale")
    assert not out.exists()


def test_out_of_memory_exceptions_become_resource_failures():
    assert out_of_memory(MemoryError())
    assert out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                      "can't allocate memory: you tried to allocate 123 bytes."))
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not out_of_memory(RuntimeError("shape mismatch"))
    assert not out_of_memory(ValueError("out of range"))
