"""The storage backend protocol, and the registry that picks a backend by a URL's scheme.

A *backend* is one storage service (Azure Blob Storage is the built-in one, stylempi.storage.azure);
a *location* is a place in it, named by a URL such as ``az://CONTAINER/PATH``. Job staging
(stylempi.job.staging) is written against :class:`Backend` and :class:`Location` alone, so a
second service needs a backend and a registered scheme, nothing else.

The registry maps a scheme (the part of a URL before ``://``, case-insensitive) to a *factory*:
``factory(settings) -> Backend``, where SETTINGS holds the run's storage options (today
``{"account_url": ...}`` from ``--account-url``; a backend ignores what it does not know). The
factory makes the backend's client, so a test or a plugin injects its own. Telling a URL from a
local path is pure (:func:`scheme_of`): no environment, no network.

Backends come from two places: :func:`register` (stylempi.storage's ``__init__`` registers Azure's
``az``, ``http`` and ``https``), and installed plugins: every entry point of the group
``stylempi.storage_backends`` names a scheme and its factory (``s3 = mypackage.s3:S3Backend``).
The entry points are read once, the first time a URL's scheme is not registered, in every
process that sees such a URL; so every ``mpirun`` rank finds the same plugins, provided the
package is installed (or on ``PYTHONPATH``) on every node. A registered scheme wins over a
plugin's, and a URL whose scheme nobody serves is a local path, as it always was.

Imports only stylempi.errors; never azure/ (which registers itself through stylempi.storage).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

from ..errors import StorageFailure

#: The entry-point group a plugin declares its backends in: NAME = scheme, value = factory.
ENTRY_POINT_GROUP = "stylempi.storage_backends"

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class Missing(StorageFailure):
    """The object is absent: what :meth:`Backend.get`, :meth:`Backend.read` and
    :meth:`Backend.acquire_lease` raise then, with the backend's own one-line message."""


class Location(Protocol):
    """A place in one backend: an object, or a prefix (a key ending in ``/``, or empty).

    ``key`` is the object's name inside its bucket or container, ``/``-separated; ``str()`` is
    the location's URL, safe to print (no secret in it).
    """

    @property
    def key(self) -> str: ...

    def with_key(self, key: str) -> "Location":
        """Another object of the same bucket, reached with the same credentials."""


class Lease(Protocol):
    """An exclusive, expiring hold on one object: while held, nobody else can lease, overwrite
    or delete it. It ends by itself unless renewed within the seconds it was taken for."""

    @property
    def id(self) -> str: ...

    def renew(self) -> None:
        """Extend the lease; StorageFailure when it is lost."""

    def release(self) -> None:
        """Give the lease back; never raises (a lease that cannot be released runs out)."""


class Backend(Protocol):
    """One storage service. Every failure is a :class:`StorageFailure` with a one-line message
    that holds no secret; an absent object is a :class:`Missing` where a method says so."""

    #: What the service is called in a job's stage lines ("Blob storage"); optional: "remote storage".
    service: str

    def locate(self, url: str) -> Location:
        """URL (of a scheme this backend serves) as a location; UsageError when malformed."""

    def get(self, loc: Location, local_path: Path) -> None:
        """Copy the object to LOCAL_PATH (atomically, checked); :class:`Missing` when absent."""

    def put(self, local_path: Path, loc: Location) -> None:
        """Store LOCAL_PATH as the object (replacing it); it appears only when complete."""

    def read(self, loc: Location, limit: int) -> bytes:
        """The whole content of a small object (StorageFailure above LIMIT bytes); :class:`Missing`
        when absent."""

    def write(self, data: bytes, loc: Location, *, create_only: bool = False, lease: Lease | None = None) -> bool:
        """Store DATA as the object at once. CREATE_ONLY: False, and nothing written, when it
        exists (or is leased). LEASE: the lease this process holds on it."""

    def list(self, prefix: Location) -> Iterable[str]:
        """The keys of all objects whose key starts with PREFIX's (taken as it is)."""

    def delete(self, loc: Location, *, lease: Lease | None = None) -> bool:
        """Remove the object (under LEASE, when leased); False when it was absent."""

    def acquire_lease(self, loc: Location, seconds: int) -> Lease | None:
        """Lease the object for SECONDS; None when another holds a lease on it; :class:`Missing`
        when the object is absent."""

    def break_lease(self, loc: Location) -> None:
        """End whatever lease is on the object at once (its holder is known to be dead)."""


Factory = Callable[[Mapping[str, Any]], Backend]

_factories: dict[str, Factory] = {}
_plugins: dict[str, Any] | None = None  # scheme -> entry point, read once


def register(schemes: Iterable[str], factory: Factory) -> None:
    """Serve SCHEMES (``"az"``, not ``"az://"``) with the backends FACTORY makes."""
    for scheme in schemes:
        _factories[scheme.lower()] = factory


def unregister(schemes: Iterable[str]) -> None:
    """Stop serving SCHEMES (a test's own backend, when the test ends)."""
    for scheme in schemes:
        _factories.pop(scheme.lower(), None)


def scheme_of(location: str | os.PathLike | None) -> str | None:
    """The lowercased scheme of a URL (``az`` of ``az://c/x``), None for anything else. A
    :class:`~pathlib.Path` is always local. Pure: says nothing of whether a backend serves it."""
    if not isinstance(location, str):
        return None
    match = _URL_RE.match(location)
    return match.group(1).lower() if match else None


def _plugin_entry_points() -> dict[str, Any]:
    global _plugins
    if _plugins is None:
        _plugins = {ep.name.lower(): ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return _plugins


def _factory(scheme: str | None) -> Factory | None:
    if scheme is None:
        return None
    if scheme not in _factories:
        entry = _plugin_entry_points().get(scheme)
        if entry is None:
            return None
        try:
            factory = entry.load()
        except Exception as exc:  # a broken plugin: one line, not a traceback
            raise StorageFailure(f"cannot load the storage backend for {scheme}:// URLs ({entry.value}): "
                                 f"{type(exc).__name__}: {exc}") from None
        register([scheme], factory)
    return _factories[scheme]


def served(location: str | os.PathLike | None) -> bool:
    """True when LOCATION is a URL whose scheme a registered (or plugged-in) backend serves."""
    return _factory(scheme_of(location)) is not None


def backend_for_scheme(scheme: str, settings: Mapping[str, Any] | None = None) -> Backend:
    """The backend serving SCHEME (``"az"``), made with SETTINGS."""
    factory = _factory(scheme.lower())
    if factory is None:
        raise ValueError(f"no storage backend serves {scheme}:// URLs")
    return factory(settings or {})


def place(url: str, settings: Mapping[str, Any] | None = None) -> "Place":
    """The backend serving URL (made with SETTINGS) and URL as one of its locations."""
    scheme = scheme_of(url)
    if scheme is None:
        raise ValueError(f"{url!r} is not a URL: check served() first")
    backend = backend_for_scheme(scheme, settings)
    return Place(backend, backend.locate(url))


@dataclass(frozen=True)
class Place:
    """A location together with the backend that serves it: what staging moves files through."""

    backend: Backend
    loc: Location

    @property
    def key(self) -> str:
        return self.loc.key

    def __str__(self) -> str:
        return str(self.loc)

    def with_key(self, key: str) -> "Place":
        return Place(self.backend, self.loc.with_key(key))

    def child(self, name: str) -> "Place":
        """The location NAME below this one, taken as a prefix."""
        return self.with_key(as_prefix_key(self.key) + name.lstrip("/"))

    def as_prefix(self) -> "Place":
        """This location as a prefix: its key with a trailing ``/`` (empty stays empty)."""
        return self.with_key(as_prefix_key(self.key))

    @property
    def name(self) -> str:
        """The last ``/``-separated part of the key."""
        return self.key.rstrip("/").rsplit("/", 1)[-1]

    def get(self, local_path: str | os.PathLike) -> None:
        self.backend.get(self.loc, Path(local_path))

    def put(self, local_path: str | os.PathLike) -> None:
        self.backend.put(Path(local_path), self.loc)

    def read(self, limit: int) -> bytes:
        return self.backend.read(self.loc, limit)

    def write(self, data: bytes, *, create_only: bool = False, lease: Lease | None = None) -> bool:
        return self.backend.write(data, self.loc, create_only=create_only, lease=lease)

    def list(self) -> list[str]:
        return list(self.backend.list(self.loc))

    def delete(self, *, lease: Lease | None = None) -> bool:
        return self.backend.delete(self.loc, lease=lease)


def service_name(where: Place) -> str:
    """What WHERE's service is called in messages: its backend's ``service``, else "remote storage"."""
    return getattr(where.backend, "service", None) or "remote storage"


def as_prefix_key(key: str) -> str:
    """KEY with a trailing ``/``, unless it is empty (the whole bucket) or has one."""
    return key if not key or key.endswith("/") else key + "/"


def parent_key(key: str) -> str:
    """The prefix holding KEY (``a/b/`` for ``a/b/c`` and for ``a/b/c/``; empty at the top)."""
    head = key.rstrip("/").rpartition("/")[0]
    return head + "/" if head else ""


def safe_local_name(blob_name: str, max_len: int = 120) -> str:
    """A flat, harmless file name for an object's key: no separators, no leading dots, no '..'.

    Adds a short hash of the full name so different objects never share a name.
    """
    base = blob_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".-") or "blob"
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or len(ext) > 8:
        stem, ext = base, ""
    digest = hashlib.sha256(blob_name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = stem[: max_len - len(ext) - 12]
    return f"{stem}-{digest}" + (f".{ext}" if ext else "")
