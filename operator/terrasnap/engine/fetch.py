"""`terrasnap fetch`: the exact files of a snapshot, straight from the store by DVC address, SHA-256 verified.

Needs neither git nor a DVC project: the manifest is the only thing a training job has to know.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from terrasnap.engine.errors import UsageError, VerifyFailed
from terrasnap.engine.hashing import hash_file
from terrasnap.engine.manifest import read_manifest
from terrasnap.engine.store import MANIFEST_PREFIX, Store


def store_of_manifest(uri: str, endpoint: str | None = None) -> tuple[Store, str]:
    """The store a manifest URI lives in (the part before /terrasnap/manifests/) and its relative path."""
    marker = f"/{MANIFEST_PREFIX}/"
    if marker not in uri:
        raise UsageError(f"{uri!r} is not a terrasnap manifest URI (expected .../{MANIFEST_PREFIX}/...)")
    root, rest = uri.split(marker, 1)
    return Store.from_url(root, endpoint), f"{MANIFEST_PREFIX}/{rest}"


def _safe_dest(dest: Path, rel: str) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        raise VerifyFailed(f"manifest lists an unsafe path {rel!r}; refusing to write outside {dest}")
    return dest / Path(*p.parts)


def fetch(manifest_uri: str, dest: Path, endpoint: str | None = None, role: str | None = None,
          workers: int = 8) -> dict[str, Any]:
    store, rel = store_of_manifest(manifest_uri, endpoint)
    store.check_reachable()
    rows, meta = read_manifest(store.read_bytes(rel))
    if role:
        rows = [r for r in rows if r["role"] == role]
    dest.mkdir(parents=True, exist_ok=True)

    def one(row: dict[str, Any]) -> int:
        target = _safe_dest(dest, row["path"])
        if target.exists() and target.stat().st_size == row["size"] and hash_file(target).sha256 == row["sha256"]:
            return 0
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            store.get_file(Store.object_rel(row["md5"]), str(tmp))
        except FileNotFoundError:
            raise VerifyFailed(f"{row['path']}: object {row['md5']} is missing from {store.url}") from None
        got = hash_file(tmp).sha256
        if got != row["sha256"]:
            tmp.unlink()
            raise VerifyFailed(f"{row['path']}: sha256 {got} does not match the manifest's {row['sha256']}")
        os.replace(tmp, target)
        return int(row["size"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        fetched = sum(pool.map(one, rows))
    return {"snapshotID": meta.get("snapshotID"), "files": len(rows), "bytesFetched": fetched, "dest": str(dest)}
