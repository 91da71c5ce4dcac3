"""Azure Blob Storage for stylempi: URLs, credentials, streaming transfers, work dirs.

Locations
---------
Anywhere stylempi takes a file (INPUT, OUTPUT, ``--model``, ``--work-dir``) it also
takes a Blob URL, in one of three forms, each optionally followed by a SAS query
(``?sv=...&sig=...``):

``az://CONTAINER/PATH``
    The account comes from ``--account-url``, else ``AZURE_STORAGE_ACCOUNT_URL``,
    else the endpoint in ``AZURE_STORAGE_CONNECTION_STRING``. PATH is taken
    literally (no percent-decoding).
``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH``
    Host-style URL (any host with a ``.blob.`` label: public and sovereign clouds).
``http(s)://HOST[:PORT]/ACCOUNT/CONTAINER/PATH``
    Path-style URL (Azurite, Azure Stack, IP endpoints).

Credentials, first match wins
-----------------------------
1. a SAS token in the URL's query string;
2. ``AZURE_STORAGE_CONNECTION_STRING`` (account key or SAS), when it names the
   same account as the URL;
3. ``DefaultAzureCredential`` from azure-identity (environment service
   principal, workload/managed identity, Azure CLI login ...); https only. A
   managed identity is asked for by client id when ``AZURE_CLIENT_ID`` or Azure
   ML's ``DEFAULT_IDENTITY_CLIENT_ID`` is set.

Guarantees
----------
* Transfers stream in blocks; no blob is ever held whole in memory (except
  :func:`read_bytes`, which is for small things and refuses large blobs).
* :func:`upload` stages blocks (each MD5-checked by the service) and commits the
  block list last, so the blob appears only when complete; the whole file's
  MD5 is stored as the blob's Content-MD5 and :func:`download` verifies it.
* Every Azure error becomes :class:`~stylempi.errors.StorageFailure` with a
  one-line message that names the blob without its query string and never
  contains a SAS, an account key or a connection string.
* Short retries and timeouts: an unreachable endpoint fails in seconds.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from .errors import StorageFailure, UsageError
from .tempdirs import reaped_temp_dir, remove as remove_temp_dir

__all__ = [
    "BlobLocation", "BlobInfo", "WorkDir", "LocalWorkDir", "BlobWorkDir",
    "is_remote", "parse_blob_url", "redact", "download", "upload", "upload_bytes",
    "read_bytes", "exists", "list_blobs", "delete", "open_work_dir", "fetch_to_local",
    "ensure_container", "safe_local_name", "failure_reason", "properties", "BlobLease", "scrub",
    "ENV_ACCOUNT_URL", "ENV_CONNECTION_STRING",
]

ENV_ACCOUNT_URL = "AZURE_STORAGE_ACCOUNT_URL"
ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"

#: Block size for uploads and chunk size for downloads (bytes).
BLOCK_SIZE = 4 * 1024 * 1024
#: Retries per request after the first try, and client-side timeouts (seconds).
RETRIES = 2
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 120
#: read_bytes refuses blobs larger than this.
READ_BYTES_LIMIT = 512 * 1024 * 1024

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_SCHEMES = ("az://", "http://", "https://")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- URLs

def is_remote(location: str | os.PathLike | None) -> bool:
    """True when LOCATION is a Blob URL (``az://``, ``http://`` or ``https://``)."""
    return isinstance(location, str) and location.lower().startswith(_SCHEMES)


def redact(url: str) -> str:
    """URL without its query string or fragment (a SAS lives there); other text unchanged."""
    return re.sub(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?#'\"]*)[?#][^\s'\"]*", r"\1", str(url))


@dataclass(frozen=True)
class BlobLocation:
    """A blob (or, with ``blob`` ending in ``/`` or empty, a prefix) in one container.

    ``account_url`` has no query: ``https://acct.blob.core.windows.net`` or
    ``http://127.0.0.1:10000/devstoreaccount1``. ``sas`` is the SAS query string
    without ``?``, or None. ``str()`` gives the redacted URL, safe to print.
    """

    account_url: str
    account_name: str
    container: str
    blob: str = ""
    sas: str | None = None

    @property
    def url(self) -> str:
        """Full URL without SAS, percent-encoded (safe to print)."""
        path = urllib.parse.quote(self.blob, safe="/~")
        return f"{self.account_url}/{self.container}/{path}" if path else f"{self.account_url}/{self.container}"

    def __str__(self) -> str:
        return self.url

    def child(self, name: str) -> "BlobLocation":
        """The location NAME below this one, treating this one as a prefix."""
        base = self.blob if (not self.blob or self.blob.endswith("/")) else self.blob + "/"
        return replace(self, blob=base + name.lstrip("/"))

    def with_blob(self, blob: str) -> "BlobLocation":
        """Another blob of the same container, same credentials."""
        return replace(self, blob=blob)

    def as_prefix(self) -> "BlobLocation":
        """This location with a trailing ``/`` (empty stays empty: the whole container)."""
        if not self.blob or self.blob.endswith("/"):
            return self
        return replace(self, blob=self.blob + "/")

    @property
    def name(self) -> str:
        """Last path component of the blob name."""
        return self.blob.rstrip("/").rsplit("/", 1)[-1]

    @property
    def expiry(self) -> _dt.datetime | None:
        """The SAS token's ``se`` expiry time, if any."""
        if not self.sas:
            return None
        se = urllib.parse.parse_qs(self.sas).get("se")
        if not se:
            return None
        try:
            return _dt.datetime.fromisoformat(se[0].replace("Z", "+00:00"))
        except ValueError:
            return None

    @property
    def sas_permissions(self) -> str | None:
        if not self.sas:
            return None
        sp = urllib.parse.parse_qs(self.sas).get("sp")
        return sp[0] if sp else None


def _account_from_env(account_url: str | None) -> tuple[str, str]:
    """(account_url, account_name) for an ``az://`` URL, or UsageError."""
    url = account_url or os.environ.get(ENV_ACCOUNT_URL)
    if url:
        parsed = parse_blob_url(url.rstrip("/") + "/x", _container_optional=True)
        return parsed.account_url, parsed.account_name
    cs = os.environ.get(ENV_CONNECTION_STRING)
    if cs:
        endpoint, name, _ = _parse_connection_string(cs)
        return endpoint, name
    raise UsageError(
        "an az:// URL needs a storage account: pass --account-url "
        "https://ACCOUNT.blob.core.windows.net, or set AZURE_STORAGE_ACCOUNT_URL "
        "or AZURE_STORAGE_CONNECTION_STRING")


def parse_blob_url(url: str, account_url: str | None = None, *,
                   _container_optional: bool = False) -> BlobLocation:
    """Parse any of the three Blob URL forms (see the module docstring).

    Raises :class:`UsageError` (one line, no query string) for malformed URLs.
    """
    text = str(url).strip()
    shown = redact(text)
    split = urllib.parse.urlsplit(text)
    scheme = split.scheme.lower()
    sas = split.query or None
    if scheme == "az":
        container = split.netloc
        blob = split.path.lstrip("/")  # literal, no percent-decoding
        if not container:
            raise UsageError(f"{shown}: an az:// URL reads az://CONTAINER/PATH")
        acct_url, acct_name = _account_from_env(account_url)
    elif scheme in ("http", "https"):
        if not split.hostname:
            raise UsageError(f"{shown}: no host in the Blob URL")
        host = split.netloc.rsplit("@", 1)[-1]
        labels = split.hostname.split(".")
        segments = split.path.lstrip("/").split("/", 1)
        if len(labels) > 2 and labels[1] == "blob":
            acct_name = labels[0]
            acct_url = f"{scheme}://{host}"
            container = urllib.parse.unquote(segments[0])
            rest = segments[1] if len(segments) > 1 else ""
        else:
            acct_name = urllib.parse.unquote(segments[0])
            if not acct_name:
                raise UsageError(f"{shown}: a path-style Blob URL reads "
                                 "http(s)://HOST:PORT/ACCOUNT/CONTAINER/PATH")
            acct_url = f"{scheme}://{host}/{acct_name}"
            tail = (segments[1] if len(segments) > 1 else "").split("/", 1)
            container = urllib.parse.unquote(tail[0])
            rest = tail[1] if len(tail) > 1 else ""
        blob = urllib.parse.unquote(rest)
        if not container and _container_optional:
            container = "x"
    else:
        raise UsageError(f"{shown}: not a Blob URL (expected az://, http:// or https://)")
    if not _container_optional and not _CONTAINER_RE.match(container):
        raise UsageError(f"{shown}: {container!r} is not a valid container name "
                         "(3-63 lowercase letters, digits and single hyphens)")
    return BlobLocation(account_url=acct_url, account_name=acct_name, container=container,
                        blob=blob, sas=sas)


def _as_location(loc: BlobLocation | str, account_url: str | None = None) -> BlobLocation:
    return loc if isinstance(loc, BlobLocation) else parse_blob_url(loc, account_url)


# --------------------------------------------------------------------------- credentials

def _parse_connection_string(cs: str) -> tuple[str, str, Any]:
    """(blob endpoint, account name, credential) from a connection string.

    The credential is ``{"account_name", "account_key"}``, a SAS string, or None.
    Errors never quote the string.
    """
    bad = StorageFailure("AZURE_STORAGE_CONNECTION_STRING is malformed "
                         "(expected Key=Value pairs separated by ';')")
    pairs = [p.split("=", 1) for p in cs.strip().rstrip(";").split(";") if p.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise bad
    s = {k.strip().lower(): v.strip() for k, v in pairs}
    if s.get("usedevelopmentstorage", "").lower() == "true":
        from azure.storage.blob._shared.constants import DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY  # type: ignore
        return f"http://127.0.0.1:10000/{DEV_ACCOUNT_NAME}", DEV_ACCOUNT_NAME, {
            "account_name": DEV_ACCOUNT_NAME, "account_key": DEV_ACCOUNT_KEY}
    name = s.get("accountname")
    endpoint = s.get("blobendpoint")
    if not endpoint:
        if not name:
            raise StorageFailure("AZURE_STORAGE_CONNECTION_STRING names neither AccountName "
                                 "nor BlobEndpoint")
        endpoint = (f"{s.get('defaultendpointsprotocol', 'https')}://{name}.blob."
                    f"{s.get('endpointsuffix', 'core.windows.net')}")
    try:
        loc = parse_blob_url(endpoint.rstrip("/") + "/x", _container_optional=True)
    except UsageError:
        raise StorageFailure("AZURE_STORAGE_CONNECTION_STRING has an unusable BlobEndpoint") from None
    name = name or loc.account_name
    if "accountkey" in s and name:
        cred: Any = {"account_name": name, "account_key": s["accountkey"]}
    else:
        cred = s.get("sharedaccesssignature")
    return loc.account_url, name, cred


_default_credential = None
_cred_lock = threading.Lock()


def managed_identity_client_id(environ: dict | None = None) -> str | None:
    """The managed identity to ask for a token: ``AZURE_CLIENT_ID``, else Azure ML's
    ``DEFAULT_IDENTITY_CLIENT_ID``.

    An Azure ML compute cluster's token endpoint answers "No token received" to a
    request that does not name the cluster's identity, and Azure ML tells jobs which
    one it is only through ``DEFAULT_IDENTITY_CLIENT_ID``.
    """
    env = os.environ if environ is None else environ
    return env.get("AZURE_CLIENT_ID") or env.get("DEFAULT_IDENTITY_CLIENT_ID") or None


def _get_default_credential():
    global _default_credential
    with _cred_lock:
        if _default_credential is None:
            from azure.identity import DefaultAzureCredential
            _default_credential = DefaultAzureCredential(
                exclude_interactive_browser_credential=True,
                managed_identity_client_id=managed_identity_client_id())
        return _default_credential


def _quiet_azure_logging() -> None:
    # The SDK logs request URLs (with redacted signatures) at INFO; keep it quiet
    # unless the user configured those loggers explicitly.
    # azure-identity logs a multi-line warning for every credential it tries; our
    # StorageFailure says the same in one line.
    for name, level in (("azure", logging.WARNING), ("azure.identity", logging.CRITICAL)):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET:
            lg.setLevel(level)


def _client_kwargs() -> dict:
    from azure.storage.blob import ExponentialRetry
    return dict(
        retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=RETRIES,
                                      random_jitter_range=1),
        connection_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_single_get_size=BLOCK_SIZE,
        max_chunk_get_size=BLOCK_SIZE,
        max_single_put_size=BLOCK_SIZE,
        max_block_size=BLOCK_SIZE,
    )


def _auth_kind(loc: BlobLocation) -> str:
    """Which credential _service_client would use: 'sas', 'key', 'cs-sas' or 'token'."""
    if loc.sas:
        return "sas"
    cs = os.environ.get(ENV_CONNECTION_STRING)
    if cs:
        _, name, cred = _parse_connection_string(cs)
        if name == loc.account_name and cred:
            return "key" if isinstance(cred, dict) else "cs-sas"
    return "token"


def _service_client(loc: BlobLocation):
    """A BlobServiceClient for LOC's account with the first credential that applies."""
    from azure.storage.blob import BlobServiceClient
    _quiet_azure_logging()
    kind = _auth_kind(loc)
    if kind == "sas":
        cred: Any = loc.sas
    elif kind in ("key", "cs-sas"):
        _, _, cred = _parse_connection_string(os.environ[ENV_CONNECTION_STRING])
    else:
        if not loc.account_url.lower().startswith("https://"):
            failure = StorageFailure(
                f"no usable credential for {loc.account_url}: Azure AD credentials need https; "
                "for an http endpoint (Azurite) put a SAS token in the URL or set "
                "AZURE_STORAGE_CONNECTION_STRING")
            failure.reason = "no-credential"  # type: ignore[attr-defined]
            raise failure
        cred = _get_default_credential()
    try:
        return BlobServiceClient(account_url=loc.account_url, credential=cred, **_client_kwargs())
    except (ValueError, TypeError, binascii.Error):
        raise StorageFailure(f"cannot use the credentials for {loc.account_url}: "
                             "the account key or SAS token is malformed") from None


def _blob_client(loc: BlobLocation):
    return _service_client(loc).get_blob_client(loc.container, loc.blob)


def _container_client(loc: BlobLocation):
    return _service_client(loc).get_container_client(loc.container)


# --------------------------------------------------------------------------- errors

def _secrets() -> list[str]:
    out = []
    cs = os.environ.get(ENV_CONNECTION_STRING)
    if cs:
        out.append(cs)
        for part in cs.split(";"):
            if "=" in part:
                k, v = part.split("=", 1)
                if k.strip().lower() in ("accountkey", "sharedaccesssignature") and len(v) > 3:
                    out.append(v.strip())
    return out


def scrub(text: str) -> str:
    """TEXT (newlines kept) without URL query strings or the connection string's secrets."""
    out = redact(str(text))
    for s in sorted(_secrets(), key=len, reverse=True):
        out = out.replace(s, "***")
    return out


def _scrub(message: str, loc: BlobLocation | None = None) -> str:
    """One line, no query strings, no known secrets."""
    msg = redact(" ".join(str(message).split()))
    secrets = _secrets()
    if loc is not None and loc.sas:
        secrets.append(loc.sas)
        secrets.extend(v for k, v in urllib.parse.parse_qsl(loc.sas) if k == "sig")
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            msg = msg.replace(s, "***")
    return msg


def _why_unreachable(exc: BaseException) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "timed out" in text or "timeout" in text:
        return "connection timed out"
    if "name or service not known" in text or "nodename nor servname" in text or \
            "failed to resolve" in text or "getaddrinfo" in text or "name resolution" in text:
        return "host name not found"
    if "certificate" in text or "ssl" in text:
        return "TLS certificate not trusted (for a private CA or self-signed certificate, set REQUESTS_CA_BUNDLE)"
    if "reset" in text or "aborted" in text:
        return "connection reset"
    return "network error"


def _translate(exc: BaseException, loc: BlobLocation, action: str) -> StorageFailure:
    """Turn any exception from the Azure SDK into one clean StorageFailure line."""
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,
                                       ServiceRequestError, ServiceResponseError)
    if isinstance(exc, StorageFailure):
        return exc
    where = str(loc)
    host = urllib.parse.urlsplit(loc.account_url).netloc
    kind = _auth_kind_safe(loc)
    msg: str
    reason = "other"
    if isinstance(exc, HttpResponseError) and getattr(exc, "response", None) is not None:
        status = exc.status_code
        code = str(getattr(exc, "error_code", None) or "")
        expiry = loc.expiry
        reason = "http"
        if code == "ContainerNotFound":
            reason = "container-not-found"
            msg = (f"cannot {action} {where}: container '{loc.container}' does not exist "
                   f"in account '{loc.account_name}'")
        elif code == "BlobNotFound" or (status == 404 and action in ("download", "read", "delete", "check")):
            reason = "blob-not-found"
            msg = f"cannot {action} {where}: no such blob"
        elif status in (401, 403):
            reason = "denied"
            if kind == "sas" and expiry is not None and expiry <= _dt.datetime.now(_dt.timezone.utc):
                msg = (f"cannot {action} {where}: the SAS token in the URL expired at "
                       f"{expiry.isoformat()}; make a new one")
            elif code.startswith("AuthorizationPermissionMismatch") or code in (
                    "AuthorizationFailure", "AuthorizationResourceTypeMismatch",
                    "AuthorizationServiceMismatch", "AuthorizationSourceIPMismatch",
                    "AuthorizationProtocolMismatch", "AuthorizationPermissionMismatch"):
                perms = loc.sas_permissions
                extra = f" (its permissions are '{perms}')" if kind == "sas" and perms else ""
                who = {"sas": "the SAS token", "key": "the account key", "cs-sas":
                       "the SAS in AZURE_STORAGE_CONNECTION_STRING"}.get(kind, "the Azure credential")
                msg = f"cannot {action} {where}: {who} does not allow this{extra}"
            elif kind == "sas":
                msg = (f"cannot {action} {where}: the SAS token in the URL was refused "
                       "(wrong signature, expired, or made for another resource)")
            elif kind == "key":
                msg = (f"cannot {action} {where}: the account key in AZURE_STORAGE_CONNECTION_STRING "
                       f"was refused by account '{loc.account_name}'")
            elif kind == "cs-sas":
                msg = (f"cannot {action} {where}: the SAS in AZURE_STORAGE_CONNECTION_STRING "
                       "was refused")
            else:
                msg = (f"cannot {action} {where}: the Azure credential was refused "
                       f"(HTTP {status} {code}); does the identity have a Storage Blob Data role?")
        elif status == 409 and code == "LeaseAlreadyPresent":
            reason = "leased"
            msg = f"cannot {action} {where}: the blob is leased by another process"
        elif status in (409, 412) and code in ("BlobAlreadyExists", "ConditionNotMet", ""):
            reason = "condition"
            msg = f"cannot {action} {where}: the blob changed or exists already (condition not met)"
        else:
            msg = f"cannot {action} {where}: Blob storage answered HTTP {status}" + (f" {code}" if code else "")
    elif isinstance(exc, ClientAuthenticationError):
        # No HTTP response: azure-identity found no credential at all.
        reason = "no-credential"
        msg = (f"cannot {action} {where}: no Azure credential found. Put a SAS token in the URL, "
               "set AZURE_STORAGE_CONNECTION_STRING, or sign in (managed identity, "
               "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or `az login`)")
    elif isinstance(exc, ServiceRequestError):
        reason = "unreachable"
        text = str(exc)
        if "non-TLS" in text or "https" in text.lower() and "bearer" in text.lower():
            msg = (f"cannot {action} {where}: Azure AD credentials need https; use a SAS or "
                   "AZURE_STORAGE_CONNECTION_STRING for http endpoints")
        else:
            msg = f"cannot reach Blob storage at {host} to {action} {where}: {_why_unreachable(exc)}"
    elif isinstance(exc, ServiceResponseError):
        reason = "unreachable"
        msg = f"connection to Blob storage at {host} failed during {action} of {where}: {_why_unreachable(exc)}"
    elif isinstance(exc, (ValueError, TypeError, binascii.Error)):
        msg = f"cannot {action} {where}: the credentials are malformed or unusable ({type(exc).__name__})"
    elif isinstance(exc, OSError):
        msg = f"cannot {action} {where}: local file error: {exc.strerror or type(exc).__name__}"
    else:
        msg = f"cannot {action} {where}: {type(exc).__name__}"
    failure = StorageFailure(_scrub(msg, loc))
    failure.reason = reason  # type: ignore[attr-defined]
    return failure


def failure_reason(exc: BaseException) -> str:
    """Machine-readable kind of a StorageFailure: 'blob-not-found', 'container-not-found',
    'denied', 'leased', 'condition', 'no-credential', 'unreachable', 'http' or 'other'."""
    return getattr(exc, "reason", "other")


def _auth_kind_safe(loc: BlobLocation) -> str:
    try:
        return _auth_kind(loc)
    except StorageFailure:
        return "token"


class _Guard:
    """``with _Guard(loc, 'download'):`` maps any SDK exception to StorageFailure.

    The original exception is dropped (``from None``): its text may hold a URL
    with a SAS token.
    """

    def __init__(self, loc: BlobLocation, action: str):
        self.loc, self.action = loc, action

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if ev is None or isinstance(ev, (StorageFailure, KeyboardInterrupt, SystemExit, GeneratorExit)):
            return False
        if isinstance(ev, Exception):
            failure = _translate(ev, self.loc, self.action)
            failure.__suppress_context__ = True
            raise failure from None
        return False


# --------------------------------------------------------------------------- operations

@dataclass(frozen=True)
class BlobInfo:
    """One entry of :func:`list_blobs`: full blob name, size, etag, metadata."""

    name: str
    size: int
    etag: str
    metadata: dict
    last_modified: _dt.datetime | None = None


def exists(loc: BlobLocation | str) -> bool:
    """Whether the blob exists. A missing container counts as 'no'."""
    loc = _as_location(loc)
    with _Guard(loc, "check"):
        from azure.core.exceptions import ResourceNotFoundError
        try:
            _blob_client(loc).get_blob_properties()
            return True
        except ResourceNotFoundError:
            return False


def download(loc: BlobLocation | str, local_path: str | os.PathLike) -> int:
    """Stream the blob to LOCAL_PATH (atomically: temp file, then rename). Returns bytes.

    Each chunk is read in turn (never the whole blob in memory); when the blob
    carries a Content-MD5, the file's MD5 is checked against it.
    """
    loc = _as_location(loc)
    dest = Path(local_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dl-", dir=dest.parent)
    ok = False
    try:
        md5 = hashlib.md5()
        total = 0
        with os.fdopen(fd, "wb") as out, _Guard(loc, "download"):
            stream = _blob_client(loc).download_blob(max_concurrency=1)
            expected = stream.properties.content_settings.content_md5
            for chunk in stream.chunks():
                out.write(chunk)
                md5.update(chunk)
                total += len(chunk)
        if expected and bytes(expected) != md5.digest():
            raise StorageFailure(f"download of {loc} is corrupt: its MD5 does not match the "
                                 "blob's Content-MD5")
        os.replace(tmp, dest)
        ok = True
        return total
    finally:
        if not ok:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def upload(local_path: str | os.PathLike, loc: BlobLocation | str, *,
           metadata: dict | None = None, content_type: str | None = None,
           block_size: int | None = None, overwrite: bool = True) -> str:
    """Upload LOCAL_PATH as a block blob; the blob appears only when complete.

    Blocks of BLOCK_SIZE are staged one at a time (each MD5-checked by the
    service), then the block list is committed with the whole file's MD5 as
    Content-MD5; the stored MD5 is read back and compared. With
    ``overwrite=False`` the commit fails if the blob exists. Returns the hex MD5.
    """
    from azure.storage.blob import BlobBlock, ContentSettings
    loc = _as_location(loc)
    size = block_size or BLOCK_SIZE
    tag = uuid.uuid4().hex[:16]
    md5 = hashlib.md5()
    blocks = []
    try:
        src = open(local_path, "rb")
    except OSError as e:
        raise StorageFailure(f"cannot upload {local_path}: {e.strerror}") from None
    with src, _Guard(loc, "upload to"):
        client = _blob_client(loc)
        index = 0
        while True:
            data = _read_full(src, size)
            if not data and index > 0:
                break
            block_id = base64.b64encode(f"{tag}-{index:08d}".encode()).decode()
            client.stage_block(block_id, data, length=len(data), validate_content=True)
            blocks.append(BlobBlock(block_id=block_id))
            md5.update(data)
            index += 1
            if len(data) < size:
                break
        settings = ContentSettings(content_type=content_type or _guess_type(str(local_path)),
                                   content_md5=bytearray(md5.digest()))
        kwargs: dict = {}
        if not overwrite:  # conditional create: If-None-Match: *
            from azure.core import MatchConditions
            kwargs = {"match_condition": MatchConditions.IfMissing}
        client.commit_block_list(blocks, content_settings=settings, metadata=metadata, **kwargs)
        stored = client.get_blob_properties().content_settings.content_md5
    if stored is not None and bytes(stored) != md5.digest():
        raise StorageFailure(f"upload to {loc} is corrupt: stored MD5 differs from the file's")
    return md5.hexdigest()


def _read_full(f, n: int) -> bytes:
    """Up to N bytes, fewer only at end of file (pipes return short reads)."""
    parts, got = [], 0
    while got < n:
        part = f.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def upload_bytes(data: bytes, loc: BlobLocation | str, *, metadata: dict | None = None,
                 content_type: str = "application/octet-stream", overwrite: bool = True,
                 lease: str | None = None) -> None:
    """Write a small blob in one request (atomic). ``overwrite=False``: create only.
    ``lease``: the id of the lease this process holds on the blob."""
    from azure.storage.blob import ContentSettings
    loc = _as_location(loc)
    with _Guard(loc, "upload to"):
        _blob_client(loc).upload_blob(
            data, overwrite=overwrite, metadata=metadata, validate_content=True, lease=lease,
            content_settings=ContentSettings(content_type=content_type,
                                             content_md5=bytearray(hashlib.md5(data).digest())))


def read_bytes(loc: BlobLocation | str, limit: int | None = None) -> bytes:
    """Whole content of a small blob (a checkpoint, a JSON record)."""
    loc = _as_location(loc)
    limit = READ_BYTES_LIMIT if limit is None else limit
    with _Guard(loc, "read"):
        stream = _blob_client(loc).download_blob(max_concurrency=1)
        if stream.size > limit:
            raise StorageFailure(f"{loc} is {stream.size} bytes, more than the {limit} bytes "
                                 "this reader accepts")
        data = stream.readall()
    expected = stream.properties.content_settings.content_md5
    if expected and bytes(expected) != hashlib.md5(data).digest():
        raise StorageFailure(f"read of {loc} is corrupt: its MD5 does not match the blob's Content-MD5")
    return data


def list_blobs(prefix: BlobLocation | str, *, metadata: bool = False) -> Iterator[BlobInfo]:
    """Blobs whose names start with PREFIX's blob name (taken as-is: add ``/`` for a folder)."""
    loc = _as_location(prefix)
    with _Guard(loc, "list"):
        items = _container_client(loc).list_blobs(
            name_starts_with=loc.blob or None, include=["metadata"] if metadata else None)
        for b in items:
            yield BlobInfo(name=b.name, size=b.size, etag=b.etag, metadata=dict(b.metadata or {}),
                           last_modified=b.last_modified)


def delete(loc: BlobLocation | str, *, missing_ok: bool = True, lease: Any = None) -> bool:
    """Delete one blob. Returns False when it was already gone (and missing_ok)."""
    from azure.core.exceptions import ResourceNotFoundError
    loc = _as_location(loc)
    with _Guard(loc, "delete"):
        try:
            _blob_client(loc).delete_blob(lease=lease)
            return True
        except ResourceNotFoundError as e:
            if missing_ok and getattr(e, "error_code", None) != "ContainerNotFound":
                return False
            raise


def properties(loc: BlobLocation | str) -> BlobInfo:
    """Size, etag and metadata of one blob (StorageFailure 'blob-not-found' when absent)."""
    loc = _as_location(loc)
    with _Guard(loc, "check"):
        p = _blob_client(loc).get_blob_properties()
        return BlobInfo(name=loc.blob, size=p.size, etag=p.etag, metadata=dict(p.metadata or {}),
                        last_modified=p.last_modified)


class BlobLease:
    """A lease on one blob: while held, nobody else can lease, overwrite or delete it.

    ``BlobLease.acquire(loc, 60)`` returns None when another process holds a
    lease. Renew it well before it runs out; release it when done.
    """

    def __init__(self, loc: BlobLocation, client: Any):
        self.loc, self._client = loc, client

    @property
    def id(self) -> str:
        return self._client.id

    @classmethod
    def acquire(cls, loc: BlobLocation | str, seconds: int = 60) -> "BlobLease | None":
        loc = _as_location(loc)
        try:
            with _Guard(loc, "lease"):
                return cls(loc, _blob_client(loc).acquire_lease(lease_duration=seconds))
        except StorageFailure as e:
            if failure_reason(e) == "leased" or (failure_reason(e) == "http" and "409" in str(e)):
                return None
            raise

    def renew(self) -> None:
        with _Guard(self.loc, "renew the lease on"):
            self._client.renew()

    @staticmethod
    def break_now(loc: BlobLocation | str) -> None:
        """End whatever lease is on LOC at once (its holder is known to be dead)."""
        from azure.storage.blob import BlobLeaseClient
        loc = _as_location(loc)
        with _Guard(loc, "break the lease on"):
            BlobLeaseClient(_blob_client(loc)).break_lease(lease_break_period=0)

    def release(self) -> None:
        """Release the lease; never raises (a lost lease simply runs out)."""
        try:
            with _Guard(self.loc, "release the lease on"):
                self._client.release()
        except StorageFailure as e:
            if failure_reason(e) != "blob-not-found":  # deleted under the lease: nothing to release
                log.warning("%s", e)


def ensure_container(loc: BlobLocation | str) -> None:
    """Create LOC's container if it is missing (needs account-level rights)."""
    from azure.core.exceptions import ResourceExistsError
    loc = _as_location(loc)
    with _Guard(loc, "create the container of"):
        try:
            _container_client(loc).create_container()
        except ResourceExistsError:
            pass


def _guess_type(path: str) -> str:
    import mimetypes
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def fetch_to_local(location: str, directory: str | os.PathLike, account_url: str | None = None) -> Path:
    """Local path for LOCATION: itself when local, else a download into DIRECTORY.

    The local file name is derived safely from the blob name (no path traversal).
    """
    if not is_remote(location):
        return Path(location)
    loc = parse_blob_url(location, account_url)
    dest = Path(directory) / safe_local_name(loc.blob)
    download(loc, dest)
    return dest


def safe_local_name(blob_name: str, max_len: int = 120) -> str:
    """A flat, harmless file name for a blob: no separators, no leading dots, no '..'.

    Adds a short hash of the full name so different blobs never share a name.
    """
    base = blob_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".-") or "blob"
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or len(ext) > 8:
        stem, ext = base, ""
    digest = hashlib.sha256(blob_name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = stem[: max_len - len(ext) - 12]
    return f"{stem}-{digest}" + (f".{ext}" if ext else "")


# --------------------------------------------------------------------------- work dirs

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$")


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name) or ".." in name:
        raise ValueError(f"work-dir entry names are flat file names, not {name!r}")
    return name


class WorkDir:
    """Where a job keeps its resumable state: ``plan.json``, ``chunk-NNNNN.nut``,
    ``chunk-NNNNN.json`` ... Flat names only (letters, digits, ``._-``).

    Two implementations share this interface: :class:`LocalWorkDir` (a directory)
    and :class:`BlobWorkDir` (a blob prefix, so a job on nodes without a shared
    filesystem resumes from chunks kept in Blob storage). Every write is atomic:
    an entry is either absent or complete. Make one with :func:`open_work_dir`.
    """

    is_remote = False

    def put_file(self, local_path: str | os.PathLike, name: str) -> None:
        """Store a copy of LOCAL_PATH as NAME (replacing it)."""
        raise NotImplementedError

    def get_file(self, name: str, local_path: str | os.PathLike) -> bool:
        """Copy NAME to LOCAL_PATH; False when NAME is absent."""
        raise NotImplementedError

    def put_json(self, name: str, obj: Any) -> None:
        """Store OBJ as JSON under NAME (replacing it)."""
        raise NotImplementedError

    def get_json(self, name: str) -> Any | None:
        """The JSON object stored as NAME, or None when absent."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def list(self) -> list[str]:
        """Names of all complete entries, sorted."""
        raise NotImplementedError

    def remove(self, name: str) -> None:
        """Remove NAME if present."""
        raise NotImplementedError

    def remove_all(self) -> None:
        """Remove every entry (the job finished: its state is no longer needed)."""
        for name in self.list():
            self.remove(name)

    def __str__(self) -> str:  # pragma: no cover - overridden
        return self.__class__.__name__


class LocalWorkDir(WorkDir):
    """A work dir in a local directory (created on first use)."""

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)

    def path(self, name: str) -> Path:
        """The local path of NAME (the core may write there directly, atomically)."""
        return self.root / _check_name(name)

    def _atomic_write(self, name: str, writer) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{_check_name(name)}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def put_file(self, local_path, name):
        src = Path(local_path)
        if src.resolve() == self.path(name).resolve():
            return
        with open(src, "rb") as f:
            self._atomic_write(name, lambda out: shutil.copyfileobj(f, out, 1024 * 1024))

    def get_file(self, name, local_path):
        src = self.path(name)
        if not src.exists():
            return False
        dest = Path(local_path)
        if src.resolve() != dest.resolve():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        return True

    def put_json(self, name, obj):
        data = json.dumps(obj, indent=1, sort_keys=True).encode()
        self._atomic_write(name, lambda out: out.write(data))

    def get_json(self, name):
        try:
            return json.loads(self.path(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # torn or foreign file: treat as absent

    def exists(self, name):
        return self.path(name).exists()

    def list(self):
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_file() and _NAME_RE.match(p.name) and ".." not in p.name)

    def remove(self, name):
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def remove_all(self):
        super().remove_all()
        try:
            self.root.rmdir()
        except OSError:
            pass

    def __str__(self):
        return str(self.root)


class BlobWorkDir(WorkDir):
    """A work dir under a blob prefix: entry NAME is the blob ``PREFIX/NAME``.

    Files go up with :func:`upload` (committed last, so an entry is either
    absent or complete); JSON records are single-request writes.
    """

    is_remote = True

    def __init__(self, prefix: BlobLocation | str, account_url: str | None = None):
        self.prefix = _as_location(prefix, account_url).as_prefix()

    def _loc(self, name: str) -> BlobLocation:
        return self.prefix.child(_check_name(name))

    def put_file(self, local_path, name):
        upload(local_path, self._loc(name))

    def get_file(self, name, local_path):
        loc = self._loc(name)
        try:
            download(loc, local_path)
            return True
        except StorageFailure as e:
            if failure_reason(e) == "blob-not-found":
                return False
            raise

    def put_json(self, name, obj):
        upload_bytes(json.dumps(obj, indent=1, sort_keys=True).encode(), self._loc(name),
                     content_type="application/json")

    def get_json(self, name):
        loc = self._loc(name)
        try:
            data = read_bytes(loc, limit=64 * 1024 * 1024)
        except StorageFailure as e:
            if failure_reason(e) == "blob-not-found":
                return None
            raise
        try:
            return json.loads(data)
        except ValueError:
            return None

    def exists(self, name):
        return exists(self._loc(name))

    def list(self):
        start = len(self.prefix.blob)
        return sorted(b.name[start:] for b in list_blobs(self.prefix)
                      if "/" not in b.name[start:] and _NAME_RE.match(b.name[start:]))

    def remove(self, name):
        delete(self._loc(name))

    def __str__(self):
        return str(self.prefix)


def open_work_dir(location: str | os.PathLike, account_url: str | None = None) -> WorkDir:
    """A :class:`BlobWorkDir` for a Blob URL, else a :class:`LocalWorkDir`."""
    if is_remote(str(location)):
        return BlobWorkDir(str(location), account_url)
    return LocalWorkDir(location)


# --------------------------------------------------------------------------- `stylempi run` staging

class JobStaging:
    """Lets ``stylempi run`` take Blob URLs with no filesystem shared between ranks.

    Created on every rank by :func:`staged_run` before the job starts:

    * INPUT (remote): downloaded **once per node**: the first rank of each
      storage group (the ranks of one node, :meth:`Comm.share_on_node`)
      downloads it into its temp dir, the node's other ranks wait for it and
      decode from that file (:meth:`adopt` points ``prepared.input`` at it).
      Per node rather than ranged reads by chunk: rank 0 reads the whole file
      anyway (the frame index is a packet scan, the join copies every audio
      packet), and a seek in MP4/MKV reads the container index at either end
      of the file, so ranged reads would save little and cost a request per
      read.
    * ``--model`` (remote): rank 0 alone downloads it (only rank 0 reads it; the
      bytes travel to the others inside the plan).
    * OUTPUT (remote): rank 0 assembles into its temp dir, then :meth:`publish`
      uploads it (blocks committed last) before the chunks are deleted.
    * Work dir: remote when ``--work-dir`` is a Blob URL, or when OUTPUT is
      remote and no ``--work-dir`` is given (then beside OUTPUT, as locally).
      Each rank keeps its segments in a rank-local dir and :meth:`push_chunk`
      uploads each finished one (segment first, its JSON record last);
      :meth:`pull_chunks` gives rank 0 the finished chunks of an earlier, killed
      run, and :meth:`fetch_chunks` the chunks other ranks made.

    With a local ``--work-dir`` (and remote INPUT/OUTPUT) the work dir must be
    shared by all ranks, exactly as without Blob storage.
    """

    def __init__(self, options: Any, account_url: str | None, rank: int):
        self.rank = rank
        self.remote_input = parse_blob_url(options.input, account_url) if is_remote(options.input) else None
        self.remote_output = parse_blob_url(options.output, account_url) if is_remote(options.output) else None
        self.remote_model = parse_blob_url(options.model, account_url) if is_remote(options.model) else None
        work = options.work_dir
        if is_remote(work):
            self.remote_work: BlobLocation | None = parse_blob_url(work, account_url).as_prefix()
        elif work is None and self.remote_output is not None:
            parent = self.remote_output.blob.rsplit("/", 1)[0] + "/" if "/" in self.remote_output.blob else ""
            self.remote_work = self.remote_output.with_blob(parent)
        else:
            self.remote_work = None
        self.root = reaped_temp_dir(f"stylempi-r{rank}-")  # removed even if the rank is killed
        self.local_input: str | None = None
        self._job_prefix: BlobLocation | None = None
        self._lease: Any = None  # rank 0's BlobWorkLease on the work root

    @property
    def active(self) -> bool:
        return any((self.remote_input, self.remote_output, self.remote_model, self.remote_work))

    def localize(self, options: Any, comm: Any) -> None:
        """Download what this rank needs and rewrite OPTIONS to local paths.

        Every rank must call it (the node's ranks wait for their leader's download).
        """
        if self.remote_input is not None:
            options.input = self.local_input = self._node_copy(self.remote_input, comm)
        if self.remote_model is not None:
            dest = self.root / "model" / safe_local_name(self.remote_model.blob)
            if comm.is_root:
                download(self.remote_model, dest)
            options.model = str(dest)
        if self.remote_output is not None:
            (self.root / "output").mkdir()
            options.output = str(self.root / "output" / safe_local_name(self.remote_output.blob))
        if self.remote_work is not None:
            options.work_dir = str(self.root / "work")
            (self.root / "work").mkdir()

    def _node_copy(self, loc: BlobLocation, comm: Any) -> str:
        """Path of LOC on this node's disk: the node leader downloads, the others wait for it."""
        shared: str | None = None
        try:
            if comm.node_leader:
                dest = self.root / "input" / safe_local_name(loc.blob)
                download(loc, dest)
                shared = str(dest)
        finally:  # a failed download still releases the node's waiting ranks
            shared = comm.share_on_node(shared)
        if shared is None:
            raise StorageFailure(f"cannot download {loc}: it failed on this node's downloading rank")
        return shared

    # Called by stylempi.job -------------------------------------------------
    def _prefix_for(self, job_dir: Path | str) -> BlobLocation:
        job_dir = Path(job_dir)
        assert self.remote_work is not None
        return self.remote_work.child(f"{job_dir.parent.name}/{job_dir.name}/")

    def lock_work(self, job_dir: Path | str, output: str) -> None:
        """Rank 0, while planning: lease the Blob work root for the job's life (one job per OUTPUT)."""
        if self.remote_work is None:
            return
        from .worklock import LOCK_NAME, BlobWorkLease
        shown = str(self.remote_output) if self.remote_output is not None else output
        self._lease = BlobWorkLease.acquire(self.remote_work.child(f"{Path(job_dir).parent.name}/{LOCK_NAME}"),
                                            shown)

    def pull_chunks(self, job_dir: Path | str) -> None:
        """Rank 0, while planning: copy finished chunks of an earlier run into JOB_DIR."""
        if self.remote_work is None:
            return
        work = BlobWorkDir(self._prefix_for(job_dir))
        names = set(work.list())
        for name in sorted(names):
            if name.endswith(".json") and name.startswith("chunk-") and name[:-5] + ".nut" in names:
                work.get_file(name[:-5] + ".nut", Path(job_dir) / (name[:-5] + ".nut"))
                work.get_file(name, Path(job_dir) / name)

    def adopt(self, prepared: Any) -> None:
        """Every rank, after planning: use this rank's own input copy and work dir."""
        prepared.staging = self
        if self.local_input is not None:
            prepared.input = self.local_input
        if self.remote_work is not None:
            self._job_prefix = self._prefix_for(prepared.job_dir)
            local = self.root / "work" / Path(prepared.job_dir).parent.name / Path(prepared.job_dir).name
            local.mkdir(parents=True, exist_ok=True)
            prepared.job_dir = str(local)

    def push_chunk(self, segment: Path | str, record: Path | str) -> None:
        """Any rank: a chunk is durable locally; make it durable in Blob storage too."""
        if self._job_prefix is None:
            return
        work = BlobWorkDir(self._job_prefix)
        work.put_file(segment, Path(segment).name)
        work.put_file(record, Path(record).name)  # the record last: it marks the chunk done

    def fetch_chunks(self, job_dir: Path | str, indexes: list[int]) -> None:
        """Rank 0, before joining: download the segments other ranks made."""
        if self._job_prefix is None:
            return
        work = BlobWorkDir(self._job_prefix)
        for i in indexes:
            name = f"chunk-{i:05d}.nut"
            path = Path(job_dir) / name
            if not path.is_file():
                if not work.get_file(name, path):
                    raise StorageFailure(f"chunk {i} is missing from the work dir {self._job_prefix}")
            record = work.get_json(f"chunk-{i:05d}.json") if not (Path(job_dir) / f"chunk-{i:05d}.json").is_file() \
                else json.loads((Path(job_dir) / f"chunk-{i:05d}.json").read_text())
            if record and record.get("sha256"):
                if _sha256_file(path) != record["sha256"]:
                    raise StorageFailure(f"chunk {i} from {self._job_prefix} does not match its checksum")

    def publish(self, local_output: str) -> str:
        """Rank 0, after joining: upload OUTPUT; then drop the remote chunks. Returns OUTPUT for display."""
        if self._lease is not None and self._lease.lost:
            raise StorageFailure(f"lost the lease on the work dir ({self._lease.loc}): another job may "
                                 "have taken it over; rerun the same command")
        if self.remote_output is None:
            shown = local_output
        else:
            upload(local_output, self.remote_output)
            shown = str(self.remote_output)
        if self._job_prefix is not None:
            lock = self._lease.loc.blob if self._lease is not None else None
            for b in list_blobs(self._job_prefix.with_blob(self._job_prefix.blob.rsplit("/", 2)[0] + "/")):
                if b.name != lock:  # leased: deleted last, with the lease
                    delete(self._job_prefix.with_blob(b.name))
        if self._lease is not None:
            self._lease.release(delete=True)
            self._lease = None
        return shown

    def cleanup(self) -> None:
        """Remove this rank's temp dir. Called after the job's last collective, so no rank
        of the node still reads the input copy the node leader keeps there."""
        if self._lease is not None:  # a failed job: the work stays, the lease goes
            self._lease.release()
            self._lease = None
        remove_temp_dir(self.root)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class staged_run:
    """``with staged_run(options, account_url, comm) as options:`` around ``run_job``.

    A no-op when nothing is remote. Otherwise every rank localizes its inputs;
    a failure on any rank is shared so that every rank stops with the same
    message (printed once, by rank 0) instead of leaving others waiting.
    """

    def __init__(self, options: Any, account_url: str | None, comm: Any):
        self.options, self.account_url, self.comm = options, account_url, comm
        self.staging: JobStaging | None = None

    def __enter__(self):
        from .comm import SharedError
        from .errors import StylempiError
        error: tuple[str, int] | None = None
        try:
            staging = JobStaging(self.options, self.account_url, self.comm.rank)
            if staging.active:
                self.staging = staging
                staging.localize(self.options, self.comm)
                self.options.staging = staging
            else:
                staging.cleanup()
        except StylempiError as e:
            error = (f"rank {self.comm.rank}: {e}" if self.comm.size > 1 else str(e), e.exit_code)
        errors = self.comm.gather(error)
        first = self.comm.bcast(next((e for e in errors if e), None) if self.comm.is_root else None)
        if first is not None:
            if self.staging is not None:
                self.staging.cleanup()
            if self.comm.is_root:
                failure = StorageFailure(first[0])
                failure.exit_code = first[1]
                raise failure
            raise SharedError(first[0], first[1], reported=True)
        return self.options

    def __exit__(self, *exc):
        if self.staging is not None:
            self.staging.cleanup()
        return False
