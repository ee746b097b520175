"""`terrasnap fetch`: the exact files of a snapshot, straight from the store by DVC address, SHA-256 verified.

Needs neither git nor a DVC project: the manifest is the only thing a training job has to know.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from terrasnap.engine import paths
from terrasnap.engine.errors import UnsafeInput, UsageError, VerifyFailed
from terrasnap.engine.hashing import hash_file
from terrasnap.engine.manifest import FileRow, read_manifest, snapshot_id
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
        raise UnsafeInput(f"manifest lists an unsafe path {rel!r}; refusing to write outside {dest}")
    return dest / Path(*p.parts)


def check_rows(rows: list[dict[str, Any]], uri: str) -> None:
    """Every row's path is a safe relative path and its object id a DVC md5 id — checked before anything is
    downloaded, so a hostile manifest writes nothing (not outside DEST, not inside it either)."""
    bad: list[str] = []
    for i, row in enumerate(rows):
        path, md5 = row.get("path"), row.get("md5")
        why = paths.problem(path) if isinstance(path, str) else "is not a string"
        if why:
            bad.append(f"row {i}: path {paths.quoted(str(path))} {why}")
        if not isinstance(md5, str) or not paths.DVC_OBJECT_ID.fullmatch(md5):
            bad.append(f"row {i} ({paths.quoted(str(path))}): object id {md5!r} is not a DVC md5 id "
                       "(32 hex digits, optionally .dir)")
        if not isinstance(row.get("sha256"), str) or len(row["sha256"]) != 64:
            bad.append(f"row {i} ({paths.quoted(str(path))}): sha256 {row.get('sha256')!r} is not a SHA-256")
    if bad:
        raise UnsafeInput(f"manifest {uri}: refused, nothing fetched: " + "; ".join(bad[:10])
                          + (f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""))


def _pipeline_identity(store: Store, folder: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The pipeline part of the snapshotID (engine/dvcsource.py: the dvc.yaml of each stage that was planned),
    rebuilt from the side files published beside the manifest."""
    import yaml

    stages = (metadata.get("pipeline") or {}).get("stages") or {}
    dvcfiles = sorted({a.rsplit(":", 1)[0] if ":" in a else "dvc.yaml" for a in stages})
    identity: dict[str, Any] = {}
    for dvcfile in dvcfiles:
        paths.check_relpath(dvcfile, "pipeline file")
        identity[dvcfile] = yaml.safe_load(store.read_bytes(f"{folder}/source/{dvcfile}"))
    return identity


def check_expected(store: Store, rel: str, rows: list[dict[str, Any]], meta: dict[str, Any], expect: str) -> str:
    """Recompute the snapshotID from the manifest's rows (and the policy and pipeline in metadata.json beside
    it); VerifyFailed unless it, the manifest's own claim and the folder name all equal `expect`."""
    folder = rel.rsplit("/", 1)[0]
    try:
        metadata = json.loads(store.read_bytes(f"{folder}/metadata.json"))
        pipeline = _pipeline_identity(store, folder, metadata)
    except FileNotFoundError as exc:
        raise VerifyFailed(f"--expect: {folder}: cannot recompute the snapshotID: {exc}") from None
    except ValueError as exc:
        raise UnsafeInput(f"--expect: {folder}: {exc}") from None
    file_rows = [FileRow(path=r["path"], role=r["role"], kind=r["kind"], size=r["size"], sha256=r["sha256"],
                         md5=r["md5"]) for r in rows]
    got = snapshot_id(file_rows, metadata.get("policy") or {}, pipeline)
    claims = {"recomputed from the manifest": got, "the manifest's snapshotID": meta.get("snapshotID"),
              "the folder name": "sha256:" + folder.rsplit("/", 1)[-1]}
    wrong = [f"{what} is {value}" for what, value in claims.items() if value != expect]
    if wrong:
        raise UnsafeInput(f"--expect {expect}: mismatch ({'; '.join(wrong)}); nothing fetched")
    return got


def fetch(manifest_uri: str, dest: Path, endpoint: str | None = None, role: str | None = None,
          workers: int = 8, expect: str | None = None) -> dict[str, Any]:
    store, rel = store_of_manifest(manifest_uri, endpoint)
    store.check_reachable(write=False)
    rows, meta = read_manifest(store.read_bytes(rel))
    check_rows(rows, manifest_uri)
    if expect is not None:
        check_expected(store, rel, rows, meta, expect)
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
