"""On an Azure ML compute cluster, Blob URLs authenticate as the cluster's identity.

Azure ML gives a job a token endpoint in ``MSI_ENDPOINT``/``MSI_SECRET`` and the
cluster identity's client id in ``DEFAULT_IDENTITY_CLIENT_ID``; the endpoint
answers only requests that name that client id. A fake endpoint on 127.0.0.1
behaves the same way and records what it was asked; the component's real entry
(``azure/run_stylempi.py run``) is pointed at an https Blob URL, so its token
request goes to the fake endpoint (the Blob request itself then fails: there is
no network, which is fine, it is only the token request this test checks).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, answer_json

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "fake-msi-secret"


class FakeMSI(BaseHTTPRequestHandler):
    """Azure ML's token endpoint (api-version 2017-09-01): only the named identity gets a token."""

    requests: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        FakeMSI.requests.append({"query": query, "secret": self.headers.get("secret")})
        if self.headers.get("secret") != SECRET or query.get("clientid") != CLIENT_ID:
            self._answer(400, {"error": "invalid_request", "error_description": "No token received"})
            return
        self._answer(200, {"access_token": "fake-token", "expires_on": str(int(time.time()) + 3600),
                           "resource": query.get("resource", ""), "token_type": "Bearer"})

    def _answer(self, status: int, body: dict) -> None:
        answer_json(self, status, body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_msi():
    FakeMSI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMSI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/msi/token"
    server.shutdown()
    server.server_close()


def azure_ml_env(msi_url: str) -> dict:
    """An Azure ML cluster's identity variables, and no way out except to 127.0.0.1."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "AZUREML_", "MSI_", "IDENTITY_", "IMDS_"))}
    env.update(MSI_ENDPOINT=msi_url, MSI_SECRET=SECRET, DEFAULT_IDENTITY_CLIENT_ID=CLIENT_ID,
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


def test_blob_token_request_names_the_cluster_identity(fake_msi: str, tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "azure" / "run_stylempi.py"), "run",
         "https://acct.blob.core.windows.net/uploads/in.mp4", str(tmp_path / "out.mp4"),
         "--model", "https://acct.blob.core.windows.net/models/candy.pth", "--device", "cpu"],
        capture_output=True, text=True, timeout=120, env=azure_ml_env(fake_msi), cwd=tmp_path)
    # The Blob service is unreachable here: a one-line storage error, no traceback.
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert FakeMSI.requests, f"no token was asked for:\n{proc.stderr}"
    for request in FakeMSI.requests:
        assert request["secret"] == SECRET
        assert request["query"].get("clientid") == CLIENT_ID, request
        assert request["query"].get("resource") == "https://storage.azure.com"
    assert "No token received" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_client_id_prefers_azure_client_id():
    from stylempi.storage import managed_identity_client_id

    assert managed_identity_client_id({"DEFAULT_IDENTITY_CLIENT_ID": "a"}) == "a"
    assert managed_identity_client_id({"DEFAULT_IDENTITY_CLIENT_ID": "a", "AZURE_CLIENT_ID": "b"}) == "b"
    assert managed_identity_client_id({}) is None
