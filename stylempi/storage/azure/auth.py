"""Which account an ``az://`` URL means, and which credential a request uses.

Everything here that reads the environment reads it at the edge, once per
call, and hands plain values on: :func:`locate` gives an ``az://`` URL its
account; :func:`credential_for` decides a blob's credential.

Credentials, first match wins
-----------------------------
1. a SAS token in the URL's query string;
2. ``AZURE_STORAGE_CONNECTION_STRING`` (account key or SAS), when it names the
   same account as the URL;
3. ``DefaultAzureCredential`` from azure-identity (environment service
   principal, workload/managed identity, Azure CLI login ...); https only. A
   managed identity is asked for by client id when ``AZURE_CLIENT_ID`` or Azure
   ML's ``DEFAULT_IDENTITY_CLIENT_ID`` is set.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from ...errors import StorageFailure, UsageError
from .urls import Account, BlobLocation, needs_account, parse_account_url, parse_blob_url

ENV_ACCOUNT_URL = "AZURE_STORAGE_ACCOUNT_URL"
ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"


def locate(loc: BlobLocation | str, account_url: str | None = None) -> BlobLocation:
    """LOC parsed; an ``az://`` URL's account is ACCOUNT_URL, else the environment's.

    The public operations take either a :class:`BlobLocation` or a URL and call this.
    """
    if isinstance(loc, BlobLocation):
        return loc
    return parse_blob_url(loc, account_from_env(account_url) if needs_account(loc) else None)


def account_from_env(account_url: str | None = None) -> Account | None:
    """ACCOUNT_URL, else ``AZURE_STORAGE_ACCOUNT_URL``, else the connection string's endpoint."""
    url = account_url or os.environ.get(ENV_ACCOUNT_URL)
    if url:
        return parse_account_url(url)
    cs = os.environ.get(ENV_CONNECTION_STRING)
    if cs:
        parsed = parse_connection_string(cs)
        return Account(parsed.endpoint, parsed.account_name)
    return None


# --------------------------------------------------------------------------- connection strings

@dataclass(frozen=True)
class ConnectionString:
    """What ``AZURE_STORAGE_CONNECTION_STRING`` says (never printed: it holds a secret)."""

    endpoint: str
    account_name: str
    #: ``{"account_name", "account_key"}``, a SAS string, or None.
    credential: Any

    def __repr__(self) -> str:
        return f"ConnectionString({self.endpoint!r}, {self.account_name!r}, ***)"


def parse_connection_string(cs: str) -> ConnectionString:
    """Blob endpoint, account name and credential of a connection string.

    Errors never quote the string.
    """
    pairs = [p.split("=", 1) for p in cs.strip().rstrip(";").split(";") if p.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise StorageFailure("AZURE_STORAGE_CONNECTION_STRING is malformed "
                             "(expected Key=Value pairs separated by ';')")
    s = {k.strip().lower(): v.strip() for k, v in pairs}
    if s.get("usedevelopmentstorage", "").lower() == "true":
        from azure.storage.blob._shared.constants import DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY  # type: ignore
        return ConnectionString(f"http://127.0.0.1:10000/{DEV_ACCOUNT_NAME}", DEV_ACCOUNT_NAME, {
            "account_name": DEV_ACCOUNT_NAME, "account_key": DEV_ACCOUNT_KEY})
    name = s.get("accountname")
    endpoint = s.get("blobendpoint")
    if not endpoint:
        if not name:
            raise StorageFailure("AZURE_STORAGE_CONNECTION_STRING names neither AccountName "
                                 "nor BlobEndpoint")
        endpoint = (f"{s.get('defaultendpointsprotocol', 'https')}://{name}.blob."
                    f"{s.get('endpointsuffix', 'core.windows.net')}")
    try:
        account = parse_account_url(endpoint)
    except UsageError:
        raise StorageFailure("AZURE_STORAGE_CONNECTION_STRING has an unusable BlobEndpoint") from None
    name = name or account.name
    if "accountkey" in s and name:
        cred: Any = {"account_name": name, "account_key": s["accountkey"]}
    else:
        cred = s.get("sharedaccesssignature")
    return ConnectionString(account.url, name, cred)


def secrets() -> list[str]:
    """Text no message may show: the connection string and its key or SAS (even a malformed one)."""
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


# --------------------------------------------------------------------------- the credential chain

@dataclass(frozen=True)
class Credential:
    """The credential a request for one blob uses, and which link of the chain gave it."""

    #: 'sas' (the URL's), 'key' or 'cs-sas' (the connection string's), or 'token' (Azure AD).
    kind: str
    #: What ``BlobServiceClient(credential=...)`` takes.
    value: Any = None

    def __repr__(self) -> str:
        return f"Credential({self.kind!r}, ***)"


def credential_for(loc: BlobLocation) -> Credential:
    """The first credential of the chain (module docstring) that applies to LOC's account.

    StorageFailure (reason 'no-credential') when only Azure AD is left and the
    endpoint is plain http.
    """
    if loc.sas:
        return Credential("sas", loc.sas)
    cs = os.environ.get(ENV_CONNECTION_STRING)
    if cs:
        parsed = parse_connection_string(cs)
        if parsed.account_name == loc.account_name and parsed.credential:
            return Credential("key" if isinstance(parsed.credential, dict) else "cs-sas", parsed.credential)
    if not loc.account_url.lower().startswith("https://"):
        failure = StorageFailure(
            f"no usable credential for {loc.account_url}: Azure AD credentials need https; "
            "for an http endpoint (Azurite) put a SAS token in the URL or set "
            "AZURE_STORAGE_CONNECTION_STRING")
        failure.reason = "no-credential"  # type: ignore[attr-defined]
        raise failure
    return Credential("token", _default_credential_instance())


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


def _default_credential_instance():
    """One DefaultAzureCredential per process: it caches its tokens."""
    global _default_credential
    with _cred_lock:
        if _default_credential is None:
            from azure.identity import DefaultAzureCredential
            _default_credential = DefaultAzureCredential(
                exclude_interactive_browser_credential=True,
                managed_identity_client_id=managed_identity_client_id())
        return _default_credential
