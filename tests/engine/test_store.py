from __future__ import annotations

import pytest

from terrasnap.engine.errors import StoreUnreachable, UsageError
from terrasnap.engine.store import Store


def test_roundtrip_and_listing(store_url: tuple[str, str | None]) -> None:
    url, endpoint = store_url
    store = Store.from_url(url, endpoint)
    store.check_reachable()
    md5 = "0123456789abcdef0123456789abcdef"
    store.write_bytes(Store.object_rel(md5), b"hello")
    store.write_bytes(Store.object_rel(md5) + ".dir", b"[]")
    assert store.read_bytes(Store.object_rel(md5)) == b"hello"
    assert store.size(Store.object_rel(md5)) == 5
    assert store.size("files/md5/ff/missing") is None
    objs = {o.md5: o for o in store.list_objects()}
    assert set(objs) == {md5, md5 + ".dir"}
    assert objs[md5].size == 5 and objs[md5].mtime is not None
    assert store.delete_many([Store.object_rel(md5)]) == []
    assert not store.exists(Store.object_rel(md5))


def test_bad_urls() -> None:
    with pytest.raises(UsageError, match="unsupported scheme"):
        Store.from_url("ftp://x/y")
    with pytest.raises(UsageError, match="absolute"):
        Store.from_url("file://relative/path")


def test_unreachable_gcs_endpoint_names_the_store() -> None:
    store = Store.from_url("gs://bucket/x", endpoint="http://127.0.0.1:9")
    with pytest.raises(StoreUnreachable, match="gs://bucket/x"):
        store.check_reachable()


def test_missing_bucket(gcs) -> None:  # type: ignore[no-untyped-def]
    store = Store.from_url("gs://no-such-bucket-xyz/p", endpoint=gcs.endpoint)
    with pytest.raises(StoreUnreachable, match="does not exist"):
        store.check_reachable()


def test_a_reader_takes_a_read_only_file_store_and_creates_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """fetch, verify and bucket sources only read: a store mounted read-only is fine for them, a missing one
    is an error that names it (and is not created), while a writer still needs to write."""
    import os

    root = tmp_path / "ro"
    root.mkdir()
    (root / "x").write_bytes(b"1")
    root.chmod(0o555)
    try:
        store = Store.from_url(f"file://{root}")
        store.check_reachable(write=False)
        assert store.read_bytes("x") == b"1"
        if os.geteuid() != 0:  # root may write anywhere: the writer's refusal is only observable as a user
            with pytest.raises(StoreUnreachable, match="not writable"):
                store.check_reachable()
    finally:
        root.chmod(0o755)
    missing = Store.from_url(f"file://{tmp_path / 'missing'}")
    with pytest.raises(StoreUnreachable, match="missing does not exist"):
        missing.check_reachable(write=False)
    assert not (tmp_path / "missing").exists()
