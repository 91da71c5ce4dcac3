"""Blob URLs and blob names, pure: no environment, no network.

Anywhere stylempi takes a file (INPUT, OUTPUT, ``--model``, ``--work-dir``) it also
takes a Blob URL, in one of three forms, each optionally followed by a SAS query
(``?sv=...&sig=...``):

``az://CONTAINER/PATH``
    The account is given apart from the URL (:class:`Account`; the CLI takes it
    from ``--account-url``, else ``AZURE_STORAGE_ACCOUNT_URL``, else the endpoint
    in ``AZURE_STORAGE_CONNECTION_STRING``: :func:`stylempi.storage.azure.auth.locate`).
    PATH is taken literally (no percent-decoding).
``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH``
    Host-style URL (any host with a ``.blob.`` label: public and sovereign clouds).
``http(s)://HOST[:PORT]/ACCOUNT/CONTAINER/PATH``
    Path-style URL (Azurite, Azure Stack, IP endpoints).
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import urllib.parse
from dataclasses import dataclass, replace
from typing import NamedTuple

from ...errors import UsageError
from ..backend import safe_local_name  # noqa: F401  (re-exported: a blob's local file name)

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_SCHEMES = ("az://", "http://", "https://")


def is_remote(location: str | os.PathLike | None) -> bool:
    """True when LOCATION is a Blob URL (``az://``, ``http://`` or ``https://``)."""
    return isinstance(location, str) and location.lower().startswith(_SCHEMES)


def redact(url: str) -> str:
    """Every URL in URL (a message, say) without its query string or fragment (a SAS lives
    there) and without a user name and password before its host; other text unchanged."""
    text = re.sub(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@'\"]*@", r"\1", str(url))
    return re.sub(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?#'\"]*)[?#][^\s'\"]*", r"\1", text)


class Account(NamedTuple):
    """A storage account: its endpoint without query (``https://acct.blob.core.windows.net``,
    ``http://127.0.0.1:10000/devstoreaccount1``) and its name."""

    url: str
    name: str


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

    # The storage backend protocol's names (stylempi.storage.backend.Location).
    @property
    def key(self) -> str:
        return self.blob

    def with_key(self, key: str) -> "BlobLocation":
        return self.with_blob(key)

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
        se = self._sas_field("se")
        if se is None:
            return None
        try:
            return _dt.datetime.fromisoformat(se.replace("Z", "+00:00"))
        except ValueError:
            return None

    @property
    def sas_permissions(self) -> str | None:
        return self._sas_field("sp")

    def _sas_field(self, key: str) -> str | None:
        if not self.sas:
            return None
        values = urllib.parse.parse_qs(self.sas).get(key)
        return values[0] if values else None


def needs_account(url: str) -> bool:
    """True for an ``az://CONTAINER/...`` URL: its account must be given apart from it."""
    split = urllib.parse.urlsplit(str(url).strip())
    return split.scheme.lower() == "az" and bool(split.netloc)


def parse_blob_url(url: str, account: Account | None = None) -> BlobLocation:
    """Parse any of the three Blob URL forms (see the module docstring).

    ACCOUNT is used by ``az://`` URLs only (they name none). Raises
    :class:`UsageError` (one line, no query string) for malformed URLs, and for an
    ``az://`` URL without ACCOUNT.
    """
    return _parse(str(url).strip(), account, container_optional=False)


def parse_account_url(url: str) -> Account:
    """The account of an endpoint URL such as ``https://ACCOUNT.blob.core.windows.net``
    or ``http://127.0.0.1:10000/devstoreaccount1`` (UsageError when it is none)."""
    loc = _parse(url.rstrip("/") + "/x", None, container_optional=True)
    return Account(loc.account_url, loc.account_name)


def _parse(text: str, account: Account | None, container_optional: bool) -> BlobLocation:
    shown = redact(text)
    split = urllib.parse.urlsplit(text)
    scheme = split.scheme.lower()
    if scheme == "az":
        container = split.netloc
        blob = split.path.lstrip("/")  # literal, no percent-decoding
        if not container:
            raise UsageError(f"{shown}: an az:// URL reads az://CONTAINER/PATH")
        if account is None:
            raise UsageError(
                "an az:// URL needs a storage account: pass --account-url "
                "https://ACCOUNT.blob.core.windows.net, or set AZURE_STORAGE_ACCOUNT_URL "
                "or AZURE_STORAGE_CONNECTION_STRING")
    elif scheme in ("http", "https"):
        account, container, blob = _split_http(split, shown)
        if not container and container_optional:
            container = "x"
    else:
        raise UsageError(f"{shown}: not a Blob URL (expected az://, http:// or https://)")
    if not container_optional and not _CONTAINER_RE.match(container):
        raise UsageError(f"{shown}: {container!r} is not a valid container name "
                         "(3-63 lowercase letters, digits and single hyphens)")
    return BlobLocation(account_url=account.url, account_name=account.name, container=container,
                        blob=blob, sas=split.query or None)


def _split_http(split: urllib.parse.SplitResult, shown: str) -> tuple[Account, str, str]:
    """(account, container, blob) of a host-style or path-style http(s) URL."""
    if not split.hostname:
        raise UsageError(f"{shown}: no host in the Blob URL")
    scheme = split.scheme.lower()
    host = split.netloc.rsplit("@", 1)[-1]
    labels = split.hostname.split(".")
    segments = split.path.lstrip("/").split("/", 1)
    if len(labels) > 2 and labels[1] == "blob":  # host style: ACCOUNT.blob.SUFFIX
        account = Account(f"{scheme}://{host}", labels[0])
        container = urllib.parse.unquote(segments[0])
        rest = segments[1] if len(segments) > 1 else ""
    else:  # path style: HOST/ACCOUNT/...
        name = urllib.parse.unquote(segments[0])
        if not name:
            raise UsageError(f"{shown}: a path-style Blob URL reads "
                             "http(s)://HOST:PORT/ACCOUNT/CONTAINER/PATH")
        account = Account(f"{scheme}://{host}/{name}", name)
        tail = (segments[1] if len(segments) > 1 else "").split("/", 1)
        container = urllib.parse.unquote(tail[0])
        rest = tail[1] if len(tail) > 1 else ""
    return account, container, urllib.parse.unquote(rest)
