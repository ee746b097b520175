"""Shared fixtures: a real fake-gcs-server, moto S3 server and Azurite per session, temp stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from tests.support import azurite, fakegcs, motos3

# The engine runs in this process: it reads S3 keys as AWS's clients do (moto accepts any).
for _key, _value in motos3.TEST_CREDENTIALS.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fakegcs.FakeGCS]:
    server = fakegcs.start(tmp_path_factory.mktemp("fakegcs") / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_bucket(gcs: fakegcs.FakeGCS) -> str:
    """A fresh, empty bucket for one test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[motos3.MotoS3]:
    server = motos3.start(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3: motos3.MotoS3) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[azurite.Azurite]:
    """Azurite; the engine in this process (and `dvc` it starts) logs in with its connection string, as
    Azure's own tools read it."""
    server = azurite.start(tmp_path_factory.mktemp("azurite") / "data")
    saved = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string
    try:
        yield server
    finally:
        if saved is None:
            os.environ.pop("AZURE_STORAGE_CONNECTION_STRING", None)
        else:
            os.environ["AZURE_STORAGE_CONNECTION_STRING"] = saved
        server.stop()


@pytest.fixture
def azure_container(azure: azurite.Azurite) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    azure.create_container(name)
    return name


@pytest.fixture
def file_store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture(params=["file", "gs", "s3", "azure"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, endpoint) for each real store kind."""
    if request.param == "file":
        yield f"file://{tmp_path / 'store'}", None
    elif request.param == "s3":
        s3: motos3.MotoS3 = request.getfixturevalue("s3")
        yield f"s3://{request.getfixturevalue('s3_bucket')}/dvc", s3.endpoint
    elif request.param == "azure":
        server_az: azurite.Azurite = request.getfixturevalue("azure")
        yield f"azure://{request.getfixturevalue('azure_container')}/dvc", server_az.endpoint
    else:
        server: fakegcs.FakeGCS = request.getfixturevalue("gcs")
        bucket = request.getfixturevalue("gcs_bucket")
        yield f"gs://{bucket}/dvc", server.endpoint


@pytest.fixture(autouse=True)
def _forget_remembered_secrets() -> Iterator[None]:
    """redact remembers every URL password (or bare `token@`) for the life of the process; a unit test's
    `ssh://git@...` would otherwise mask the word "git" in a later test's messages."""
    from terrasnap.engine import redact

    yield
    redact._known.clear()
