"""stylempi.storage against the real Azurite Blob emulator (no mocks of the Blob API).

Everything here talks to Azurite started by ``azurite_server`` (tests/azurite.py); URL parsing and
the work-dir name rules are pure, in tests/unit/test_storage_urls.py.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import threading
from pathlib import Path

import pytest

from stylempi import storage
from stylempi.job.staging import BlobWorkDir
from stylempi.errors import StorageFailure

from azurite import (ACCOUNT, KEY, assert_clean, azurite_https_server, azurite_server, blob_env,  # noqa: F401
                     free_port)
from conftest import stylempi, without_stages

DEV_URL = "http://127.0.0.1:10000/devstoreaccount1"


# --------------------------------------------------------------------------- transfers on Azurite

def _md5(path: Path) -> bytes:
    return hashlib.md5(path.read_bytes()).digest()


def test_round_trip_multi_block_with_checksum(blob_env, tmp_path, monkeypatch):
    server, container = blob_env
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(250_000))
    monkeypatch.setattr(storage.azure.blobs, "BLOCK_SIZE", 64 * 1024)  # download chunks too: several GETs
    url = f"{server.account_url}/{container}/dir/in.bin"
    digest = storage.upload(src, url, block_size=64 * 1024)
    assert digest == hashlib.md5(src.read_bytes()).hexdigest()
    blob = server.service().get_blob_client(container, "dir/in.bin")
    committed, uncommitted = blob.get_block_list("all")
    assert len(committed) == 4 and not uncommitted
    assert bytes(blob.get_blob_properties().content_settings.content_md5) == _md5(src)
    out = tmp_path / "sub" / "out.bin"
    assert storage.download(url, out) == 250_000
    assert _md5(out) == _md5(src)
    assert storage.exists(url) and not storage.exists(url + "x")
    assert [b.name for b in storage.list_blobs(f"{server.account_url}/{container}/dir/")] == ["dir/in.bin"]
    assert storage.read_bytes(url)[:10] == src.read_bytes()[:10]
    assert storage.delete(url) and not storage.delete(url)


def test_empty_file_round_trip(blob_env, tmp_path):
    server, container = blob_env
    (tmp_path / "e").write_bytes(b"")
    url = f"{server.account_url}/{container}/e"
    storage.upload(tmp_path / "e", url)
    assert storage.download(url, tmp_path / "f") == 0 and (tmp_path / "f").read_bytes() == b""


def test_output_blob_invisible_until_commit(blob_env, tmp_path):
    """Upload from a pipe: blocks are staged while the writer still writes,
    and the blob does not exist until the last block is committed."""
    server, container = blob_env
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    url = f"{server.account_url}/{container}/out.mp4"
    result: dict = {}

    def run():
        try:
            result["md5"] = storage.upload(fifo, url, block_size=1024)
        except BaseException as e:  # pragma: no cover - reported below
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    blob = server.service().get_blob_client(container, "out.mp4")
    payload = os.urandom(5000)
    with open(fifo, "wb") as w:
        w.write(payload[:3000])
        w.flush()
        # Wait (bounded) until Azurite holds staged-but-uncommitted blocks.
        import time
        deadline = time.monotonic() + 60
        staged = []
        while time.monotonic() < deadline:
            try:
                staged = blob.get_block_list("uncommitted")[1]
            except Exception:
                staged = []
            if len(staged) >= 2:
                break
            time.sleep(0.1)
        assert len(staged) >= 2, "upload never staged blocks"
        assert not storage.exists(url), "blob visible before its block list was committed"
        w.write(payload[3000:])
    t.join(60)
    assert not t.is_alive() and "error" not in result, result
    assert storage.read_bytes(url) == payload
    assert result["md5"] == hashlib.md5(payload).hexdigest()


def test_conditional_create(blob_env, tmp_path):
    server, container = blob_env
    (tmp_path / "a").write_bytes(b"first")
    url = f"{server.account_url}/{container}/once"
    storage.upload(tmp_path / "a", url, overwrite=False)
    with pytest.raises(StorageFailure) as e:
        storage.upload(tmp_path / "a", url, overwrite=False)
    assert storage.failure_reason(e.value) == "condition"
    storage.upload_bytes(b"x", url + "2", overwrite=False)
    with pytest.raises(StorageFailure):
        storage.upload_bytes(b"y", url + "2", overwrite=False)
    assert storage.read_bytes(url + "2") == b"x"


def test_corrupt_download_is_detected(blob_env, tmp_path):
    server, container = blob_env
    (tmp_path / "a").write_bytes(b"payload" * 100)
    url = f"{server.account_url}/{container}/c.bin"
    storage.upload(tmp_path / "a", url)
    from azure.storage.blob import ContentSettings
    server.service().get_blob_client(container, "c.bin").set_http_headers(
        ContentSettings(content_md5=bytearray(hashlib.md5(b"other").digest())))
    with pytest.raises(StorageFailure, match="corrupt"):
        storage.download(url, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temp file left behind


def test_az_url_uses_connection_string_account(blob_env, tmp_path):
    server, container = blob_env
    (tmp_path / "a").write_bytes(b"hello")
    storage.upload(tmp_path / "a", f"az://{container}/x/a.txt")
    assert storage.read_bytes(f"{server.account_url}/{container}/x/a.txt") == b"hello"


# --------------------------------------------------------------------------- SAS and errors

def _sas(container, blob=None, expiry_hours=1.0, **perms):
    from azure.storage.blob import (BlobSasPermissions, ContainerSasPermissions,
                                    generate_blob_sas, generate_container_sas)
    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=expiry_hours)
    if blob is None:
        return generate_container_sas(ACCOUNT, container, account_key=KEY,
                                      permission=ContainerSasPermissions(**perms), expiry=expiry)
    return generate_blob_sas(ACCOUNT, container, blob, account_key=KEY,
                             permission=BlobSasPermissions(**perms), expiry=expiry)


@pytest.fixture
def sas_setup(blob_env, tmp_path, monkeypatch):
    """A blob in a container, then no connection string: only a SAS can authorise."""
    server, container = blob_env
    (tmp_path / "in.bin").write_bytes(os.urandom(10_000))
    storage.upload(tmp_path / "in.bin", f"{server.account_url}/{container}/in.bin")
    monkeypatch.delenv(storage.ENV_CONNECTION_STRING)
    return server, container


def test_sas_read_blob_and_container(sas_setup, tmp_path):
    server, container = sas_setup
    blob_sas = _sas(container, "in.bin", read=True)
    storage.download(f"{server.account_url}/{container}/in.bin?{blob_sas}", tmp_path / "a")
    cont_sas = _sas(container, read=True, list=True, write=True, create=True)
    base = f"{server.account_url}/{container}"
    assert [b.name for b in storage.list_blobs(f"{base}/?{cont_sas}")] == ["in.bin"]
    storage.upload(tmp_path / "a", f"{base}/copy.bin?{cont_sas}")
    assert storage.read_bytes(f"{base}/copy.bin?{cont_sas}") == (tmp_path / "in.bin").read_bytes()


def test_read_only_sas_write_fails_cleanly(sas_setup, tmp_path):
    server, container = sas_setup
    sas = _sas(container, read=True, list=True)
    with pytest.raises(StorageFailure) as e:
        storage.upload(tmp_path / "in.bin", f"{server.account_url}/{container}/new.bin?{sas}")
    msg = str(e.value)
    assert "does not allow" in msg and "'rl'" in msg
    assert_clean(msg, sas)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_expired_sas_fails_cleanly(sas_setup, tmp_path):
    server, container = sas_setup
    sas = _sas(container, "in.bin", expiry_hours=-1, read=True)
    with pytest.raises(StorageFailure) as e:
        storage.download(f"{server.account_url}/{container}/in.bin?{sas}", tmp_path / "x")
    assert "expired" in str(e.value)
    assert_clean(str(e.value), sas)


def test_wrong_signature_sas_fails_cleanly(sas_setup, tmp_path):
    server, container = sas_setup
    sas = _sas(container, "in.bin", read=True).replace("sig=", "sig=AAAA")
    with pytest.raises(StorageFailure) as e:
        storage.read_bytes(f"{server.account_url}/{container}/in.bin?{sas}")
    assert "SAS token" in str(e.value)
    assert_clean(str(e.value), sas)


def test_wrong_account_key_fails_cleanly(blob_env, monkeypatch, tmp_path):
    server, container = blob_env
    wrong = "A" * 86 + "=="
    cs = server.connection_string(key=wrong)
    monkeypatch.setenv(storage.ENV_CONNECTION_STRING, cs)
    with pytest.raises(StorageFailure) as e:
        storage.read_bytes(f"az://{container}/x")
    assert "account key" in str(e.value)
    assert_clean(str(e.value), wrong, cs)
    assert e.value.exit_code == 6


def test_malformed_connection_string(blob_env, monkeypatch):
    server, container = blob_env
    monkeypatch.setenv(storage.ENV_CONNECTION_STRING, f"garbage;{KEY}")
    with pytest.raises(StorageFailure) as e:
        storage.read_bytes(f"{server.account_url}/{container}/x")
    assert "malformed" in str(e.value)
    assert_clean(str(e.value), f"garbage;{KEY}")


def test_missing_container_and_blob(blob_env, tmp_path):
    server, container = blob_env
    with pytest.raises(StorageFailure) as e:
        storage.download(f"{server.account_url}/no-such-container/x.mp4", tmp_path / "x")
    assert "container 'no-such-container' does not exist" in str(e.value)
    assert storage.failure_reason(e.value) == "container-not-found"
    with pytest.raises(StorageFailure) as e:
        storage.upload(__file__, f"{server.account_url}/no-such-container/x.mp4")
    assert "does not exist" in str(e.value)
    with pytest.raises(StorageFailure) as e:
        storage.download(f"{server.account_url}/{container}/missing.mp4", tmp_path / "x")
    assert str(e.value).endswith("no such blob") and storage.failure_reason(e.value) == "blob-not-found"
    assert_clean(str(e.value))
    assert not list(tmp_path.iterdir())


def test_unreachable_endpoint_fails_fast_and_cleanly(blob_env, tmp_path):
    port = free_port()  # nothing listens there
    sas = "sv=2024-01-01&sp=r&sig=TOPSECRET"
    with pytest.raises(StorageFailure) as e:
        storage.download(f"http://127.0.0.1:{port}/{ACCOUNT}/c01/x.mp4?{sas}", tmp_path / "x")
    assert f"cannot reach Blob storage at 127.0.0.1:{port}" in str(e.value)
    assert_clean(str(e.value), "TOPSECRET")


def test_no_credential_found_is_one_clear_line(monkeypatch, tmp_path):
    """DefaultAzureCredential's 'nothing configured' path (the only one testable here)."""
    for var in list(os.environ):
        if var.startswith(("AZURE_", "IDENTITY_", "MSI_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")  # skip the managed-identity network probe
    monkeypatch.setattr(storage.azure.auth, "_default_credential", None)
    with pytest.raises(StorageFailure) as e:
        storage.read_bytes("https://nosuchacct0.blob.core.windows.net/c01/x.mp4")
    msg = str(e.value)
    assert "no Azure credential found" in msg and "AZURE_STORAGE_CONNECTION_STRING" in msg
    assert_clean(msg)
    with pytest.raises(StorageFailure, match="need https"):
        storage.read_bytes(f"{DEV_URL}/c01/x.mp4")


# --------------------------------------------------------------------------- work dirs

def test_blob_work_dir(blob_env, tmp_path):
    """The Blob work dir a job's staging keeps chunks in: flat entries, complete or absent."""
    server, container = blob_env
    work_dir = BlobWorkDir(storage.locate(f"az://{container}/jobs/job1"))
    assert work_dir.list() == [] and work_dir.get_json("chunk-00012.json") is None
    seg = tmp_path / "seg.nut"
    seg.write_bytes(os.urandom(3000))
    record = tmp_path / "record.json"
    record.write_text('{"frames": 30, "sha256": "ab"}')
    work_dir.put_file(seg, "chunk-00012.nut")
    work_dir.put_file(record, "chunk-00012.json")
    assert work_dir.list() == ["chunk-00012.json", "chunk-00012.nut"]
    assert work_dir.get_json("chunk-00012.json") == {"frames": 30, "sha256": "ab"}
    assert work_dir.get_file("chunk-00012.nut", tmp_path / "back" / "seg.nut")
    assert (tmp_path / "back" / "seg.nut").read_bytes() == seg.read_bytes()
    assert not work_dir.get_file("chunk-00013.nut", tmp_path / "nope")
    work_dir.put_file(seg, "chunk-00012.json")  # not JSON: read as absent
    assert work_dir.get_json("chunk-00012.json") is None
    for bad in ("../x", "a/b", ".hidden", "..", ""):
        with pytest.raises(ValueError):
            work_dir.put_file(record, bad)


def test_blob_work_dir_ignores_nested_blobs(blob_env, tmp_path):
    server, container = blob_env
    wd = BlobWorkDir(storage.locate(f"{server.account_url}/{container}/w"))
    storage.upload_bytes(b"{}", f"az://{container}/w/sub/plan.json")
    storage.upload_bytes(b"{}", f"az://{container}/wx.json")
    storage.upload_bytes(b"{}", f"az://{container}/w/plan.json")
    assert wd.list() == ["plan.json"] and str(wd).endswith(f"/{container}/w/")


# --------------------------------------------------------------------------- `stylempi run` end to end

SUMMARY = re.compile(r"stylempi: (\d+) frames .*?; (\d+) chunks, (\d+) reused")


def _env(server, **extra) -> dict:
    env = {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string(), "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _verify(clip: Path, out: Path) -> None:
    verified = stylempi("verify", clip, out, timeout=120)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]


@pytest.mark.slow
def test_run_az_urls_with_two_ranks(blob_env, tmp_path, tiny_model):
    """Upload a clip, `mpirun -n 2 stylempi run az://incoming/clip.mp4 az://styled/clip.mp4
    --model az://...`, download the result and verify it."""
    import clips
    server, container = blob_env
    styled = server.new_container("styled")
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=12, gop=4, audio_tracks=1)
    storage.upload(clip, f"az://{container}/incoming/clip.mp4")
    storage.upload(tiny_model, f"az://{container}/models/tiny8.pth")
    r = stylempi("run", f"az://{container}/incoming/clip.mp4", f"az://{styled}/clip.mp4",
                 "--model", f"az://{container}/models/tiny8.pth", "--chunk-frames", "4", "--quiet",
                 ranks=2, env=_env(server), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = tmp_path / "out.mp4"
    storage.download(f"az://{styled}/clip.mp4", out)
    _verify(clip, out)
    # Nothing left behind in Blob storage but the output.
    assert [b.name for b in storage.list_blobs(f"az://{styled}/")] == ["clip.mp4"]


@pytest.mark.slow
def test_run_path_style_urls_with_sas_only(blob_env, tmp_path, tiny_model, monkeypatch):
    import clips
    server, container = blob_env
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=8)
    storage.upload(clip, f"az://{container}/in/clip.mp4")
    sas = _sas(container, read=True, write=True, create=True, list=True, delete=True, add=True)
    base = f"{server.account_url}/{container}"
    env = {"OMP_NUM_THREADS": "1", "AZURE_STORAGE_CONNECTION_STRING": ""}
    r = stylempi("run", f"{base}/in/clip.mp4?{sas}", f"{base}/out/clip.mp4?{sas}", "--model", tiny_model,
                 ranks=2, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert sas.split("sig=")[1].split("&")[0] not in r.stdout + r.stderr
    assert f"{base}/out/clip.mp4" in r.stdout  # the summary names the blob, without its SAS
    storage.download(f"{base}/out/clip.mp4", tmp_path / "out.mp4")
    _verify(clip, tmp_path / "out.mp4")


@pytest.mark.slow
def test_killed_run_resumes_from_chunks_in_blob_work_dir(blob_env, tmp_path, tiny_model):
    import os as _os
    import signal as _signal
    import subprocess as _subprocess
    import time as _time
    import clips
    from conftest import BIN
    server, container = blob_env
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=120, gop=4, size=(96, 64))
    storage.upload(clip, f"az://{container}/in/clip.mp4")
    args = ["run", f"az://{container}/in/clip.mp4", f"az://{container}/out/clip.mp4", "--model",
            str(tiny_model), "--work-dir", f"az://{container}/work/", "--chunk-frames", "4",
            "--batch-size", "1"]
    scratch = tmp_path / "scratch"  # the ranks' $TMPDIR: nothing may stay in it
    scratch.mkdir()
    env = dict(_os.environ, **_env(server), TMPDIR=str(scratch))
    proc = _subprocess.Popen([str(BIN / "mpirun"), "-n", "2", str(BIN / "stylempi"), *args],
                             stdout=_subprocess.PIPE, stderr=_subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        deadline = _time.monotonic() + 240
        done: list = []
        while not done:
            assert proc.poll() is None, "the job ended before any chunk reached Blob storage: " + proc.stderr.read()[-2000:]
            assert _time.monotonic() < deadline, "no chunk reached Blob storage in time"
            done = [b.name for b in storage.list_blobs(f"az://{container}/work/")
                    if re.search(r"/chunk-\d+\.json$", b.name)]
            _time.sleep(0.2)
        _kill_tree(proc.pid)  # mpirun and every rank at once, as a lost allocation would
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
        proc.communicate(timeout=60)
    assert not storage.exists(f"az://{container}/out/clip.mp4")
    # Every rank's temp dir (its input copy) goes with it, though the whole tree was SIGKILLed
    # (Open MPI's own session dir, ompi.PID, is left by a killed mpirun: not ours).
    deadline = _time.monotonic() + 15
    while list(scratch.glob("stylempi-*")) and _time.monotonic() < deadline:
        _time.sleep(0.2)
    assert list(scratch.glob("stylempi-*")) == []
    r = stylempi(*args, ranks=2, env=_env(server), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    frames, chunks, reused = map(int, SUMMARY.search(r.stdout).groups())
    assert (frames, chunks) == (120, 30) and reused >= len(done) >= 1, r.stdout
    storage.download(f"az://{container}/out/clip.mp4", tmp_path / "out.mp4")
    _verify(clip, tmp_path / "out.mp4")
    assert [b.name for b in storage.list_blobs(f"az://{container}/work/")] == []


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL PID and all its descendants (the ranks mpirun started; they may sit in
    their own process groups, so killpg alone leaves them running)."""
    import signal as _signal
    victims = [pid, *_descendants(pid)]
    for p in victims:
        try:
            os.kill(p, _signal.SIGSTOP)  # freeze first: nobody finishes a chunk meanwhile
        except ProcessLookupError:
            pass
    for p in victims:
        try:
            os.kill(p, _signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("case", ["missing-blob", "missing-container", "wrong-key", "read-only-sas"])
def test_run_storage_errors_are_one_clean_line(blob_env, tmp_path, tiny_model, case):
    server, container = blob_env
    clip_url = f"az://{container}/in/clip.mp4"
    storage.upload_bytes(b"not really a video", clip_url)
    env = _env(server)
    secret = KEY
    if case == "missing-blob":
        args = [f"az://{container}/in/none.mp4", str(tmp_path / "o.mp4")]
    elif case == "missing-container":
        args = ["az://no-such-box/in/clip.mp4", str(tmp_path / "o.mp4")]
    elif case == "wrong-key":
        secret = "B" * 86 + "=="
        env = _env(server, AZURE_STORAGE_CONNECTION_STRING=server.connection_string(secret))
        args = [clip_url, str(tmp_path / "o.mp4")]
    else:  # fails only when the finished output is uploaded
        import clips
        storage.upload(clips.make_clip(tmp_path / "c.mp4", frames=4), clip_url)
        secret = _sas(container, read=True, list=True)
        env = {"AZURE_STORAGE_CONNECTION_STRING": ""}
        args = [f"{server.account_url}/{container}/in/clip.mp4?{secret}",
                f"{server.account_url}/{container}/out/o.mp4?{secret}", "--work-dir", str(tmp_path)]
    r = stylempi("run", *args, "--model", tiny_model, ranks=2, env=env, timeout=180)
    assert r.returncode == 6, r.stderr[-3000:]
    # mpirun adds its own banner about the exit status; ours is one line, said once.
    lines = without_stages([line for line in r.stderr.splitlines() if line.startswith("stylempi")])
    assert len(lines) == 1 and lines[0].startswith("stylempi: error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert_clean(lines[0], secret)
    for text in (r.stdout, r.stderr):
        assert secret not in text and "sig=" not in text and "AccountKey" not in text


@pytest.mark.slow
def test_https_with_self_signed_certificate(azurite_https_server, tmp_path, tiny_model, monkeypatch):
    """Azurite's --cert/--key: trusted through REQUESTS_CA_BUNDLE, a clean error when not;
    then `mpirun -n 2 stylempi run` on https path-style URLs carrying a SAS."""
    import clips
    server = azurite_https_server
    container = server.new_container()
    monkeypatch.delenv(storage.ENV_CONNECTION_STRING, raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    sas = _sas(container, read=True, write=True, create=True, list=True, delete=True, add=True)
    base = f"{server.account_url}/{container}"
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=8)
    with pytest.raises(StorageFailure) as e:
        storage.upload(clip, f"{base}/in/clip.mp4?{sas}")
    assert "certificate" in str(e.value)
    assert_clean(str(e.value), sas)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.cert))
    storage.upload(clip, f"{base}/in/clip.mp4?{sas}")
    r = stylempi("run", f"{base}/in/clip.mp4?{sas}", f"{base}/out/clip.mp4?{sas}", "--model", tiny_model,
                 "--quiet", ranks=2, env={"OMP_NUM_THREADS": "1", "REQUESTS_CA_BUNDLE": str(server.cert)},
                 timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    storage.download(f"{base}/out/clip.mp4?{sas}", tmp_path / "out.mp4")
    _verify(clip, tmp_path / "out.mp4")


def test_second_job_on_a_blob_work_dir_is_refused_by_its_lease(blob_env, tmp_path, tiny_model):
    """Job A (its rank 1 frozen with SIGSTOP, so that A lasts while rank 0 keeps renewing the
    lease) and job B writing the same OUTPUT with a Blob work dir: B stops with exit 5 naming A's
    rank 0; A then finishes and leaves nothing behind."""
    import signal as _signal
    import subprocess as _subprocess
    import time as _time
    import clips
    from conftest import BIN
    server, container = blob_env
    clip = clips.make_clip(tmp_path / "clip.mp4", frames=48, gop=4, size=(96, 64))
    storage.upload(clip, f"az://{container}/in/lease.mp4")
    args = ["run", f"az://{container}/in/lease.mp4", f"az://{container}/out/lease.mp4", "--model",
            str(tiny_model), "--work-dir", f"az://{container}/leasework/", "--chunk-frames", "4",
            "--batch-size", "1", "--quiet"]
    env = dict(os.environ, **_env(server))
    first = _subprocess.Popen([str(BIN / "mpirun"), "-n", "2", str(BIN / "stylempi"), *args],
                              stdout=_subprocess.PIPE, stderr=_subprocess.PIPE, text=True, env=env)
    try:
        deadline = _time.monotonic() + 120
        words: list[str] = []
        while len(words) != 2:
            assert first.poll() is None and _time.monotonic() < deadline, "job A never took its lease"
            locks = [b.name for b in storage.list_blobs(f"az://{container}/leasework/") if b.name.endswith("/lock")]
            try:
                words = storage.read_bytes(f"az://{container}/{locks[0]}").decode().split() if locks else []
            except StorageFailure:
                words = []
            _time.sleep(0.02)
        holder = int(words[1])
        def cmdline(pid: int) -> bytes:
            try:
                return Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return b""
        others = [p for p in _descendants(first.pid)
                  if p != holder and b"stylempi" in cmdline(p) and b"prte" not in cmdline(p)]
        assert others, "rank 1 not found"
        for p in others:
            os.kill(p, _signal.SIGSTOP)
        try:
            second = stylempi(*args, ranks=2, env=_env(server), timeout=300)
        finally:
            for p in others:
                os.kill(p, _signal.SIGCONT)
        lines = [l for l in second.stderr.splitlines() if l.startswith("stylempi:")]
        assert second.returncode == 5, second.stderr[-2000:]
        assert len(lines) == 1 and "another stylempi job" in lines[0] and f"pid {holder}" in lines[0], lines
        assert "lease.mp4" in lines[0]
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    storage.download(f"az://{container}/out/lease.mp4", tmp_path / "out.mp4")
    _verify(clip, tmp_path / "out.mp4")
    assert [b.name for b in storage.list_blobs(f"az://{container}/leasework/")] == []
