"""Run the real Azurite Blob emulator for tests (no mocks of the Blob API).

``azurite_server`` is a session-scoped fixture: it starts
``node_modules/.bin/azurite-blob`` (installed by ``npm install`` from the repo's
package.json, which ``make setup`` / ``.ci/run`` do) on a free loopback port with
its data in a temp dir, waits until it answers, and stops it at the end of the
session. It skips, with the reason, only when node or Azurite is not installed.

``blob_env`` (per test) points ``AZURE_STORAGE_CONNECTION_STRING`` at it and
gives the test its own fresh container.

Azurite serves the documented development account ``devstoreaccount1`` whose
key is public (it is in Microsoft's docs), so tests may use it freely.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    port: int
    location: Path
    process: subprocess.Popen

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, key: str = KEY) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
                f"BlobEndpoint={self.account_url};")

    def service(self):
        from azure.storage.blob import BlobServiceClient
        return BlobServiceClient(self.account_url, credential={"account_name": ACCOUNT, "account_key": KEY})

    def new_container(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.service().create_container(name)
        return name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer (403 without auth) means it is up
    except OSError:
        return False


def start_azurite(workdir: Path, deadline_s: float = 60) -> Azurite:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs it; `apt-get install nodejs npm`)")
    if not AZURITE_BIN.exists():
        pytest.skip(f"Azurite is not installed: run `npm install --no-audit --no-fund` in {ROOT}")
    for _ in range(3):
        port = free_port()
        log = open(workdir / f"azurite-{port}.log", "wb")
        proc = subprocess.Popen(
            [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port),
             "--location", str(workdir), "--skipApiVersionCheck", "--loose", "--silent"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and proc.poll() is None:
            if _answers(port):
                return Azurite(port=port, location=workdir, process=proc)
            time.sleep(0.2)
        stop_azurite(proc)  # port taken meanwhile, or a hang: try another port
    text = (workdir / f"azurite-{port}.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Azurite did not start on 127.0.0.1; its log ends:\n{text}")


def stop_azurite(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: node and nothing else of ours
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def azurite_server():
    workdir = Path(tempfile.mkdtemp(prefix="stylempi-azurite-"))
    server = start_azurite(workdir)
    try:
        yield server
    finally:
        stop_azurite(server.process)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def blob_env(azurite_server, monkeypatch):
    """(server, container): the connection string is set, the container is new and empty."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string())
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    return azurite_server, azurite_server.new_container()
