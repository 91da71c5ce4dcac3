"""Hostile filesystems (issue 26): a symbolic link planted at any path a job makes never aims
it at someone's files, and one OUTPUT is written by one job at a time whatever its work dir.

Each case plants a link to a "victim" (a folder of files, or one file) at a path a command
creates, writes or deletes, runs the real CLI in one process, and checks that the victim is
byte-identical afterwards (a folder: not emptied either) and that the command either refused
in one line with exit 5 or, where the path is the user's own OUTPUT, replaced the link.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

import clips
from conftest import stylempi, stylempi_cli, stylempi_lines
from stylempi.errors import OutputFailure
from stylempi.job.prepare import prepare, release_work_lock
from stylempi.job.worklock import WorkLock
from stylempi.network import aot
from stylempi.options import RunOptions
from stylempi.job.staging import JobStaging
from stylempi.storage.tempdirs import reaped_temp_dir, remove
from stylempi.tools.export import onnx_available
from stylempi.training.train import state_path

TIMEOUT = 180
EXIT_OUTPUT = 5


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return clips.make_clip(work / "in.mp4", frames=4, size=(32, 32), gop=2, audio_tracks=1)


@pytest.fixture(scope="module")
def model(work) -> Path:
    return clips.save_test_model(work / "m.pth")


@pytest.fixture
def victim(tmp_path) -> dict[str, Path]:
    """A folder with files (one in a subfolder) and a single file, both someone's precious data."""
    folder = tmp_path / "victim"
    (folder / "chapter").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\section{Results}\n")
    (folder / "chapter" / "one.tex").write_text("years of work\n")
    config = tmp_path / "config"
    config.write_bytes(b"keep = me\n")
    return {"dir": folder, "file": config}


def snapshot(path: Path) -> dict[str, str]:
    """Every file under PATH (or PATH itself) by relative name, with its SHA-256 and mtime."""
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest() + f" {path.stat().st_mtime_ns}"}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() + f" {p.stat().st_mtime_ns}"
            if p.is_file() else "dir" for p in sorted(path.rglob("*"))}


def refused(res: subprocess.CompletedProcess, *mention: str) -> str:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    assert res.returncode == EXIT_OUTPUT, f"exit {res.returncode}, expected 5: {res.stderr[-2000:]}"
    lines = stylempi_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("stylempi: error:"), res.stderr[-2000:]
    for word in ("symbolic link", *mention):
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def run(clip: Path, out: Path, model: Path, *extra: str | os.PathLike) -> subprocess.CompletedProcess:
    return stylempi("run", clip, out, "--model", model, "--device", "cpu", "--compile", "off", "--quiet",
                    *extra, timeout=TIMEOUT)


def job_dir_name(clip: Path, out: Path, model: Path, work_dir: Path | None) -> str:
    """The job dir's name (the job's key) for this run, from the library's own planning step;
    the work root it made is removed again."""
    prepared = prepare(RunOptions(input=str(clip), output=str(out), model=str(model), device="cpu",
                                  compile="off", work_dir=str(work_dir) if work_dir else None))
    release_work_lock(remove=True)
    job_dir = Path(prepared.job_dir)
    shutil.rmtree(job_dir.parent)
    for leftover in out.parent.glob(f".{out.name}.*"):  # e.g. a lock beside OUTPUT
        leftover.unlink()
    return job_dir.name


# ---------------------------------------------------------------------------
# stylempi run
# ---------------------------------------------------------------------------

#: (where the link goes, relative to the work root's parent unless it starts with "OUT",
#:  what it points at, what the job must do: "refuse" or "replace").
RUN_PATHS = [
    ("{root}", "dir", "refuse"),                       # the work root: emptied as "stale" today
    ("{root}/lock", "file", "refuse"),                 # the work root's lock file: truncated today
    ("{root}/{key}", "dir", "refuse"),                 # this job's work dir
    ("{root}/someone-else", "dir", "refuse"),          # a "stale" entry of the work root
    ("{root}/{key}/chunk-00000.partial.nut", "file", "refuse"),  # a segment being encoded
    ("{root}/{key}/plan.json", "file", "replace"),    # written by rename: the link goes, not its target
    ("OUT/.out.partial.mp4", "file", "refuse"),        # OUTPUT being joined: overwritten today
    ("OUT/.out.mp4.lock", "file", "refuse"),           # OUTPUT's lock
    ("OUT/out.mp4", "file", "replace"),                # OUTPUT itself: replaced, as mv does
]


@pytest.mark.parametrize("work_dir", [False, True], ids=["beside-output", "work-dir"])
@pytest.mark.parametrize("where,target,outcome", RUN_PATHS, ids=[p[0].replace("/", ":") for p in RUN_PATHS])
def test_run_never_follows_a_planted_link(where, target, outcome, work_dir, clip, model, victim, tmp_path):
    outdir = tmp_path / "shared"
    outdir.mkdir()
    out = outdir / "out.mp4"
    wdir = tmp_path / "scratch" if work_dir else None
    if wdir:
        wdir.mkdir()
    base = wdir or outdir
    root = base / ".out.mp4.stylempi"
    key = job_dir_name(clip, out, model, wdir) if "{key}" in where else ""
    if where.startswith("OUT/"):
        link = outdir / where[4:]
    else:
        link = base / where.format(root=root.name, key=key)
    link.parent.mkdir(parents=True, exist_ok=True)
    before = snapshot(victim[target])
    link.symlink_to(victim[target], target_is_directory=target == "dir")
    extra = ("--work-dir", wdir) if wdir else ()
    res = run(clip, out, model, *extra)
    assert snapshot(victim[target]) == before, "the link's target was changed"
    if outcome == "refuse":
        refused(res, str(link.name))
        assert not out.exists() or out.is_symlink()
        assert link.is_symlink(), "the planted link itself was removed or replaced"
    else:
        assert res.returncode == 0, res.stderr[-2000:]
        assert out.is_file() and not out.is_symlink()
        assert not root.exists(), "the work root outlived a finished job"


def test_a_work_root_of_another_user_is_refused(clip, model, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can make a folder owned by another user")
    out = tmp_path / "out.mp4"
    root = tmp_path / ".out.mp4.stylempi"
    root.mkdir()
    os.chown(root, 12345, 12345)
    res = run(clip, out, model)
    assert res.returncode == EXIT_OUTPUT and "another user" in stylempi_lines(res.stderr)[0], res.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------
# preview, export, train --out: the file each writes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [(), ("--temporal",)], ids=["looks", "temporal"])
def test_preview_out_link_is_replaced_not_written_through(extra, clip, model, victim, tmp_path):
    sheet = tmp_path / "sheet.png"
    sheet.symlink_to(victim["file"])
    before = snapshot(victim["file"])
    res = stylempi("preview", clip, "--model", model, "--out", sheet, "--frames", "1", *extra, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert snapshot(victim["file"]) == before
    assert sheet.is_file() and not sheet.is_symlink()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".sheet")], "a temp file was left"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_out_link_is_replaced_not_written_through(fmt, model, victim, tmp_path):
    if fmt == "onnx" and not onnx_available():
        pytest.skip("the onnx package is not installed (the [onnx] extra)")
    out = tmp_path / f"m.{'pt' if fmt == 'torchscript' else 'onnx'}"
    out.symlink_to(victim["file"])
    before = snapshot(victim["file"])
    res = stylempi("export", model, "--format", fmt, "--out", out, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert snapshot(victim["file"]) == before
    assert out.is_file() and not out.is_symlink()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")], "a temp file was left"


@pytest.mark.parametrize("which", ["out", "state"])
def test_train_out_link_is_replaced_not_written_through(which, victim, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    for i in range(2):
        Image.fromarray(clips.picture(i, 32, 32)).save(content / f"c{i}.png")
    Image.fromarray(clips.picture(9, 32, 32, seed=3)).save(tmp_path / "style.png")
    out = tmp_path / "style.pth"
    link = out if which == "out" else state_path(out)
    link.symlink_to(victim["file"])
    before = snapshot(victim["file"])
    res = stylempi("train", "--style", tmp_path / "style.png", "--content", content, "--out", out,
                   "--loss-net", "random", "--width", "8", "--image-size", "32", "--batch-size", "1",
                   "--steps", "2", "--checkpoint-every", "1", "--keep-state", "--temporal-weight", "0",
                   "--threads", "1", "--quiet", timeout=TIMEOUT)
    assert snapshot(victim["file"]) == before
    assert res.returncode == 0, res.stderr
    assert out.is_file() and not out.is_symlink()


# ---------------------------------------------------------------------------
# The compile cache entry, the per-rank temp dirs, the Blob work dir's local side
# ---------------------------------------------------------------------------

def test_a_linked_compile_cache_entry_is_refused_untouched(victim, tmp_path, monkeypatch):

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = torch.nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.network(x)

    monkeypatch.setenv("STYLEMPI_COMPILE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    step, shape, settings = Step(), (1, 3, 8, 8, "torch.float32"), ["fp32"]
    package = aot.package_path(step, shape, torch.device("cpu"), settings)
    for link in (package, package.with_suffix(".so")):
        link.symlink_to(victim["file"])
        before = snapshot(victim["file"])
        with pytest.raises(OutputFailure, match="symbolic link"):
            aot.compiled_runner(step, shape, torch.device("cpu"), settings, [])
        assert snapshot(victim["file"]) == before
        link.unlink()


def test_rank_temp_dirs_are_private_and_never_removed_through_a_link(victim, tmp_path):
    made = reaped_temp_dir("stylempi-test-")
    try:
        st = os.lstat(made)
        assert (st.st_mode & 0o777) == 0o700 and st.st_uid == os.geteuid()
    finally:
        remove(made)
    assert not made.exists()
    link = tmp_path / "rank-dir"
    link.symlink_to(victim["dir"], target_is_directory=True)
    before = snapshot(victim["dir"])
    remove(link)
    assert snapshot(victim["dir"]) == before


def test_blob_staging_keeps_its_local_side_in_a_private_dir(tmp_path):

    class Options:
        input, output, model, work_dir = str(tmp_path / "in.mp4"), "az://box/out.mp4", "m.pth", None

    staging = JobStaging(Options(), "http://127.0.0.1:1/devstoreaccount1", rank=0)
    try:
        st = os.lstat(staging.root)
        assert (st.st_mode & 0o777) == 0o700 and st.st_uid == os.geteuid() and not os.path.islink(staging.root)
    finally:
        staging.cleanup()


# ---------------------------------------------------------------------------
# Defect 2: one OUTPUT, two jobs, two work dirs
# ---------------------------------------------------------------------------

def _frame_digests(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in c.decode(video=0)]


def test_a_job_on_a_locked_output_refuses_whatever_its_work_dir(clip, model, tmp_path):
    """OUTPUT's lock is held (here by this test's process, as by another job's rank 0): a job
    with its own --work-dir refuses in one line, exit 5, before any work."""
    out = tmp_path / "out.mp4"
    held = WorkLock.for_output(out, str(out))
    try:
        res = run(clip, out, model, "--work-dir", tmp_path / "elsewhere")
    finally:
        held.release()
    assert "Traceback" not in res.stderr
    lines = stylempi_lines(res.stderr)
    assert res.returncode == EXIT_OUTPUT and len(lines) == 1 and "another stylempi job" in lines[0], res.stderr
    assert not out.exists() and not (tmp_path / "elsewhere" / ".out.mp4.stylempi").exists()


#: One racer: runs the job N times, each time when the test says go, and prints each outcome
#: with the times its first frame was done and the job ended (while it surely wrote OUTPUT's
#: work). Long-lived, so that 20 races cost 20 jobs, not 20 torch imports (POSIX locks are
#: per process, so each racer must be a process of its own).
_RACER = """
import json, sys, time
from pathlib import Path
from stylempi.errors import StylempiError
from stylempi.job.run import run_job
from stylempi.options import RunOptions
clip, out, model, work, go, n = sys.argv[1:]
for i in range(int(n)):
    while not Path(f"{go}-{i}").exists():
        time.sleep(0.002)
    first = []
    try:
        run_job(RunOptions(input=clip, output=out, model=model, device="cpu", compile="off", quiet=True,
                           chunk_frames=4, work_dir=f"{work}-{i}"),
                progress=lambda done, total: first or first.append(time.time()))
        print(json.dumps([0, "", first[0], time.time()]), flush=True)
    except StylempiError as e:
        print(json.dumps([e.exit_code, str(e), None, None]), flush=True)
"""


@pytest.mark.slow
def test_two_jobs_on_one_output_with_different_work_dirs_never_mix(work, tmp_path):
    """Twenty races of two jobs on the same OUTPUT, each with its own --work-dir and its own
    model (so each output frame says which job made it): one refuses, or they ran one after
    the other; OUTPUT is always wholly one job's."""
    models = [clips.save_test_model(tmp_path / "a.pth"), tmp_path / "b.pth"]
    other = clips.test_network()
    with torch.no_grad():
        other.deconv3.conv2d.bias.fill_(40.0)
    torch.save(other.state_dict(), models[1])
    race_clip = clips.make_clip(tmp_path / "race.mp4", frames=12, size=(32, 32), gop=4)
    references = []
    for i, m in enumerate(models):
        ref = tmp_path / f"ref{i}.mp4"
        assert run(race_clip, ref, m, "--chunk-frames", "4").returncode == 0
        references.append(_frame_digests(ref))
    assert references[0] != references[1]
    out = tmp_path / "race" / "out.mp4"
    out.parent.mkdir()
    races, go = 20, tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(race_clip), str(out), str(m), str(tmp_path / f"w{i}"), str(go), str(races)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i, m in enumerate(models)]
    refusals = 0
    try:
        for attempt in range(races):
            Path(f"{go}-{attempt}").touch()
            results = [json.loads(r.stdout.readline() or '[null, "racer died", null, null]') for r in racers]
            for code, message, _, _ in results:
                if code != 0:
                    assert code == EXIT_OUTPUT and "another stylempi job" in message, results
                    refusals += 1
            done = [(start, end) for code, _, start, end in results if code == 0]
            assert done, results
            assert len(done) == 1 or done[0][1] < done[1][0] or done[1][1] < done[0][0], \
                f"race {attempt}: both jobs wrote OUTPUT at once: {results}"
            assert _frame_digests(out) in references, f"race {attempt}: OUTPUT mixes both jobs' frames"
            out.unlink()
    finally:
        for r in racers:
            r.kill()
            r.wait()
    assert refusals, "no job ever refused: the jobs never met, so the race was not tested"
