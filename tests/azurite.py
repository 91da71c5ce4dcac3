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


def assert_clean(message: str, *secrets: str) -> None:
    """One line, no query string, none of the given secrets, no Azurite key."""
    assert "\n" not in message and "\r" not in message, message
    assert "?" not in message, message
    assert "sig=" not in message and "AccountKey" not in message, message
    for secret in (KEY, *secrets):
        if secret:
            assert secret not in message, message
    assert "Traceback" not in message



@dataclass
class Azurite:
    port: int
    location: Path
    process: subprocess.Popen
    cert: Path | None = None  # the self-signed certificate when serving HTTPS

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"

    @property
    def account_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, key: str = KEY) -> str:
        return (f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};AccountKey={key};"
                f"BlobEndpoint={self.account_url};")

    def service(self):
        from azure.storage.blob import BlobServiceClient
        kw = {"connection_verify": str(self.cert)} if self.cert else {}
        return BlobServiceClient(self.account_url, credential={"account_name": ACCOUNT, "account_key": KEY}, **kw)

    def new_container(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.service().create_container(name)
        return name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for 127.0.0.1, made with the cryptography package."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _answers(port: int, cert: Path | None = None) -> bool:
    import ssl
    scheme = "https" if cert else "http"
    context = ssl.create_default_context(cafile=str(cert)) if cert else None
    try:
        urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/{ACCOUNT}?comp=list", timeout=2, context=context)
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer (403 without auth) means it is up
    except OSError:
        return False


def start_azurite(workdir: Path, deadline_s: float = 60, https: bool = False) -> Azurite:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs it; `apt-get install nodejs npm`)")
    if not AZURITE_BIN.exists():
        pytest.skip(f"Azurite is not installed: run `npm install --no-audit --no-fund` in {ROOT}")
    cert = key = None
    tls: list[str] = []
    if https:
        cert, key = self_signed_cert(workdir)
        tls = ["--cert", str(cert), "--key", str(key)]
    for _ in range(3):
        port = free_port()
        log = open(workdir / f"azurite-{port}.log", "wb")
        proc = subprocess.Popen(
            [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port),
             "--location", str(workdir), "--skipApiVersionCheck", "--loose", "--silent", *tls],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and proc.poll() is None:
            if _answers(port, cert):
                return Azurite(port=port, location=workdir, process=proc, cert=cert)
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


@pytest.fixture(scope="session")
def azurite_https_server():
    """Azurite over HTTPS with a self-signed certificate (clients trust it via REQUESTS_CA_BUNDLE)."""
    workdir = Path(tempfile.mkdtemp(prefix="stylempi-azurite-tls-"))
    server = start_azurite(workdir, https=True)
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


class CountingProxy:
    """An HTTP proxy in front of Azurite that counts the body bytes it serves, per blob path.

    Point a connection string's ``BlobEndpoint`` at :attr:`account_url` and every
    request goes through it; :meth:`served` then says how many bytes GET requests
    on a blob returned: what a job really moved from storage. Shared Key
    signatures cover the account/container/blob path, not the host, so Azurite
    accepts the forwarded requests unchanged.
    """

    def __init__(self, server: Azurite):
        import http.client
        import http.server
        import threading
        self.server = server
        self.bytes_by_path: dict[str, int] = {}
        self.gets_by_path: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for k, v in response.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()
                if self.command == "GET":
                    path = self.path.split("?", 1)[0]
                    with proxy._lock:
                        proxy.bytes_by_path[path] = proxy.bytes_by_path.get(path, 0) + len(data)
                        proxy.gets_by_path[path] = proxy.gets_by_path.get(path, 0) + 1

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.account_url};")

    def served(self, container: str, blob: str) -> int:
        """Body bytes GET requests on CONTAINER/BLOB have returned so far."""
        import urllib.parse
        with self._lock:
            return self.bytes_by_path.get(f"/{ACCOUNT}/{container}/{urllib.parse.quote(blob)}", 0)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def counting_proxy(azurite_server):
    proxy = CountingProxy(azurite_server)
    try:
        yield proxy
    finally:
        proxy.close()
