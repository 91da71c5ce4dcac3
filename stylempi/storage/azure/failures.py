"""Every Azure error becomes one clean :class:`~stylempi.errors.StorageFailure`.

Its message is one line that names the blob without its query string and
never contains a SAS, an account key or a connection string; its ``reason``
(:func:`failure_reason`) says what went wrong for code that must tell a
missing blob from a refused one. The SDK's exception is dropped, never
chained: its text may hold a URL with a SAS token.
"""
from __future__ import annotations

import binascii
import datetime as _dt
import urllib.parse

from ...errors import StorageFailure
from .auth import secrets
from .urls import BlobLocation, redact

#: Error codes of a 403 that mean "this credential may not do that" (not "this credential is wrong").
_NOT_ALLOWED_CODES = frozenset({"AuthorizationFailure", "AuthorizationResourceTypeMismatch",
                                "AuthorizationServiceMismatch", "AuthorizationSourceIPMismatch",
                                "AuthorizationProtocolMismatch", "AuthorizationPermissionMismatch"})
#: How each credential kind (stylempi.storage.azure.auth.Credential.kind) is named in a message.
_CREDENTIAL_NAMES = {"sas": "the SAS token", "key": "the account key",
                     "cs-sas": "the SAS in AZURE_STORAGE_CONNECTION_STRING"}


def failure_reason(exc: BaseException) -> str:
    """Machine-readable kind of a StorageFailure: 'blob-not-found', 'container-not-found',
    'denied', 'leased', 'condition', 'no-credential', 'unreachable', 'http' or 'other'."""
    return getattr(exc, "reason", "other")


def scrub(text: str) -> str:
    """TEXT (newlines kept) without URL query strings or the connection string's secrets."""
    out = redact(str(text))
    for s in sorted(secrets(), key=len, reverse=True):
        out = out.replace(s, "***")
    return out


def _one_clean_line(message: str, loc: BlobLocation) -> str:
    """One line, no query strings, no known secrets."""
    msg = redact(" ".join(str(message).split()))
    hidden = secrets()
    if loc.sas:
        hidden.append(loc.sas)
        hidden.extend(v for k, v in urllib.parse.parse_qsl(loc.sas) if k == "sig")
    for s in sorted(hidden, key=len, reverse=True):
        if s:
            msg = msg.replace(s, "***")
    return msg


def translate(exc: BaseException, loc: BlobLocation, action: str, credential_kind: str = "token") -> StorageFailure:
    """Turn any exception from the Azure SDK into one clean StorageFailure line.

    ACTION completes "cannot ACTION LOC"; CREDENTIAL_KIND is the link of the
    credential chain the request used (it decides how a refusal is explained).
    """
    if isinstance(exc, StorageFailure):
        return exc
    reason, message = _explain(exc, loc, action, credential_kind)
    failure = StorageFailure(_one_clean_line(message, loc))
    failure.reason = reason  # type: ignore[attr-defined]
    return failure


def _explain(exc: BaseException, loc: BlobLocation, action: str, kind: str) -> tuple[str, str]:
    """(reason, message) for any exception."""
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,
                                       ServiceRequestError, ServiceResponseError)
    where = str(loc)
    host = urllib.parse.urlsplit(loc.account_url).netloc
    if isinstance(exc, HttpResponseError) and getattr(exc, "response", None) is not None:
        return _http_answer(exc, loc, action, kind)
    if isinstance(exc, ClientAuthenticationError):
        # No HTTP response: azure-identity found no credential at all.
        return "no-credential", (
            f"cannot {action} {where}: no Azure credential found. Put a SAS token in the URL, "
            "set AZURE_STORAGE_CONNECTION_STRING, or sign in (managed identity, "
            "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or `az login`)")
    if isinstance(exc, ServiceRequestError):
        text = str(exc)
        if "non-TLS" in text or "https" in text.lower() and "bearer" in text.lower():
            return "unreachable", (f"cannot {action} {where}: Azure AD credentials need https; use a SAS "
                                   "or AZURE_STORAGE_CONNECTION_STRING for http endpoints")
        return "unreachable", f"cannot reach Blob storage at {host} to {action} {where}: {_why_unreachable(exc)}"
    if isinstance(exc, ServiceResponseError):
        return "unreachable", (f"connection to Blob storage at {host} failed during {action} of {where}: "
                               f"{_why_unreachable(exc)}")
    if isinstance(exc, (ValueError, TypeError, binascii.Error)):
        return "other", (f"cannot {action} {where}: the credentials are malformed or unusable "
                         f"({type(exc).__name__})")
    if isinstance(exc, OSError):
        return "other", f"cannot {action} {where}: local file error: {exc.strerror or type(exc).__name__}"
    return "other", f"cannot {action} {where}: {type(exc).__name__}"


def _http_answer(exc, loc: BlobLocation, action: str, kind: str) -> tuple[str, str]:
    """(reason, message) for an HTTP error response from the Blob service."""
    status = exc.status_code
    code = str(getattr(exc, "error_code", None) or "")
    where = str(loc)
    if code == "ContainerNotFound":
        return "container-not-found", (f"cannot {action} {where}: container '{loc.container}' does not "
                                       f"exist in account '{loc.account_name}'")
    if code == "BlobNotFound" or (status == 404 and action in ("download", "read", "delete", "check")):
        return "blob-not-found", f"cannot {action} {where}: no such blob"
    if status in (401, 403):
        return "denied", f"cannot {action} {where}: {_refusal(loc, kind, status, code)}"
    if status == 409 and code == "LeaseAlreadyPresent":
        return "leased", f"cannot {action} {where}: the blob is leased by another process"
    if status in (409, 412) and code in ("BlobAlreadyExists", "ConditionNotMet", ""):
        return "condition", f"cannot {action} {where}: the blob changed or exists already (condition not met)"
    return "http", f"cannot {action} {where}: Blob storage answered HTTP {status}" + (f" {code}" if code else "")


def _refusal(loc: BlobLocation, kind: str, status: int, code: str) -> str:
    """Why a request was refused (HTTP 401/403), in terms of the credential it used."""
    expiry = loc.expiry
    if kind == "sas" and expiry is not None and expiry <= _dt.datetime.now(_dt.timezone.utc):
        return f"the SAS token in the URL expired at {expiry.isoformat()}; make a new one"
    if code.startswith("AuthorizationPermissionMismatch") or code in _NOT_ALLOWED_CODES:
        perms = loc.sas_permissions
        extra = f" (its permissions are '{perms}')" if kind == "sas" and perms else ""
        return f"{_CREDENTIAL_NAMES.get(kind, 'the Azure credential')} does not allow this{extra}"
    if kind == "sas":
        return "the SAS token in the URL was refused (wrong signature, expired, or made for another resource)"
    if kind == "key":
        return f"the account key in AZURE_STORAGE_CONNECTION_STRING was refused by account '{loc.account_name}'"
    if kind == "cs-sas":
        return "the SAS in AZURE_STORAGE_CONNECTION_STRING was refused"
    return f"the Azure credential was refused (HTTP {status} {code}); does the identity have a Storage Blob Data role?"


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
