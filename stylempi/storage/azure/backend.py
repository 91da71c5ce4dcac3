"""Azure Blob Storage as a stylempi.storage.backend.Backend, for ``az://``, ``http://`` and
``https://`` URLs (stylempi.storage registers it).

Each method is one of stylempi.storage.azure.blobs' operations, with "absent" told apart
as the protocol asks; messages, retries, checks and leases are those of blobs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from ...errors import StorageFailure
from ..backend import Missing
from .auth import locate
from .blobs import BlobLease, delete, download, list_blobs, read_bytes, upload, upload_bytes
from .failures import failure_reason
from .urls import BlobLocation

#: The URL schemes of the three Blob URL forms (stylempi.storage.azure.urls).
SCHEMES = ("az", "http", "https")


def _missing(exc: StorageFailure) -> StorageFailure:
    """EXC as a Missing when it says the blob is absent (same message, same reason), else EXC."""
    if failure_reason(exc) != "blob-not-found":
        return exc
    missing = Missing(str(exc))
    missing.reason = "blob-not-found"  # type: ignore[attr-defined]
    return missing


class AzureBackend:
    """Blob storage; ``az://`` URLs take their account from ``settings["account_url"]``, else
    from the environment (stylempi.storage.azure.auth.locate)."""

    service = "Blob storage"

    def __init__(self, settings: Mapping[str, Any] | None = None):
        self.account_url = (settings or {}).get("account_url")

    def locate(self, url: str) -> BlobLocation:
        return locate(url, self.account_url)

    def get(self, loc: BlobLocation, local_path: Path) -> None:
        try:
            download(loc, local_path)
        except StorageFailure as e:
            raise _missing(e) from None

    def put(self, local_path: Path, loc: BlobLocation) -> None:
        upload(local_path, loc)

    def read(self, loc: BlobLocation, limit: int) -> bytes:
        try:
            return read_bytes(loc, limit=limit)
        except StorageFailure as e:
            raise _missing(e) from None

    def write(self, data: bytes, loc: BlobLocation, *, create_only: bool = False, lease: Any = None) -> bool:
        try:
            upload_bytes(data, loc, overwrite=not create_only, lease=lease.id if lease is not None else None)
            return True
        except StorageFailure as e:
            if create_only and failure_reason(e) in ("condition", "leased"):
                return False
            raise

    def list(self, prefix: BlobLocation) -> Iterator[str]:
        return (b.name for b in list_blobs(prefix))

    def delete(self, loc: BlobLocation, *, lease: Any = None) -> bool:
        return delete(loc, lease=lease.id if lease is not None else None)

    def acquire_lease(self, loc: BlobLocation, seconds: int) -> BlobLease | None:
        try:
            return BlobLease.acquire(loc, seconds)
        except StorageFailure as e:
            raise _missing(e) from None

    def break_lease(self, loc: BlobLocation) -> None:
        BlobLease.break_now(loc)
