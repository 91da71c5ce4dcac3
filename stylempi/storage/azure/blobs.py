"""Blob operations: streaming transfers, small reads and writes, listings, leases.

Every function takes a :class:`~stylempi.storage.azure.urls.BlobLocation` or a Blob URL
(an ``az://`` URL's account then comes from the environment: :func:`~stylempi.storage.azure.auth.locate`).

Guarantees
----------
* Transfers stream in blocks; no blob is ever held whole in memory (except
  :func:`read_bytes`, which is for small things and refuses large blobs).
* :func:`upload` stages blocks (each MD5-checked by the service) and commits the
  block list last, so the blob appears only when complete; the whole file's
  MD5 is stored as the blob's Content-MD5 and :func:`download` verifies it.
* Every Azure error becomes :class:`~stylempi.errors.StorageFailure`, one clean
  line (:mod:`stylempi.storage.azure.failures`).
* Short retries and timeouts: an unreachable endpoint fails in seconds.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import StorageFailure
from ..files import atomic_write
from .auth import Credential, credential_for, locate
from .failures import failure_reason, translate
from .urls import BlobLocation, is_remote, safe_local_name

#: Block size for uploads and chunk size for downloads (bytes).
BLOCK_SIZE = 4 * 1024 * 1024
#: Retries per request after the first try, and client-side timeouts (seconds).
RETRIES = 2
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 120
#: read_bytes refuses blobs larger than this.
READ_BYTES_LIMIT = 512 * 1024 * 1024

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one call

class _Call:
    """``with _Call(loc, "download") as call:`` one operation on LOC.

    The clients it hands out use the credential chosen once for the call
    (:func:`~stylempi.storage.azure.auth.credential_for`, or the one given), and any
    SDK exception inside the block leaves it as a StorageFailure whose message
    explains a refusal in terms of that credential. The original exception is
    dropped (``from None``): its text may hold a URL with a SAS token.
    """

    def __init__(self, loc: BlobLocation, action: str, credential: Credential | None = None):
        self.loc, self.action, self.credential = loc, action, credential

    def service(self):
        from azure.storage.blob import BlobServiceClient
        _quiet_azure_logging()
        if self.credential is None:
            self.credential = credential_for(self.loc)
        try:
            return BlobServiceClient(account_url=self.loc.account_url, credential=self.credential.value,
                                     **_client_kwargs())
        except (ValueError, TypeError, binascii.Error):
            raise StorageFailure(f"cannot use the credentials for {self.loc.account_url}: "
                                 "the account key or SAS token is malformed") from None

    def blob(self):
        return self.service().get_blob_client(self.loc.container, self.loc.blob)

    def container(self):
        return self.service().get_container_client(self.loc.container)

    def __enter__(self) -> "_Call":
        return self

    def __exit__(self, et, ev, tb):
        if ev is None or isinstance(ev, (StorageFailure, KeyboardInterrupt, SystemExit, GeneratorExit)):
            return False
        if isinstance(ev, Exception):
            kind = self.credential.kind if self.credential is not None else "token"
            failure = translate(ev, self.loc, self.action, kind)
            failure.__suppress_context__ = True
            raise failure from None
        return False


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
    loc = locate(loc)
    with _Call(loc, "check") as call:
        from azure.core.exceptions import ResourceNotFoundError
        try:
            call.blob().get_blob_properties()
            return True
        except ResourceNotFoundError:
            return False


def download(loc: BlobLocation | str, local_path: str | os.PathLike) -> int:
    """Stream the blob to LOCAL_PATH (atomically: temp file, then rename). Returns bytes.

    Each chunk is read in turn (never the whole blob in memory); when the blob
    carries a Content-MD5, the file's MD5 is checked against it.
    """
    loc = locate(loc)
    dest = Path(local_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5()
    total = 0
    with atomic_write(dest) as out:
        with _Call(loc, "download") as call:
            stream = call.blob().download_blob(max_concurrency=1)
            expected = stream.properties.content_settings.content_md5
            for chunk in stream.chunks():
                out.write(chunk)
                md5.update(chunk)
                total += len(chunk)
        if expected and bytes(expected) != md5.digest():
            raise StorageFailure(f"download of {loc} is corrupt: its MD5 does not match the "
                                 "blob's Content-MD5")
    return total


def upload(local_path: str | os.PathLike, loc: BlobLocation | str, *,
           metadata: dict | None = None, content_type: str | None = None,
           block_size: int | None = None, overwrite: bool = True) -> str:
    """Upload LOCAL_PATH as a block blob; the blob appears only when complete.

    Blocks of BLOCK_SIZE are staged one at a time (each MD5-checked by the
    service), then the block list is committed with the whole file's MD5 as
    Content-MD5; the stored MD5 is read back and compared. With
    ``overwrite=False`` the commit fails if the blob exists. Returns the hex MD5.
    """
    from azure.storage.blob import ContentSettings
    loc = locate(loc)
    try:
        src = open(local_path, "rb")
    except OSError as e:
        raise StorageFailure(f"cannot upload {local_path}: {e.strerror}") from None
    with src, _Call(loc, "upload to") as call:
        client = call.blob()
        blocks, md5 = _stage_blocks(client, src, block_size or BLOCK_SIZE)
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


def _stage_blocks(client, src, size: int) -> tuple[list, Any]:
    """Stage SRC's bytes as uncommitted blocks of SIZE (one block for an empty file):
    the block list to commit, and the MD5 of everything staged."""
    from azure.storage.blob import BlobBlock
    tag = uuid.uuid4().hex[:16]
    md5 = hashlib.md5()
    blocks = []
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
    return blocks, md5


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
    loc = locate(loc)
    with _Call(loc, "upload to") as call:
        call.blob().upload_blob(
            data, overwrite=overwrite, metadata=metadata, validate_content=True, lease=lease,
            content_settings=ContentSettings(content_type=content_type,
                                             content_md5=bytearray(hashlib.md5(data).digest())))


def read_bytes(loc: BlobLocation | str, limit: int | None = None) -> bytes:
    """Whole content of a small blob (a checkpoint, a JSON record)."""
    loc = locate(loc)
    limit = READ_BYTES_LIMIT if limit is None else limit
    with _Call(loc, "read") as call:
        stream = call.blob().download_blob(max_concurrency=1)
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
    loc = locate(prefix)
    with _Call(loc, "list") as call:
        items = call.container().list_blobs(
            name_starts_with=loc.blob or None, include=["metadata"] if metadata else None)
        for b in items:
            yield BlobInfo(name=b.name, size=b.size, etag=b.etag, metadata=dict(b.metadata or {}),
                           last_modified=b.last_modified)


def delete(loc: BlobLocation | str, *, missing_ok: bool = True, lease: Any = None) -> bool:
    """Delete one blob. Returns False when it was already gone (and missing_ok)."""
    from azure.core.exceptions import ResourceNotFoundError
    loc = locate(loc)
    with _Call(loc, "delete") as call:
        try:
            call.blob().delete_blob(lease=lease)
            return True
        except ResourceNotFoundError as e:
            if missing_ok and getattr(e, "error_code", None) != "ContainerNotFound":
                return False
            raise


def properties(loc: BlobLocation | str) -> BlobInfo:
    """Size, etag and metadata of one blob (StorageFailure 'blob-not-found' when absent)."""
    loc = locate(loc)
    with _Call(loc, "check") as call:
        p = call.blob().get_blob_properties()
        return BlobInfo(name=loc.blob, size=p.size, etag=p.etag, metadata=dict(p.metadata or {}),
                        last_modified=p.last_modified)


class BlobLease:
    """A lease on one blob: while held, nobody else can lease, overwrite or delete it.

    ``BlobLease.acquire(loc, 60)`` returns None when another process holds a
    lease. Renew it well before it runs out; release it when done.
    """

    def __init__(self, loc: BlobLocation, client: Any, credential: Credential | None = None):
        self.loc, self._client, self._credential = loc, client, credential

    @property
    def id(self) -> str:
        return self._client.id

    @classmethod
    def acquire(cls, loc: BlobLocation | str, seconds: int = 60) -> "BlobLease | None":
        loc = locate(loc)
        try:
            with _Call(loc, "lease") as call:
                return cls(loc, call.blob().acquire_lease(lease_duration=seconds), call.credential)
        except StorageFailure as e:
            if failure_reason(e) == "leased" or (failure_reason(e) == "http" and "409" in str(e)):
                return None
            raise

    def renew(self) -> None:
        with _Call(self.loc, "renew the lease on", self._credential):
            self._client.renew()

    @staticmethod
    def break_now(loc: BlobLocation | str) -> None:
        """End whatever lease is on LOC at once (its holder is known to be dead)."""
        from azure.storage.blob import BlobLeaseClient
        loc = locate(loc)
        with _Call(loc, "break the lease on") as call:
            BlobLeaseClient(call.blob()).break_lease(lease_break_period=0)

    def release(self) -> None:
        """Release the lease; never raises (a lost lease simply runs out)."""
        try:
            with _Call(self.loc, "release the lease on", self._credential):
                self._client.release()
        except StorageFailure as e:
            if failure_reason(e) != "blob-not-found":  # deleted under the lease: nothing to release
                log.warning("%s", e)


def _guess_type(path: str) -> str:
    import mimetypes
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def fetch_to_local(location: str, directory: str | os.PathLike, account_url: str | None = None) -> Path:
    """Local path for LOCATION: itself when local, else a download into DIRECTORY.

    The local file name is derived safely from the blob name (no path traversal).
    """
    if not is_remote(location):
        return Path(location)
    loc = locate(location, account_url)
    dest = Path(directory) / safe_local_name(loc.blob)
    download(loc, dest)
    return dest
