"""How the engine logs in to Azure Blob from what a pod is given (pure logic: a file and the environment)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from terrasnap.api import contract
from terrasnap.engine.errors import UsageError
from terrasnap.engine.store import _azure_md5, azure_login

KEY = base64.b64encode(b"k" * 64).decode()
CONN = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT",
                 "AZURE_STORAGE_ACCOUNT_NAME", contract.AZURE_CREDENTIALS_ENV):
        monkeypatch.delenv(name, raising=False)


def _secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(text + "\n")
    monkeypatch.setenv(contract.AZURE_CREDENTIALS_ENV, str(path))


def test_a_mounted_connection_string_is_used_whole_and_the_endpoint_replaces_its_blob_endpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _secret(tmp_path, monkeypatch, CONN)
    login = azure_login(None)
    assert login.account_name == "acct" and login.fs_kwargs() == {"connection_string": CONN + ";"}
    assert login.env() == {"AZURE_STORAGE_CONNECTION_STRING": CONN + ";"}
    local = azure_login("http://127.0.0.1:1/devstoreaccount1")
    assert "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;" in str(local.connection_string)
    assert f"AccountKey={KEY}" in str(local.connection_string)  # a key's trailing '=' survives parsing


def test_a_mounted_account_key_needs_the_account_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _secret(tmp_path, monkeypatch, KEY)
    with pytest.raises(UsageError, match="needs its account name"):
        azure_login(None)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")
    assert azure_login(None).fs_kwargs() == {"account_name": "acct", "account_key": KEY}
    assert azure_login(None).env() == {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": KEY}
    with_endpoint = azure_login("http://azurite:10000/acct")
    assert with_endpoint.connection_string == (f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY};"
                                               "BlobEndpoint=http://azurite:10000/acct;")


def test_the_mounted_secret_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=other;AccountKey=x")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")
    _secret(tmp_path, monkeypatch, KEY)
    assert azure_login(None).fs_kwargs() == {"account_name": "acct", "account_key": KEY}


def test_an_account_alone_is_workload_identity_and_nothing_is_refused_with_a_clear_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="no Azure credentials"):
        azure_login(None)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")
    assert azure_login(None).fs_kwargs() == {"account_name": "acct", "anon": False}
    assert azure_login(None).env() == {"AZURE_STORAGE_ACCOUNT": "acct"}
    with pytest.raises(UsageError, match="endpoint needs a connection string"):
        azure_login("https://acct.blob.core.chinacloudapi.cn")


def test_an_unreadable_credentials_file_says_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.AZURE_CREDENTIALS_ENV, str(tmp_path / "missing"))
    with pytest.raises(UsageError, match=r"azure credentials file .*missing"):
        azure_login(None)


def test_content_md5_is_read_in_every_form_the_sdk_gives_it() -> None:
    digest = hashlib.md5(b"x").digest()
    assert _azure_md5({"content_settings": {"content_md5": bytearray(digest)}}) == digest.hex()
    assert _azure_md5({"content_settings": {"content_md5": base64.b64encode(digest).decode()}}) == digest.hex()
    assert _azure_md5({"content_settings": {"content_md5": None}}) is None  # a blob committed from blocks
    assert _azure_md5({"content_settings": {"content_md5": "not base64!"}}) is None
    assert _azure_md5({}) is None


def test_a_store_that_is_only_named_needs_no_login_and_one_that_is_used_says_which_is_missing() -> None:
    from terrasnap.engine.store import Store

    store = Store.from_url("azure://acme-geo/dvc")  # the fetch step compares a remote's URL with it
    assert store.url == "azure://acme-geo/dvc" and store.root == "acme-geo/dvc"
    with pytest.raises(UsageError, match=r"store azure://acme-geo/dvc: no Azure credentials"):
        store.check_reachable()
