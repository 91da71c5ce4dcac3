"""Blob URLs and local names, parsed purely (stylempi.storage.azure.urls, and the account of an
``az://`` URL from the environment in stylempi.storage.azure.auth): no Azurite, no network."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from stylempi import storage
from stylempi.errors import UsageError

from azurite import ACCOUNT, KEY, assert_clean

DEV_URL = "http://127.0.0.1:10000/devstoreaccount1"


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(storage.ENV_ACCOUNT_URL, raising=False)
    monkeypatch.delenv(storage.ENV_CONNECTION_STRING, raising=False)


def test_is_remote():
    assert storage.is_remote("az://c/x.mp4")
    assert storage.is_remote("https://a.blob.core.windows.net/c/x")
    assert storage.is_remote("HTTP://127.0.0.1:10000/devstoreaccount1/c/x")
    assert not storage.is_remote("clip.mp4")
    assert not storage.is_remote("/data/az/clip.mp4")
    assert not storage.is_remote(Path("az://x"))  # a Path is always local
    assert not storage.is_remote(None)


def test_parse_az_with_account_url_argument(no_env):
    loc = storage.locate("az://incoming/dir/clip one.mp4", account_url="https://acct.blob.core.windows.net/")
    assert loc.account_url == "https://acct.blob.core.windows.net"
    assert (loc.account_name, loc.container, loc.blob, loc.sas) == ("acct", "incoming", "dir/clip one.mp4", None)
    assert str(loc) == "https://acct.blob.core.windows.net/incoming/dir/clip%20one.mp4"


def test_parse_az_account_from_env_and_connection_string(no_env, monkeypatch):
    monkeypatch.setenv(storage.ENV_ACCOUNT_URL, DEV_URL)
    loc = storage.locate("az://styled/out.mp4?sv=2024&sig=SECRET")
    assert (loc.account_url, loc.account_name, loc.container, loc.blob) == (DEV_URL, ACCOUNT, "styled", "out.mp4")
    assert loc.sas == "sv=2024&sig=SECRET"
    assert "SECRET" not in str(loc)
    monkeypatch.delenv(storage.ENV_ACCOUNT_URL)
    monkeypatch.setenv(storage.ENV_CONNECTION_STRING,
                       f"DefaultEndpointsProtocol=https;AccountName=prod1;AccountKey={KEY};EndpointSuffix=core.windows.net")
    loc = storage.locate("az://styled/a/b.mp4")
    assert (loc.account_url, loc.account_name) == ("https://prod1.blob.core.windows.net", "prod1")
    monkeypatch.setenv(storage.ENV_CONNECTION_STRING, f"AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={DEV_URL};")
    assert storage.locate("az://styled/b.mp4").account_url == DEV_URL


def test_parse_az_without_account_is_a_clear_usage_error(no_env, monkeypatch):
    with pytest.raises(UsageError) as e:
        storage.locate("az://incoming/clip.mp4?sig=SECRET")
    assert "--account-url" in str(e.value) and "AZURE_STORAGE_ACCOUNT_URL" in str(e.value)
    assert_clean(str(e.value), "SECRET")
    monkeypatch.setenv(storage.ENV_ACCOUNT_URL, DEV_URL)  # parse_blob_url itself never reads it
    with pytest.raises(UsageError, match="--account-url"):
        storage.parse_blob_url("az://incoming/clip.mp4")


def test_parse_host_style_and_sovereign_cloud(no_env):
    loc = storage.parse_blob_url("https://acct.blob.core.windows.net/incoming/a%20b/c.mp4?sv=1&sig=S%2Fx")
    assert (loc.account_url, loc.account_name, loc.container, loc.blob) == (
        "https://acct.blob.core.windows.net", "acct", "incoming", "a b/c.mp4")
    assert loc.sas == "sv=1&sig=S%2Fx"
    cn = storage.parse_blob_url("https://x1.blob.core.chinacloudapi.cn/c01/v.mp4")
    assert (cn.account_name, cn.container, cn.blob) == ("x1", "c01", "v.mp4")


def test_parse_path_style(no_env):
    loc = storage.parse_blob_url("http://127.0.0.1:10000/devstoreaccount1/incoming/clip.mp4?se=2030-01-01T00%3A00%3A00Z&sp=r&sig=abc")
    assert (loc.account_url, loc.account_name, loc.container, loc.blob) == (DEV_URL, ACCOUNT, "incoming", "clip.mp4")
    assert loc.sas_permissions == "r"
    assert loc.expiry == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    stack = storage.parse_blob_url("https://stack.local:443/acct2/cont/x/y/")
    assert (stack.account_url, stack.container, stack.blob) == ("https://stack.local:443/acct2", "cont", "x/y/")
    assert stack.child("z.json").blob == "x/y/z.json"
    assert storage.parse_blob_url("https://stack.local/acct2/cont/x").as_prefix().blob == "x/"


@pytest.mark.parametrize("bad", [
    "ftp://host/a/b", "az:///x.mp4", "https://acct.blob.core.windows.net/Bad_Container/x",
    "http://127.0.0.1:10000/devstoreaccount1/ab/x", "http:///nohost",
])
def test_parse_rejects_malformed(no_env, bad):
    with pytest.raises(UsageError) as e:
        storage.parse_blob_url(bad + "?sig=SECRET", storage.parse_account_url(DEV_URL))
    assert_clean(str(e.value), "SECRET")


def test_redact():
    assert storage.redact("https://a.blob.core.windows.net/c/x?sv=1&sig=abc") == "https://a.blob.core.windows.net/c/x"
    assert storage.redact("failed: az://c/x.mp4?sig=abc retry") == "failed: az://c/x.mp4 retry"
    assert storage.redact("no url here?") == "no url here?"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_safe_local_name_never_escapes(tmp_path_factory, name):
    safe = storage.safe_local_name(name)
    assert "/" not in safe and "\\" not in safe and not safe.startswith(".") and safe not in ("", "..")
    root = Path("/tmp/stylempi-root")
    assert (root / safe).resolve().parent == root.resolve()


def test_safe_local_name_keeps_extension_and_distinguishes():
    a, b = storage.safe_local_name("x/../clip.mp4"), storage.safe_local_name("y/clip.mp4")
    assert a.endswith(".mp4") and b.endswith(".mp4") and a != b
    assert storage.safe_local_name("../../etc/passwd").startswith("passwd-")
