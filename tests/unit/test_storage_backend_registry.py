"""The storage backend registry (stylempi.storage.backend): a URL's scheme picks a backend,
purely; a plugin's entry point adds one; staging knows nothing of Azure."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import dirbucket
from conftest import ROOT
from stylempi.errors import StorageFailure, UsageError
from stylempi.storage import backend
from stylempi.storage.azure.backend import AzureBackend
from stylempi.storage.azure.urls import BlobLocation


@pytest.mark.parametrize("text, scheme", [
    ("az://c/x.mp4", "az"), ("HTTPS://a.blob.core.windows.net/c/x", "https"), ("s3://b/k", "s3"),
    ("dir+x.1://b", "dir+x.1"), ("clip.mp4", None), ("/data/az/clip.mp4", None), ("c:/x", None),
    ("az:/c/x", None), ("1az://c", None), ("", None), (None, None), (Path("az://x"), None)])
def test_scheme_of_is_pure_parsing(text, scheme):
    assert backend.scheme_of(text) == scheme


def test_azure_serves_the_three_blob_url_forms_and_nothing_else():
    for url in ("az://c/x", "http://127.0.0.1:10000/acct/c/x", "https://a.blob.core.windows.net/c/x"):
        assert backend.served(url)
    for local in ("clip.mp4", "nosuchscheme://b/k", Path("az://c/x"), None):
        assert not backend.served(local)
    place = backend.place("https://a.blob.core.windows.net/cont/dir/x.mp4?sig=SECRET")
    assert isinstance(place.backend, AzureBackend) and isinstance(place.loc, BlobLocation)
    assert place.key == "dir/x.mp4" and str(place) == "https://a.blob.core.windows.net/cont/dir/x.mp4"


def test_az_urls_take_the_account_from_the_settings():
    place = backend.place("az://cont/a/b", {"account_url": "https://acct.blob.core.windows.net"})
    assert (place.loc.account_name, place.loc.container, place.key) == ("acct", "cont", "a/b")


@pytest.fixture
def scheme():
    """A scheme registered for one test, gone after it."""
    backend.register(["TestDir"], lambda settings: Recorder(settings))
    yield "testdir"
    backend.unregister(["testdir"])


class Recorder(dirbucket.DirBucket):
    def __init__(self, settings):
        self.settings = settings


def test_a_registered_scheme_gets_its_factory_with_the_settings(scheme):
    assert backend.served("TESTDIR://bucket/k") and backend.served("testdir://bucket/k")
    place = backend.place("testdir://bucket/a/b/c.mp4", {"account_url": None, "extra": 1})
    assert isinstance(place.backend, Recorder) and place.backend.settings == {"account_url": None, "extra": 1}
    assert place.key == "a/b/c.mp4" and str(place) == "testdir://bucket/a/b/c.mp4"
    backend.unregister([scheme])
    assert not backend.served("testdir://bucket/k")


def test_place_names_its_neighbours_by_key(scheme):
    place = backend.place("testdir://bucket/w/job")
    assert place.as_prefix().key == "w/job/" and place.as_prefix().as_prefix().key == "w/job/"
    assert place.child("x/y.json").key == "w/job/x/y.json" and place.as_prefix().child("/z").key == "w/job/z"
    assert place.name == "job" and place.as_prefix().name == "job"
    assert backend.place("testdir://bucket").as_prefix().key == ""


@pytest.mark.parametrize("key, parent", [("a/b/c", "a/b/"), ("a/b/c/", "a/b/"), ("c", ""), ("c/", ""), ("", "")])
def test_parent_key(key, parent):
    assert backend.parent_key(key) == parent


def test_a_malformed_url_of_a_served_scheme_is_a_usage_error(scheme):
    with pytest.raises(UsageError):
        backend.place("testdir://Bad_Bucket!/k")


def test_an_unserved_url_is_refused_by_place():
    with pytest.raises(ValueError):
        backend.place("nosuchscheme://b/k")
    with pytest.raises(ValueError):
        backend.place("clip.mp4")


def test_a_plugin_entry_point_adds_a_scheme(tmp_path, monkeypatch):
    site = dirbucket.install_plugin(tmp_path / "site")
    monkeypatch.setattr(backend, "_plugins", None)  # read once per process: read again here
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(dirbucket.ENV_ROOT, str(tmp_path / "buckets"))
    try:
        assert backend.served("dirbucket://media/x.mp4")
        assert isinstance(backend.place("dirbucket://media/x.mp4").backend, dirbucket.DirBucket)
    finally:
        backend.unregister([dirbucket.SCHEME])
    monkeypatch.setattr(backend, "_plugins", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    assert not backend.served("dirbucket://media/x.mp4")


def test_a_broken_plugin_is_one_clean_storage_failure(tmp_path, monkeypatch):
    site = dirbucket.install_plugin(tmp_path / "site")
    entry_points = next(site.glob("*.dist-info")) / "entry_points.txt"
    entry_points.write_text(entry_points.read_text().replace("dirbucket:DirBucket", "no_such_module_here:X"))
    monkeypatch.setattr(backend, "_plugins", None)
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(StorageFailure, match=r"cannot load the storage backend for dirbucket:// URLs "
                                             r"\(no_such_module_here:X\): ModuleNotFoundError"):
        backend.served("dirbucket://media/x.mp4")
    monkeypatch.setattr(backend, "_plugins", None)


def test_staging_and_the_work_lease_import_no_backend():
    """Written against the protocol: neither names a module of azure/."""
    for module in ("job/staging.py", "storage/worklease.py", "storage/backend.py"):
        tree = ast.parse((ROOT / "stylempi" / module).read_text())
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not [m for m in imported if "azure" in m], (module, imported)
