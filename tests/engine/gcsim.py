"""Helpers for the GC tests: put objects, `.dir` objects and published manifests into a real store."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from terrasnap.engine.store import Store


def put(store: Store, data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    store.write_bytes(Store.object_rel(md5), data)
    return md5


def dir_object(entries: dict[str, str]) -> tuple[str, bytes]:
    """A DVC 3 `.dir` object for {relpath: md5}: (id, bytes)."""
    body = json.dumps(
        [{"md5": md5, "relpath": rel} for rel, md5 in sorted(entries.items())], sort_keys=True
    ).encode()
    return hashlib.md5(body).hexdigest() + ".dir", body


def put_dir(store: Store, entries: dict[str, str]) -> str:
    oid, body = dir_object(entries)
    store.write_bytes(Store.object_rel(oid), body)
    return oid


def folder_for(namespace: str, name: str, objects: list[str]) -> str:
    hexid = hashlib.sha256(json.dumps([name, sorted(objects)]).encode()).hexdigest()
    return Store.manifest_rel(namespace, name, hexid)


def publish(store: Store, namespace: str, name: str, objects: list[str], folder: str | None = None) -> str:
    """metadata.json (with `objects`), dvc.lock, then manifest.parquet LAST; returns the manifest URI."""
    folder = folder or folder_for(namespace, name, objects)
    store.write_bytes(f"{folder}/metadata.json", json.dumps({"objects": sorted(set(objects))}).encode())
    store.write_bytes(f"{folder}/dvc.lock", b"schema: '2.0'\n")
    store.write_bytes(f"{folder}/manifest.parquet", b"PAR1-not-really")
    return store.uri(f"{folder}/manifest.parquet")


def later(hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def objects_in(store: Store) -> set[str]:
    return {o.md5 for o in store.list_objects()}


def gc_cli(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    """Run `terrasnap gc ARGS` through the real command (cli.main): (exit code, stdout JSON or None, stderr)."""
    from click.testing import CliRunner

    from terrasnap.cli import main

    result = CliRunner().invoke(main, ["gc", *args], catch_exceptions=False)
    out = result.stdout.strip()
    return result.exit_code, json.loads(out) if out else None, result.stderr
