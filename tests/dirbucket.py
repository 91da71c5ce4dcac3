"""A second storage backend, the tests' own: buckets that are local directories, with leases
that expire as Blob leases do. It knows stylempi only through the backend protocol
(stylempi.storage.backend), so a whole job run through it shows that staging needs nothing
of Azure.

URLs read ``dirbucket://BUCKET/KEY``; the buckets live under the directory named by
``$DIRBUCKET_ROOT`` (read when a backend is made: the client's setting). The mpirun ranks
find the scheme through an entry point (:func:`install_plugin`), as an installed plugin would.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from stylempi.errors import StorageFailure, UsageError
from stylempi.storage.backend import ENTRY_POINT_GROUP, Missing

SCHEME = "dirbucket"
ENV_ROOT = "DIRBUCKET_ROOT"
_URL_RE = re.compile(r"^([a-z][a-z0-9+.-]*)://([a-z0-9][a-z0-9-]{1,62})(?:/(.*))?$", re.IGNORECASE)


@dataclass(frozen=True)
class DirLocation:
    bucket: str
    key: str = ""
    scheme: str = SCHEME

    def with_key(self, key: str) -> "DirLocation":
        return replace(self, key=key)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"


def parse(url: str) -> DirLocation:
    """Pure: ``dirbucket://BUCKET/KEY`` (or another scheme this backend is registered for) as a
    location; UsageError when malformed."""
    match = _URL_RE.match(url)
    if not match or ".." in (match.group(3) or "").split("/"):
        raise UsageError(f"{url}: a {SCHEME} URL reads {SCHEME}://BUCKET/KEY")
    return DirLocation(match.group(2).lower(), match.group(3) or "", match.group(1).lower())


class DirLease:
    def __init__(self, bucket: "DirBucket", loc: DirLocation, lease_id: str):
        self._bucket, self.loc, self.id = bucket, loc, lease_id

    def renew(self) -> None:
        with self._bucket.locked():
            if self._bucket.holder(self.loc) != self.id:
                raise StorageFailure(f"cannot renew the lease on {self.loc}: it is gone")
            self._bucket.write_lease(self.loc, self.id)

    def release(self) -> None:
        with self._bucket.locked():
            if self._bucket.holder(self.loc) == self.id:
                self._bucket.lease_path(self.loc).unlink(missing_ok=True)


class DirBucket:
    """The backend (stylempi.storage.backend.Backend) over ``$DIRBUCKET_ROOT/BUCKET/KEY``."""

    service = "a directory bucket"

    def __init__(self, settings=None):
        self.root = Path(os.environ[ENV_ROOT])
        self.seconds = 15

    # where things are -----------------------------------------------------------------
    def locate(self, url: str) -> DirLocation:
        return parse(url)

    def path(self, loc: DirLocation) -> Path:
        return self.root / loc.bucket / loc.key

    def lease_path(self, loc: DirLocation) -> Path:
        return self.root / ".leases" / loc.bucket / (loc.key.replace("/", "%") + ".lease")

    @contextmanager
    def locked(self):
        """One lease decision at a time across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def holder(self, loc: DirLocation) -> str | None:
        """The id of the unexpired lease on LOC, if any."""
        try:
            lease_id, until = self.lease_path(loc).read_text().split()
        except (OSError, ValueError):
            return None
        return lease_id if float(until) > time.time() else None

    def write_lease(self, loc: DirLocation, lease_id: str) -> None:
        self._atomic(self.lease_path(loc), f"{lease_id} {time.time() + self.seconds}".encode())

    def _atomic(self, dest: Path, data: bytes | None = None, source: Path | None = None) -> None:
        temp = self.root / ".tmp" / uuid.uuid4().hex
        temp.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copyfile(source, temp)
        else:
            temp.write_bytes(data or b"")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, dest)

    def _existing(self, loc: DirLocation, action: str) -> Path:
        path = self.path(loc)
        if not path.is_file():
            raise Missing(f"cannot {action} {loc}: no such object")
        return path

    def _check_lease(self, loc: DirLocation, lease) -> None:
        held = self.holder(loc)
        if held is not None and (lease is None or lease.id != held):
            raise StorageFailure(f"cannot change {loc}: it is leased by another process")

    # the protocol ----------------------------------------------------------------------
    def get(self, loc: DirLocation, local_path: Path) -> None:
        source = self._existing(loc, "download")
        local_path.parent.mkdir(parents=True, exist_ok=True)
        temp = local_path.with_name(local_path.name + ".part")
        shutil.copyfile(source, temp)
        os.replace(temp, local_path)

    def put(self, local_path: Path, loc: DirLocation) -> None:
        self._atomic(self.path(loc), source=local_path)

    def read(self, loc: DirLocation, limit: int) -> bytes:
        path = self._existing(loc, "read")
        if path.stat().st_size > limit:
            raise StorageFailure(f"{loc} is larger than {limit} bytes")
        return path.read_bytes()

    def write(self, data: bytes, loc: DirLocation, *, create_only: bool = False, lease=None) -> bool:
        with self.locked():
            if create_only and self.path(loc).exists():
                return False
            self._check_lease(loc, lease)
            self._atomic(self.path(loc), data)
            return True

    def list(self, prefix: DirLocation):
        base = self.root / prefix.bucket
        keys = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) if base.is_dir() else ()
        return sorted(k for k in keys if k.startswith(prefix.key))

    def delete(self, loc: DirLocation, *, lease=None) -> bool:
        with self.locked():
            self._check_lease(loc, lease)
            self.lease_path(loc).unlink(missing_ok=True)
            try:
                self.path(loc).unlink()
                return True
            except FileNotFoundError:
                return False

    def acquire_lease(self, loc: DirLocation, seconds: int) -> DirLease | None:
        with self.locked():
            self._existing(loc, "lease")
            if self.holder(loc) is not None:
                return None
            self.seconds = seconds
            lease = DirLease(self, loc, uuid.uuid4().hex)
            self.write_lease(loc, lease.id)
            return lease

    def break_lease(self, loc: DirLocation) -> None:
        with self.locked():
            self.lease_path(loc).unlink(missing_ok=True)


def install_plugin(site: Path) -> Path:
    """Declare this backend in SITE as an installed package would (a dist-info with an entry
    point in stylempi's group); a process with SITE and tests/ on its path then serves the scheme."""
    info = site / "dirbucket_test-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dirbucket-test\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{SCHEME} = dirbucket:DirBucket\n")
    return site
