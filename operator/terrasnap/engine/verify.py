"""Content verification of store objects: after every push (with repair) and `terrasnap verify` (read-only).

A DVC object's name is the md5 of its bytes (`.dir` listings included), so an object is intact exactly when
the md5 of what the store holds equals its name. `dvc push` checks only that a name exists, so an object
corrupted in place — same name, same size — is skipped as "already there" and a snapshot publishes over it
(dvc #10498, #7268). Here each object is checked against its md5: from the store's own checksum when the
backend keeps one (`Store.stored_md5`: GCS `md5Hash`; one metadata call, no content read), else by
reading it back (file://, or always with `deep`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from terrasnap.engine.errors import SnapshotDamaged, UsageError, VerifyFailed
from terrasnap.engine.hashing import hash_file
from terrasnap.engine.store import Store

STORE_MD5 = "store-md5"  # the backend's own checksum
READ_BACK = "read-back"  # the bytes read and hashed here
WORKERS = 8


@dataclass(frozen=True)
class ObjectCheck:
    oid: str  # "<md5>" or "<md5>.dir"
    state: str  # "ok" | "missing" | "corrupt"
    how: str  # STORE_MD5 | READ_BACK | "" (missing)
    detail: str = ""


def expected_md5(oid: str) -> str:
    return oid.removesuffix(".dir")


def check_object(store: Store, oid: str, *, size: int | None = None, sha256: str | None = None,
                 deep: bool = False) -> ObjectCheck:
    """One object against its name (and its size and sha256 when known). `deep` always reads it back."""
    rel = Store.object_rel(oid)
    how, got_size = STORE_MD5, 0
    got_md5: str | None = None
    got_sha: str | None = None
    if not deep:
        meta = store.stored_md5(rel)
        if meta is None:
            return ObjectCheck(oid, "missing", "", f"{rel} does not exist")
        got_size, got_md5 = meta
    # No stored md5, or one that disagrees: the bytes decide (an S3 ETag under SSE-KMS is not the md5).
    if got_md5 is None or got_md5 != expected_md5(oid):
        digests = store.read_digests(rel)
        if digests is None:
            return ObjectCheck(oid, "missing", "", f"{rel} does not exist")
        how, (got_size, got_md5, got_sha) = READ_BACK, digests
    problems = []
    if size is not None and got_size != size:
        problems.append(f"{got_size} bytes, expected {size}")
    if got_md5 != expected_md5(oid):
        problems.append(f"md5 {got_md5} ({how})")
    if sha256 is not None and got_sha is not None and got_sha != sha256:
        problems.append(f"sha256 {got_sha}, the manifest says {sha256}")
    return ObjectCheck(oid, "corrupt" if problems else "ok", how, "; ".join(problems))


def check_objects(store: Store, oids: Iterable[str], *, sizes: dict[str, int | None] | None = None,
                  sha256s: dict[str, str] | None = None, deep: bool = False) -> list[ObjectCheck]:
    """Every object, a few at a time (GCS: one metadata request each; file://: a read each)."""
    sizes, sha256s = sizes or {}, sha256s or {}

    def one(oid: str) -> ObjectCheck:
        return check_object(store, oid, size=sizes.get(oid), sha256=sha256s.get(oid), deep=deep)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(one, sorted(set(oids))))


# -- after a push: check, repair, re-check -----------------------------------------------------------


def verify_pushed(store: Store, sizes: dict[str, int | None], cache: Path, repaired: list[str]) -> None:
    """Every object the snapshot references, by content. A corrupt one is overwritten from the local DVC
    cache and checked again; its id is appended to `repaired`. A missing one raises VerifyFailed (the
    caller pushes again, refs.Registration.confirm); so does one that stays corrupt."""
    checks = check_objects(store, sizes, sizes=sizes)
    corrupt = [c for c in checks if c.state == "corrupt"]
    for c in corrupt:
        _reupload(store, cache, c.oid)
    still = [c for c in check_objects(store, [c.oid for c in corrupt], sizes=sizes) if c.state != "ok"]
    repaired.extend(c.oid for c in corrupt if c.oid not in {s.oid for s in still} and c.oid not in repaired)
    missing = [c for c in checks if c.state == "missing"]
    if missing or still:
        parts = []
        if missing:
            parts.append(f"{len(missing)} object(s) missing: {', '.join(c.oid for c in missing[:5])}")
        if still:
            parts.append(f"{len(still)} still wrong after re-upload: "
                         + ", ".join(f"{c.oid} ({c.detail})" for c in still[:5]))
        raise VerifyFailed(f"store {store.url}: after push, " + "; ".join(parts))


def repair_stored_listings(store: Store, objects: list[str], cache: Path, repaired: list[str]) -> None:
    """Before a push: `.dir` objects the store already has, by content. `dvc push` reads a stored listing
    to decide what to upload, and fails on (or trusts) a corrupt one; a corrupt listing is overwritten
    from the local cache first. Missing ones are left to the push."""
    for c in check_objects(store, [o for o in objects if o.endswith(".dir")]):
        if c.state == "corrupt":
            _reupload(store, cache, c.oid)
            if c.oid not in repaired:
                repaired.append(c.oid)


def _reupload(store: Store, cache: Path, oid: str) -> None:
    from terrasnap.engine.dvc import cache_object

    local = cache_object(cache, oid)
    if not local.is_file():
        raise VerifyFailed(f"store {store.url}: object {oid} is corrupt and not in the local cache {cache}")
    got = hash_file(local).md5
    if got != expected_md5(oid):  # never "repair" with bad bytes
        raise VerifyFailed(f"store {store.url}: object {oid} is corrupt, and so is its local copy {local} "
                           f"(md5 {got})")
    store.put_file(str(local), Store.object_rel(oid))


# -- a published snapshot: `terrasnap verify` -------------------------------------------------------------


def verify_snapshot(manifest_uri: str, endpoint: str | None = None, deep: bool = False) -> dict[str, Any]:
    """Read-only check of a published snapshot: every object its manifest and metadata.json name exists
    with the right md5 (`deep`: read back, and sha256 against the manifest). Returns the report; on damage
    its `ok` is False and `error` (reason SnapshotDamaged) names each object and the files it holds."""
    from terrasnap.engine.fetch import store_of_manifest
    from terrasnap.engine.manifest import read_manifest

    store, rel = store_of_manifest(manifest_uri, endpoint)
    if store.scheme != "file":
        store.check_reachable()  # fail fast on a dead endpoint; on file:// it would create the root
    folder = posixpath.dirname(rel)
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        raise UsageError(f"{manifest_uri}: no such manifest (not a published snapshot)") from None
    try:
        rows, meta = read_manifest(data)
    except Exception as exc:
        raise SnapshotDamaged(f"{manifest_uri}: the manifest is unreadable: {type(exc).__name__}: {exc}") from None
    paths: dict[str, list[str]] = {}
    sizes: dict[str, int | None] = {}
    sha256s: dict[str, str] = {}
    for row in rows:
        oid = str(row["md5"])
        paths.setdefault(oid, []).append(str(row["path"]))
        sizes[oid] = int(row["size"])
        sha256s[oid] = str(row["sha256"])
    objects = set(paths)
    damaged: list[dict[str, Any]] = []
    objects |= _metadata_objects(store, folder, damaged)
    for oid, out in _tracked_dirs(store, folder).items():
        paths.setdefault(oid, []).append(out + "/")
    objects |= {o for o in paths if o.endswith(".dir")}
    checks = check_objects(store, objects, sizes=sizes, sha256s=sha256s if deep else None, deep=deep)
    for c in checks:
        if c.state != "ok":
            damaged.append({"object": c.oid, "state": c.state, "paths": sorted(paths.get(c.oid, [])),
                            "detail": c.detail})
    report: dict[str, Any] = {
        "ok": not damaged,
        "snapshotID": meta.get("snapshotID"),
        "manifest": manifest_uri,
        "objects": len(checks),
        "checked": {how: sum(1 for c in checks if c.how == how) for how in (STORE_MD5, READ_BACK)},
        "deep": deep,
        "damaged": damaged,
    }
    if damaged:
        report["error"] = {"reason": SnapshotDamaged.reason, "message": damage_message(damaged)}
    return report


def damage_message(damaged: list[dict[str, Any]]) -> str:
    items = [f"{d['object'] or 'metadata.json'} {d['state']} ({', '.join(d['paths']) or 'no file path'}"
             f"{': ' + d['detail'] if d['detail'] else ''})" for d in damaged[:10]]
    more = f"; and {len(damaged) - 10} more" if len(damaged) > 10 else ""
    return f"{len(damaged)} damaged: " + "; ".join(items) + more


def _metadata_objects(store: Store, folder: str, damaged: list[dict[str, Any]]) -> set[str]:
    """metadata.json's `objects` (everything a `dvc pull` needs, the source's own listings included)."""
    import json

    from terrasnap.engine.refs import OBJECT_RE

    rel = f"{folder}/metadata.json"
    try:
        doc = json.loads(store.read_bytes(rel))
        objects = doc["objects"]
        if not isinstance(objects, list) or not all(isinstance(o, str) and OBJECT_RE.match(o) for o in objects):
            raise ValueError("'objects' is not a list of DVC object ids")
        return set(objects)
    except FileNotFoundError:
        detail = "missing"
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"unreadable: {exc}"
    damaged.append({"object": "", "state": "corrupt", "paths": [rel], "detail": f"metadata.json {detail}"})
    return set()


def _tracked_dirs(store: Store, folder: str) -> dict[str, str]:
    """`.dir` object → the tracked folder it lists, from the published *.dvc files and dvc.lock."""
    found: dict[str, str] = {}
    for rel, _info in store.list_prefix(folder):
        name = posixpath.basename(rel)
        if not (name.endswith(".dvc") or name == "dvc.lock"):
            continue
        try:
            doc = yaml.safe_load(store.read_bytes(rel)) or {}
        except (FileNotFoundError, yaml.YAMLError):
            continue  # the objects are still checked through metadata.json
        outs = list(doc.get("outs") or []) if isinstance(doc, dict) else []
        if isinstance(doc, dict) and isinstance(doc.get("stages"), dict):
            for stage in doc["stages"].values():
                outs += list((stage or {}).get("outs") or [])
        for out in outs:
            if isinstance(out, dict) and str(out.get("md5", "")).endswith(".dir"):
                prefix = posixpath.relpath(posixpath.dirname(rel), folder)
                path = str(out.get("path", ""))
                found[str(out["md5"])] = path if prefix == "." else f"{prefix}/{path}"
    return found


def render(report: dict[str, Any]) -> str:
    """The human-readable report (`terrasnap verify` without --json)."""
    checked = report["checked"]
    head = (f"snapshot {report.get('snapshotID')}: {report['objects']} object(s) checked "
            f"({checked[STORE_MD5]} by the store's md5, {checked[READ_BACK]} read back"
            f"{', sha256 too' if report['deep'] else ''})")
    if report["ok"]:
        return f"{head}\nintact"
    lines = [head, f"DAMAGED: {len(report['damaged'])} object(s)"]
    for d in report["damaged"]:
        lines.append(f"  {d['state']:<8} {d['object'] or '-'}  {', '.join(d['paths']) or '(no file path)'}"
                     + (f"  [{d['detail']}]" if d["detail"] else ""))
    return "\n".join(lines)
