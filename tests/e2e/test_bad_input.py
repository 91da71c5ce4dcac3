"""Bad input: one clear line, non-zero exit, nothing left behind.

Each case runs the real CLI as one plain process (mpirun adds lines of its
own) and asserts: exit code != 0; exactly one non-empty line on stderr, and it
starts with ``stylempi: error:``; no ``Traceback`` anywhere; no file at
OUTPUT; the input (and the checkpoint) byte for byte unchanged.

"Unwritable" and "full disk" are real: root ignores chmod, so the output
directory is a read-only tmpfs mount, and the full disk a tiny tmpfs filled
to the brim. Those tests skip with the reason when mounting is not allowed.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

import clips
import oracle
from conftest import stylempi, without_stages
from stylempi.network.model import TransformerNet

TIMEOUT = 240


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return clips.save_test_model(tmp_path_factory.mktemp("model") / "tiny8.pth")


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory) -> Path:
    return clips.basic_clip(tmp_path_factory.mktemp("good") / "in.mp4", frames=3)


def digest(path: Path) -> str | None:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def error_lines(res: subprocess.CompletedProcess) -> list[str]:
    """Stderr's lines less blank ones and the stage lines a job prints as it goes."""
    return without_stages([line for line in res.stderr.splitlines() if line.strip()])


def assert_clean_failure(res: subprocess.CompletedProcess, output: Path, *,
                         before: dict | None = None, mention: tuple[str, ...] = (),
                         plain_text: bool = True) -> str:
    """The bad-input contract; returns the error line."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.returncode != 0, f"exit 0 on bad input; stderr={res.stderr!r}"
    lines = error_lines(res)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {res.stderr!r}"
    assert lines[0].startswith("stylempi: error:"), lines[0]
    if plain_text:
        assert not any(ord(c) < 32 or ord(c) == 127 for c in lines[0]), f"control characters in {lines[0]!r}"
    if before is None or Path(output) not in before:
        assert not Path(output).exists(), f"a file was left at OUTPUT {output}"
    for path, value in (before or {}).items():
        assert digest(path) == value, f"{path} was modified"
    low = lines[0].lower()
    for word in mention:
        assert word.lower() in low, f"message does not mention {word!r}: {lines[0]}"
    return lines[0]


def run_bad(inp: Path, out: Path, model: Path, *extra, mention: tuple[str, ...] = (),
            plain_text: bool = True) -> str:
    before = {p: digest(p) for p in (inp, model) if Path(p).exists()}
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", "--quiet", *extra, timeout=TIMEOUT)
    return assert_clean_failure(res, out, before=before, mention=mention, plain_text=plain_text)


# ---------------------------------------------------------------------------
# Bad INPUT files
# ---------------------------------------------------------------------------

def test_missing_input(tmp_path, model):
    run_bad(tmp_path / "nope.mp4", tmp_path / "out.mp4", model, mention=("nope.mp4",))


def test_empty_input(tmp_path, model):
    inp = tmp_path / "empty.mp4"
    inp.write_bytes(b"")
    run_bad(inp, tmp_path / "out.mp4", model)


def test_text_named_mp4(tmp_path, model):
    inp = tmp_path / "notes.mp4"
    inp.write_text("these are not the frames you are looking for\n" * 50)
    run_bad(inp, tmp_path / "out.mp4", model)


def test_truncated_mp4_index_lost(tmp_path, model):
    """moov at the end (FFmpeg's default): cutting the file loses the index."""
    src = clips.basic_clip(tmp_path / "full.mp4", frames=25)
    data = src.read_bytes()
    inp = tmp_path / "cut.mp4"
    inp.write_bytes(data[: len(data) // 2])
    run_bad(inp, tmp_path / "out.mp4", model)


def test_truncated_mp4_data_lost(tmp_path, model):
    """moov first (faststart): the index promises frames whose data is gone."""
    src = clips.basic_clip(tmp_path / "full.mp4", frames=25)
    fast = tmp_path / "fast.mp4"
    res = subprocess.run([oracle.FFMPEG, "-v", "error", "-nostdin", "-i", str(src), "-c", "copy",
                          "-movflags", "+faststart", str(fast)], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        pytest.skip(f"ffmpeg cannot remux with faststart: {res.stderr[:200]}")
    data = fast.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    inp = tmp_path / "cut.mp4"
    inp.write_bytes(data[: int(len(data) * 0.6)])
    run_bad(inp, tmp_path / "out.mp4", model)


def test_input_is_a_directory(tmp_path, model):
    (tmp_path / "dir.mp4").mkdir()
    run_bad(tmp_path / "dir.mp4", tmp_path / "out.mp4", model)


@pytest.mark.parametrize("index", ["1", "9"], ids=["audio-stream", "no-such-stream"])
def test_bad_video_stream_choice(tmp_path, model, index):
    inp = clips.make_clip(tmp_path / "in.mp4", frames=3, audio_tracks=1)  # stream 1 is audio
    run_bad(inp, tmp_path / "out.mp4", model, "--video-stream", index)


def test_audio_only(tmp_path, model):
    inp = clips.audio_only_clip(tmp_path / "sound.mp4")
    run_bad(inp, tmp_path / "out.mp4", model, mention=("video",))


def test_still_image(tmp_path, model):
    """A PNG is either refused cleanly or becomes a one-frame video of its size.

    Both are acceptable; whichever the tool does must be clean. At the
    time of writing stylempi makes a one-frame 64x48 H.264 video of it, which
    ``stylempi verify`` and the ffprobe oracle both accept.
    """
    inp = clips.png_image(tmp_path / "still.png", size=(64, 48))
    before = {inp: digest(inp), model: digest(model)}
    out = tmp_path / "out.mp4"
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", "--quiet", timeout=TIMEOUT)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    if res.returncode != 0:
        assert_clean_failure(res, out, before=before)
        return
    assert digest(inp) == before[inp]
    v = oracle.video(out)
    assert (v.width, v.height, len(v.times)) == (64, 48, 1)
    assert stylempi("verify", inp, out, timeout=180).returncode == 0


# ---------------------------------------------------------------------------
# Bad OUTPUT
# ---------------------------------------------------------------------------

def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")


@pytest.fixture
def mounts():
    made: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        mount_tmpfs(path, options)
        made.append(path)
        return path

    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_unwritable_output_directory(tmp_path, model, good_clip, mounts):
    ro = mounts(tmp_path / "ro", "ro,size=1m")
    with pytest.raises(OSError):
        (ro / "probe").write_bytes(b"x")
    run_bad(good_clip, ro / "out.mp4", model)


def test_unwritable_work_dir(tmp_path, model, good_clip, mounts):
    ro = mounts(tmp_path / "ro", "ro,size=1m")
    run_bad(good_clip, tmp_path / "out.mp4", model, "--work-dir", ro / "work")


def test_output_equal_to_input(tmp_path, model):
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=3)
    before = {inp: digest(inp), model: digest(model)}
    res = stylempi("run", inp, inp, "--model", model, "--device", "cpu", "--quiet", timeout=TIMEOUT)
    assert_clean_failure(res, inp, before=before)


def test_output_same_file_other_spelling(tmp_path, model):
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=3)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.mp4"
    link.symlink_to(inp)
    for other in (tmp_path / "sub" / ".." / "in.mp4", link):
        before = {inp: digest(inp), model: digest(model)}
        res = stylempi("run", inp, other, "--model", model, "--device", "cpu", "--quiet", timeout=TIMEOUT)
        assert_clean_failure(res, inp, before=before)
        assert link.is_symlink()


def test_output_is_a_directory(tmp_path, model, good_clip):
    out = tmp_path / "out.mp4"
    out.mkdir()
    before = {good_clip: digest(good_clip), model: digest(model)}
    res = stylempi("run", good_clip, out, "--model", model, "--device", "cpu", "--quiet", timeout=TIMEOUT)
    assert_clean_failure(res, tmp_path / "nothing", before=before)
    assert out.is_dir() and not any(out.iterdir())


def test_output_directory_missing(tmp_path, model, good_clip):
    run_bad(good_clip, tmp_path / "no" / "such" / "out.mp4", model, mention=("does not exist",))
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("name", ["out.xyz", "out"])
def test_unknown_output_extension(tmp_path, model, good_clip, name):
    run_bad(good_clip, tmp_path / name, model)


def test_container_cannot_hold_audio(tmp_path, model):
    """AAC cannot go in .webm: refuse (naming a container that can), never re-encode silently."""
    inp = clips.make_clip(tmp_path / "in.mp4", frames=3, audio_tracks=1)
    line = run_bad(inp, tmp_path / "out.webm", model)
    assert ".mkv" in line or ".mp4" in line or "--audio-codec" in line, line


def fill(path: Path, leave: int = 0) -> None:
    """Fill the filesystem holding ``path`` until at most ``leave`` bytes are free."""
    fd = os.open(path / "ballast", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        chunk = b"\0" * 4096
        while True:
            free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
            if free <= leave:
                break
            try:
                os.write(fd, chunk[: max(1, min(len(chunk), free - leave))])
            except OSError:
                break
    finally:
        os.close(fd)


def test_full_disk_output(tmp_path, model, mounts):
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=25, size=(96, 72))
    full = mounts(tmp_path / "full", "size=256k")
    fill(full)
    run_bad(inp, full / "out.mp4", model, "--work-dir", tmp_path / "work")


def test_full_disk_work_dir(tmp_path, model, mounts):
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=25, size=(96, 72))
    full = mounts(tmp_path / "full", "size=256k")
    fill(full)
    run_bad(inp, tmp_path / "out.mp4", model, "--work-dir", full / "work")


def test_full_disk_1mb(tmp_path, model, mounts):
    """A 1 MB tmpfs as both output and work dir, too small for the job's files."""
    inp = clips.basic_clip(tmp_path / "in.mp4", frames=101, size=(96, 72))
    full = mounts(tmp_path / "full", "size=1m")
    fill(full, leave=24 * 1024)  # enough to start, not enough to finish
    run_bad(inp, full / "out.mp4", model, "--work-dir", full / "work")


# ---------------------------------------------------------------------------
# Bad CHECKPOINTS
# ---------------------------------------------------------------------------

def test_missing_checkpoint(tmp_path, good_clip):
    run_bad(good_clip, tmp_path / "out.mp4", tmp_path / "nope.pth", mention=("nope.pth",))


def test_empty_checkpoint(tmp_path, good_clip):
    ckpt = tmp_path / "empty.pth"
    ckpt.write_bytes(b"")
    run_bad(good_clip, tmp_path / "out.mp4", ckpt)


def test_random_bytes_checkpoint(tmp_path, good_clip):
    ckpt = tmp_path / "noise.pth"
    ckpt.write_bytes(os.urandom(4096))
    run_bad(good_clip, tmp_path / "out.mp4", ckpt)


def test_failed_run_keeps_an_existing_output(tmp_path, good_clip):
    """A run that fails must not clobber (or truncate) a file already at OUTPUT."""
    out = tmp_path / "out.mp4"
    out.write_bytes(good_clip.read_bytes())
    ckpt = tmp_path / "noise.pth"
    ckpt.write_bytes(os.urandom(4096))
    before = {good_clip: digest(good_clip), ckpt: digest(ckpt), out: digest(out)}
    res = stylempi("run", good_clip, out, "--model", ckpt, "--device", "cpu", "--quiet", timeout=TIMEOUT)
    assert_clean_failure(res, out, before=before)


def test_wrong_architecture_checkpoint(tmp_path, good_clip):
    ckpt = tmp_path / "mlp.pth"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.save(net.state_dict(), ckpt)
    run_bad(good_clip, tmp_path / "out.mp4", ckpt)


def test_wrong_width_keys_checkpoint(tmp_path, good_clip):
    """Right key names, one tensor of the wrong shape."""
    state = TransformerNet(8).state_dict()
    state["res3.conv1.conv2d.weight"] = torch.zeros(16, 16, 3, 3)
    ckpt = tmp_path / "bent.pth"
    torch.save(state, ckpt)
    run_bad(good_clip, tmp_path / "out.mp4", ckpt)


class _Payload:
    """Unpickling this calls open(marker, 'w'): creates the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _TouchPayload:
    """Unpickling this calls pathlib.Path(marker).touch() via getattr."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return (getattr(pathlib.Path(self.marker), "touch"), ())


def evil_checkpoint(tmp_path: Path, payload=_Payload, fmt: str = "torch-zip") -> tuple[Path, Path]:
    """A checkpoint whose unpickling would create ``marker``; returns (checkpoint, marker)."""
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    state = {"conv1.conv2d.weight": torch.zeros(8, 3, 9, 9), "evil": payload(str(marker))}
    if fmt == "torch-zip":
        torch.save(state, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(state, protocol=2))
    # Sanity: the payload is live (an unsafe load would run it).
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(payload(str(probe))))
    assert probe.exists()
    assert not marker.exists()
    return ckpt, marker


@pytest.mark.parametrize("payload", [_Payload, _TouchPayload], ids=["open", "path-touch"])
@pytest.mark.parametrize("fmt", ["torch-zip", "raw-pickle"])
def test_malicious_pickle_checkpoint_does_not_run(tmp_path, good_clip, payload, fmt):
    ckpt, marker = evil_checkpoint(tmp_path, payload, fmt)
    run_bad(good_clip, tmp_path / "out.mp4", ckpt, plain_text=False)  # the text: next test
    assert not marker.exists(), "the checkpoint's pickle code ran"


def test_malicious_pickle_message_is_plain_and_gives_no_bypass(tmp_path, good_clip):
    """The refusal is one plain line; it must not relay torch's advice on how to load it anyway."""
    ckpt, marker = evil_checkpoint(tmp_path)
    line = run_bad(good_clip, tmp_path / "out.mp4", ckpt)
    assert "can still be loaded" not in line and "two options" not in line, line
    assert not marker.exists()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "scripted.pt"
    torch.manual_seed(0)
    torch.jit.script(TransformerNet(8).eval()).save(str(path))
    return path


def test_torchscript_needs_trust(tmp_path, good_clip, scripted):
    line = run_bad(good_clip, tmp_path / "out.mp4", scripted)
    assert "--trust-model" in line, line


def test_torchscript_with_trust_works(tmp_path, good_clip, scripted):
    out = tmp_path / "out.mp4"
    res = stylempi("run", good_clip, out, "--model", scripted, "--trust-model", "--device", "cpu",
                   "--precision", "fp32", "--quiet", timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert oracle.compare(good_clip, out) == []
    assert stylempi("verify", good_clip, out, timeout=180).returncode == 0


# ---------------------------------------------------------------------------
# More ranks than frames: idle ranks, not a failure.
# ---------------------------------------------------------------------------

def test_more_ranks_than_frames(tmp_path, model):
    inp = clips.make_clip(tmp_path / "in.mp4", frames=2, audio_tracks=1)
    out = tmp_path / "out.mp4"
    res = stylempi("run", inp, out, "--model", model, "--device", "cpu", "--quiet", ranks=4, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert oracle.compare(inp, out) == []
    ver = stylempi("verify", inp, out, timeout=180)
    assert ver.returncode == 0, ver.stdout[-1500:]
    json.loads(ver.stdout)


def test_mpirun_missing_input_error_is_the_last_line_before_the_launchers_notice(tmp_path, model):
    """Under ``mpirun -n 2`` the one line comes once, with the exit code of a single process;
    whatever follows it is Open MPI's own framed notice (README: no setting removes it and keeps
    the exit code)."""
    res = stylempi("run", tmp_path / "nope.mp4", tmp_path / "out.mp4", "--model", model, ranks=2,
                   timeout=TIMEOUT)
    assert res.returncode == 3, res.stderr
    lines = error_lines(res)
    ours = [i for i, line in enumerate(lines) if line.startswith("stylempi:")]
    assert len(ours) == 1 and lines[ours[0]].startswith("stylempi: error: ") and "nope.mp4" in lines[ours[0]]
    after = lines[ours[0] + 1:]
    if after:  # the launcher's notice, framed by rules of dashes
        assert after[0].startswith("-----") and after[-1].startswith("-----"), after
        assert any("Exit code:    3" in line for line in after), after
    assert not (tmp_path / "out.mp4").exists()
