"""Azure Blob Storage for stylempi: URLs, credentials, streaming transfers, job staging.

Anywhere stylempi takes a file (INPUT, OUTPUT, ``--model``, ``--work-dir``) it
also takes a Blob URL: ``az://CONTAINER/PATH`` (the account from
``--account-url``, ``AZURE_STORAGE_ACCOUNT_URL`` or the connection string), a
host-style ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`` or a
path-style ``http(s)://HOST[:PORT]/ACCOUNT/CONTAINER/PATH``, each optionally
with a SAS query. One module per concern:

``urls``
    The three URL forms and blob names, parsed purely (no environment).
``auth``
    The environment, read at the edge: the account of an ``az://`` URL, and the
    credential chain (SAS in the URL, then ``AZURE_STORAGE_CONNECTION_STRING``,
    then ``DefaultAzureCredential``), decided once per operation.
``failures``
    Every Azure error as one clean :class:`~stylempi.errors.StorageFailure` line
    that never shows a SAS, an account key or a connection string.
``blobs``
    Transfers (streamed, blocks committed last, MD5-checked), small reads and
    writes, listings, leases; short retries and timeouts.
``staging``
    ``stylempi run`` on Blob URLs without a filesystem shared between ranks.

The names below are the whole public surface: ``from stylempi import storage``,
then ``storage.download(...)``.
"""
from __future__ import annotations

from .auth import ENV_ACCOUNT_URL, ENV_CONNECTION_STRING, locate, managed_identity_client_id
from .blobs import (BlobInfo, BlobLease, delete, download, exists, fetch_to_local, list_blobs, properties,
                    read_bytes, upload, upload_bytes)
from .failures import failure_reason, scrub
from .staging import BlobWorkDir, JobStaging, staged_run
from .urls import Account, BlobLocation, is_remote, parse_account_url, parse_blob_url, redact, safe_local_name

__all__ = [
    "Account", "BlobLocation", "BlobInfo", "BlobLease", "BlobWorkDir", "JobStaging", "staged_run",
    "is_remote", "parse_blob_url", "parse_account_url", "locate", "redact", "safe_local_name",
    "download", "upload", "upload_bytes", "read_bytes", "exists", "list_blobs", "delete", "properties",
    "fetch_to_local", "failure_reason", "scrub", "managed_identity_client_id",
    "ENV_ACCOUNT_URL", "ENV_CONNECTION_STRING",
]
