"""Shared fixtures: a real fake-gcs-server per session, temp stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from tests.support import fakegcs


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


@pytest.fixture
def file_store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture(params=["file", "gs"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, endpoint) for each real store kind."""
    if request.param == "file":
        yield f"file://{tmp_path / 'store'}", None
    else:
        server: fakegcs.FakeGCS = request.getfixturevalue("gcs")
        bucket = request.getfixturevalue("gcs_bucket")
        yield f"gs://{bucket}/dvc", server.endpoint
