"""``stylempi watch`` against the real Azurite: exactly once, K attempts, path traversal, stop.

The job these tests launch is a tiny real Python script (the launcher path of
the watcher), so they are fast and independent of the video core: it copies
its input to its output, fails when the input says BROKEN, sleeps when it says
SLOW, and appends one line per run to a log. The end-to-end test with the real
``stylempi run`` lives at the bottom.
"""
from __future__ import annotations

import dataclasses

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylempi import storage
from stylempi.cli import watch

from azurite import azurite_server, blob_env  # noqa: F401 (fixtures)

JOB_SCRIPT = r'''
import os, sys, time, json
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
with open(os.environ["WATCH_TEST_LOG"], "a") as log:
    log.write(json.dumps({"content": data.decode(errors="replace"), "input": os.path.abspath(src),
                          "output": os.path.abspath(dst), "pid": os.getpid()}) + "\n")
if b"SLOW" in data:
    time.sleep(120)
if b"BROKEN" in data:
    print("cannot stylize: broken upload", file=sys.stderr)
    sys.exit(3)
time.sleep(0.3)  # long enough for two watchers to overlap
open(dst, "wb").write(b"styled:" + data)
'''


@pytest.fixture
def job(tmp_path, monkeypatch):
    script = tmp_path / "fake_job.py"
    script.write_text(JOB_SCRIPT)
    log = tmp_path / "jobs.log"
    log.touch()
    monkeypatch.setenv("WATCH_TEST_LOG", str(log))
    launcher = f"{sys.executable} {script} {{input}} {{output}}"

    def runs():
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return launcher, runs


def watch_cmd(source, dest, launcher, *extra, work_dir=None):
    cmd = [sys.executable, "-m", "stylempi.cli.watch", source, "--output", dest, "--model", "candy",
           "--launcher", launcher, "--poll", "0.3", *extra]
    if work_dir is not None:
        cmd += ["--work-dir", str(work_dir)]
    return cmd


def put(container, name, data: bytes):
    storage.upload_bytes(data, f"az://{container}/{name}")


def names(container, prefix=""):
    return sorted(b.name for b in storage.list_blobs(f"az://{container}/{prefix}"))


def wait_for(predicate, deadline_s=120, what="condition"):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- in process (MPI, no Azurite)

def test_run_options_map_run_arguments_as_cmd_run_does(monkeypatch):
    """An in-process job builds its RunOptions from `stylempi run`'s own flags as the CLI does."""
    import stylempi.job.run
    from stylempi import cli
    from stylempi.options import RunOptions
    run = ["in.mp4", "out.mkv", "--model", "m.pth", "--trust-model", "--device", "cpu", "--precision", "fp32",
           "--batch-size", "3", "--compile", "off", "--decode", "auto", "--convert", "torch", "--style-scale", "0.5",
           "--preserve-colors",
           "--video-stream", "0", "--codec", "libx265", "--crf", "20", "--preset", "fast", "--audio-codec",
           "aac", "--reencode-audio", "--work-dir", "w", "--restart", "--chunk-frames", "9", "--quiet",
           "--temporal", "off"]
    seen = []
    monkeypatch.setattr(stylempi.job.run, "run_job", lambda options, **kw: seen.append(options))
    assert cli.main(["run", *run]) == 0
    assert RunOptions.from_args(watch.parse_run_args(*run[:2], run[3], run[4:])) == seen[0]
    # every flag reached its field (each is given a value other than its default above)
    unset = [f.name for f in dataclasses.fields(RunOptions)
             if f.name not in ("input", "output", "model", "color_matrix", "staging")
             and getattr(seen[0], f.name) == (f.default_factory() if f.default is dataclasses.MISSING
                                              else f.default)]
    assert not unset, unset


# --------------------------------------------------------------------------- on Azurite

def test_two_watchers_process_each_upload_exactly_once(blob_env, job, tmp_path):
    """Five uploads, two concurrent watchers, DEST under SOURCE: each input runs once,
    each output and report appears once, and outputs are never picked up again."""
    server, container = blob_env
    launcher, runs = job
    source, dest = f"az://{container}/incoming/", f"az://{container}/incoming/styled/"
    procs = [subprocess.Popen(watch_cmd(source, dest, launcher, work_dir=tmp_path / f"w{i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        for i in range(5):
            put(container, f"incoming/clip{i}.mp4", f"video-{i}".encode())
        wait_for(lambda: len([n for n in names(container, "incoming/styled/") if n.endswith(".report.json")]) == 5,
                 what="five reports")
        time.sleep(1.5)  # several more polls: nothing may be picked up again
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    contents = sorted(r["content"] for r in runs())
    assert contents == [f"video-{i}" for i in range(5)], contents  # exactly once each
    for i in range(5):
        out = storage.read_bytes(f"az://{container}/incoming/styled/clip{i}.mp4")
        assert out == f"styled:video-{i}".encode()
        report = json.loads(storage.read_bytes(f"az://{container}/incoming/styled/clip{i}.mp4.report.json"))
        assert report["status"] == "ok" and report["attempt"] == 1 and report["returncode"] == 0
        assert report["input"].endswith(f"/incoming/clip{i}.mp4")
    assert not [n for n in names(container) if "/failed/" in n]


def test_broken_upload_moves_to_failed_after_k_attempts(blob_env, job, tmp_path):
    server, container = blob_env
    launcher, runs = job
    put(container, "in/good.mp4", b"fine")
    put(container, "in/broken.mp4", b"BROKEN")
    r = subprocess.run(watch_cmd(f"az://{container}/in/", f"az://{container}/out/", launcher,
                                 "--once", "--attempts", "3"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr  # --once: a job failed
    assert "Traceback" not in r.stderr
    assert [x["content"] for x in runs()].count("BROKEN") == 3
    assert [x["content"] for x in runs()].count("fine") == 1
    all_names = names(container)
    assert "in/broken.mp4" not in all_names
    assert "in/failed/broken.mp4" in all_names and "in/failed/broken.mp4.error.json" in all_names
    assert storage.read_bytes(f"az://{container}/in/failed/broken.mp4") == b"BROKEN"
    err = json.loads(storage.read_bytes(f"az://{container}/in/failed/broken.mp4.error.json"))
    assert err["status"] == "failed" and err["attempt"] == 3 and len(err["errors"]) == 3
    assert "exited with status 3" in err["error"] and "broken upload" in err["log_tail"]
    assert not [n for n in all_names if "/attempts/" in n]
    assert "out/good.mp4" in all_names and "out/broken.mp4" not in all_names
    # A second pass leaves failed/ alone and finds nothing to do.
    r2 = subprocess.run(watch_cmd(f"az://{container}/in/", f"az://{container}/out/", launcher, "--once"),
                        capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0, r2.stderr
    assert len(runs()) == 4


def test_traversal_blob_names_cannot_escape_the_work_dir(blob_env, job, tmp_path):
    server, container = blob_env
    launcher, runs = job
    svc = server.service()
    # Azurite turns backslashes into slashes: this becomes a blob named '../../evil.mp4',
    # which is listed but cannot be addressed by URL: the watcher must ignore it, loudly.
    svc.get_blob_client(container, "..\\..\\evil.mp4").upload_blob(b"payload1", overwrite=True)
    # Addressable names that a naive join (or URL-decoding) would turn into an escape.
    for name in ("..%2F..%2Fevil2.mp4", "sub/..%5c..%5cevil3.mp4", "sub/..evil4.mp4"):
        svc.get_blob_client(container, name).upload_blob(b"payload-" + name.encode(), overwrite=True)
    assert "../../evil.mp4" in names(container), names(container)
    wd = tmp_path / "deep" / "wd"
    r = subprocess.run(watch_cmd(f"az://{container}/", f"az://{container}/styled/", launcher, "--once",
                                 work_dir=wd), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ignoring blob with an unsafe name '../../evil.mp4'" in r.stderr
    assert sorted(x["content"] for x in runs()) == sorted(
        "payload-" + n for n in ("..%2F..%2Fevil2.mp4", "sub/..%5c..%5cevil3.mp4", "sub/..evil4.mp4"))
    for run in runs():
        for key in ("input", "output"):
            assert Path(run[key]).resolve().parent.parent == wd.resolve(), run
    assert [p for p in tmp_path.rglob("*") if "evil" in p.name] == []
    outputs = sorted(n for n in names(container, "styled/") if n.endswith(".mp4"))
    assert outputs == ["styled/..%2F..%2Fevil2.mp4", "styled/sub/..%5c..%5cevil3.mp4", "styled/sub/..evil4.mp4"]


def test_sigterm_stops_cleanly_and_releases_the_claim(blob_env, job, tmp_path):
    server, container = blob_env
    launcher, runs = job
    put(container, "in/slow.mp4", b"SLOW")
    p = subprocess.Popen(watch_cmd(f"az://{container}/in/", f"az://{container}/out/", launcher),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(runs()) == 1, 60, "the job to start")
        job_pid = runs()[0]["pid"]
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)  # the job was stopped too
    lease = storage.BlobLease.acquire(f"az://{container}/in/slow.mp4", 15)
    assert lease is not None, "the watcher did not release its claim"
    lease.release()
    assert not [n for n in names(container) if "/attempts/" in n or n.startswith("out/")]


#: A watcher process that dies (as kill -9 would: no cleanup, lease kept) at one exact point:
#: right before it writes the blob named by argv[1] (a substring), after everything before it.
CRASHING_WATCHER = r'''
import os, sys
from stylempi import storage
from stylempi.cli import main
crash_at = sys.argv.pop(1)
real = storage.upload_bytes
def upload_bytes(data, loc, **kw):
    if crash_at in str(loc):
        sys.stderr.write("crashing before " + crash_at + "\n"); sys.stderr.flush()
        os._exit(137)
    return real(data, loc, **kw)
storage.upload_bytes = upload_bytes
sys.exit(main(["watch", *sys.argv[1:]]))
'''


@pytest.mark.parametrize("crash_before", ["/.stylempi/done/", ".report.json"])
def test_crash_after_output_upload_is_not_processed_again(blob_env, job, tmp_path, crash_before):
    """The watcher dies after committing the output but before its done marker (or report):
    the next watcher finishes the bookkeeping; the job is not run again, the output not rewritten."""
    server, container = blob_env
    launcher, runs = job
    put(container, "in/clip.mp4", b"video-1")
    source, dest = f"az://{container}/in/", f"az://{container}/out/"
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WATCHER, crash_before, *watch_cmd(
        source, dest, launcher, "--once")[3:]], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    assert len(runs()) == 1
    output = storage.properties(f"az://{container}/out/clip.mp4")
    assert not storage.exists(f"az://{container}/in/.stylempi/done/clip.mp4")
    # The dead watcher's lease would run out within a minute; break it now instead of waiting.
    from azure.storage.blob import BlobClient, BlobLeaseClient
    blob = BlobClient.from_connection_string(server.connection_string(), container, "in/clip.mp4")
    BlobLeaseClient(blob).break_lease(lease_break_period=0)
    again = subprocess.run(watch_cmd(source, dest, launcher, "--once"), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(runs()) == 1, "the input was processed a second time"
    assert storage.properties(f"az://{container}/out/clip.mp4").etag == output.etag, "output rewritten"
    assert storage.read_bytes(f"az://{container}/out/clip.mp4") == b"styled:video-1"
    assert storage.exists(f"az://{container}/in/.stylempi/done/clip.mp4")
    report = json.loads(storage.read_bytes(f"az://{container}/out/clip.mp4.report.json"))
    assert report["status"] == "ok"
    # A third pass finds nothing to do.
    third = subprocess.run(watch_cmd(source, dest, launcher, "--once"), capture_output=True, text=True,
                           timeout=120)
    assert third.returncode == 0 and len(runs()) == 1, third.stderr[-2000:]
    # A new upload under the same name is new work, and is done.
    put(container, "in/clip.mp4", b"video-2")
    fourth = subprocess.run(watch_cmd(source, dest, launcher, "--once"), capture_output=True, text=True,
                            timeout=120)
    assert fourth.returncode == 0, fourth.stderr[-2000:]
    assert [r["content"] for r in runs()] == ["video-1", "video-2"]
    assert storage.read_bytes(f"az://{container}/out/clip.mp4") == b"styled:video-2"


@pytest.mark.slow
def test_watch_end_to_end_with_real_stylempi_run(blob_env, tmp_path):
    """The default job (`stylempi run` in a child process) on a real clip, under mpirun -n 2."""
    import clips
    import torch
    from conftest import BIN, stylempi
    from stylempi.network.model import TransformerNet
    server, container = blob_env
    torch.manual_seed(0)
    torch.save(TransformerNet(8).state_dict(), tmp_path / "tiny8.pth")
    storage.upload(tmp_path / "tiny8.pth", f"az://{container}/models/tiny8.pth")
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=8)
    storage.upload(clip, f"az://{container}/up/clip.mp4")
    r = subprocess.run([sys.executable, "-m", "stylempi.cli.watch", f"az://{container}/up/", "--output",
                        f"az://{container}/done/", "--model", f"az://{container}/models/tiny8.pth",
                        "--launcher", f"{BIN / 'mpirun'} -n 2", "--once"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    storage.download(f"az://{container}/done/clip.mp4", tmp_path / "out.mp4")
    verified = stylempi("verify", clip, tmp_path / "out.mp4", timeout=120)
    assert verified.returncode == 0, verified.stdout[-2000:]
    report = json.loads(storage.read_bytes(f"az://{container}/done/clip.mp4.report.json"))
    assert report["status"] == "ok" and "on 2 ranks" in report["log_tail"]


@pytest.mark.parametrize("mode", [["--in-process"], ["--launcher", "true"]])
def test_bad_run_args_fail_at_start(blob_env, mode):
    """An option `stylempi run` does not take fails once, before any listing, in both modes."""
    server, container = blob_env
    put(container, "in/clip.mp4", b"video")
    r = subprocess.run([sys.executable, "-m", "stylempi.cli.watch", f"az://{container}/in/", "--output",
                        f"az://{container}/out/", "--model", "candy", *mode, "--once",
                        "--run-args=--preserve-color"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == ("stylempi: error: --run-args: stylempi run has no option --preserve-color "
                        "(did you mean --preserve-colors?)\n")
    assert names(container) == ["in/clip.mp4"]


def _frames(path) -> list:
    import av
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.slow
def test_in_process_job_takes_run_args(blob_env, tmp_path):
    """`--in-process` with `--run-args` gives the pixels `stylempi run` gives with those options."""
    import clips
    import numpy as np
    import torch
    from conftest import stylempi
    from stylempi.network.model import TransformerNet
    server, container = blob_env
    torch.manual_seed(0)
    model = tmp_path / "tiny8.pth"
    torch.save(TransformerNet(8).state_dict(), model)
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=8)
    storage.upload(clip, f"az://{container}/up/clip.mp4")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "stylempi.cli.watch", f"az://{container}/up/", "--output",
                        f"az://{container}/done/", "--model", str(model), "--in-process", "--once",
                        "--run-args", "--style-scale 0.5 --preserve-colors"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    storage.download(f"az://{container}/done/clip.mp4", tmp_path / "watched.mp4")
    for name, extra in (("asked.mp4", ["--style-scale", "0.5", "--preserve-colors"]), ("plain.mp4", [])):
        done = stylempi("run", clip, tmp_path / name, "--model", model, *extra, env={"OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
    watched, asked, plain = (_frames(tmp_path / n) for n in ("watched.mp4", "asked.mp4", "plain.mp4"))
    assert len(watched) == len(asked) == 8
    assert all(np.array_equal(a, b) for a, b in zip(watched, asked))
    assert not all(np.array_equal(a, b) for a, b in zip(watched, plain))
    report = json.loads(storage.read_bytes(f"az://{container}/done/clip.mp4.report.json"))
    assert report["command"][-3:] == ["--style-scale", "0.5", "--preserve-colors"]
    assert "8 frames" in report["log_tail"] and "on 1 rank" in report["log_tail"]
