"""Where files live: local files (files, tempdirs, safefiles), the storage backend protocol and its scheme
registry (backend), Azure Blob Storage as the built-in backend (azure/: URLs, credentials,
streaming transfers, leases), and a work dir's lease in any backend (worklease).

Anywhere stylempi takes a file (INPUT, OUTPUT, ``--model``, ``--work-dir``) it
also takes a Blob URL: ``az://CONTAINER/PATH`` (the account from
``--account-url``, ``AZURE_STORAGE_ACCOUNT_URL`` or the connection string), a
host-style ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`` or a
path-style ``http(s)://HOST[:PORT]/ACCOUNT/CONTAINER/PATH``, each optionally
with a SAS query. One module per concern:

``files``, ``tempdirs``, ``holders``, ``safefiles``
    Local files: atomic writes, checksums, reaped temporary dirs, who holds a
    lock, paths made without following a planted link. Imported by every
    layer, so they import nothing of stylempi but its errors.
``azure.urls``
    The three URL forms and blob names, parsed purely (no environment).
``azure.auth``
    The environment, read at the edge: the account of an ``az://`` URL, and the
    credential chain (SAS in the URL, then ``AZURE_STORAGE_CONNECTION_STRING``,
    then ``DefaultAzureCredential``), decided once per operation.
``azure.failures``
    Every Azure error as one clean :class:`~stylempi.errors.StorageFailure` line
    that never shows a SAS, an account key or a connection string.
``azure.blobs``
    Transfers (streamed, blocks committed last, MD5-checked), small reads and
    writes, listings, leases; short retries and timeouts.
``backend``
    The backend protocol (get, put, read, write, list, delete, lease) and the registry that
    maps a URL's scheme to a backend factory. This ``__init__`` registers Azure for ``az``,
    ``http`` and ``https``. Another backend is added by calling
    ``stylempi.storage.backend.register(schemes, factory)``, or, so that every ``mpirun``
    rank has it, by an installed package that declares it in the entry-point group
    ``stylempi.storage_backends`` (``myscheme = mypackage.module:factory``), read once per
    process, the first time a URL's scheme is not registered.
``azure.backend``
    Blob storage behind that protocol (``AzureBackend``).
``worklease``
    The work dir's lease: one job per OUTPUT (as stylempi.job.worklock locally), in any backend.

The names below are the Blob surface: ``from stylempi import storage``, then
``storage.download(...)``. This ``__init__`` imports only ``backend`` and ``azure/`` (which
import nothing above the local modules), so that any layer may import ``storage.files``.
Nothing here imports stylempi.job: moving a job's files through a backend is the job's own
concern (stylempi.job.staging, written against the protocol alone).
"""
from __future__ import annotations

from .azure.auth import ENV_ACCOUNT_URL, ENV_CONNECTION_STRING, locate, managed_identity_client_id
from .azure.blobs import (BlobInfo, BlobLease, delete, download, exists, fetch_to_local, list_blobs, properties,
                          read_bytes, upload, upload_bytes)
from .azure.failures import failure_reason, scrub
from .azure.urls import Account, BlobLocation, is_remote, parse_account_url, parse_blob_url, redact, safe_local_name
from .azure.backend import SCHEMES as _AZURE_SCHEMES, AzureBackend
from .backend import register as _register

_register(_AZURE_SCHEMES, AzureBackend)  # the built-in backend: Blob URLs

__all__ = [
    "Account", "BlobLocation", "BlobInfo", "BlobLease",
    "is_remote", "parse_blob_url", "parse_account_url", "locate", "redact", "safe_local_name",
    "download", "upload", "upload_bytes", "read_bytes", "exists", "list_blobs", "delete", "properties",
    "fetch_to_local", "failure_reason", "scrub", "managed_identity_client_id",
    "ENV_ACCOUNT_URL", "ENV_CONNECTION_STRING",
]
