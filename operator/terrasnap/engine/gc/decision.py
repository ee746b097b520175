"""The pure half of GC: what a store listing, the roots' metadata and the registrations say may go.

What is used (kept):
* every object named in the `objects` of a root's metadata.json, and the entries of every `.dir` object among
  them (read from the store with dvc-data's Tree: DVC's own notion of a directory's contents);
* every object named by a live registration (terrasnap/inflight/*.json, not expired);
* every object named by a published manifest folder younger than the grace (the caller's roots may not know
  it yet);
* every object younger than the grace, and every object whose age the store does not report.
Manifest folders are never deleted unless the caller says its roots are complete (cluster mode): then a
folder that is not a root, has no file younger than the grace and is named by no live registration goes.
No I/O and no clock here: engine/gc/run.py reads the store and passes `now`.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from terrasnap.engine import refs
from terrasnap.engine.errors import GCFailedClosed
from terrasnap.engine.store import ObjectInfo

MANIFEST_FILE = "manifest.parquet"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class Decision:
    obj: ObjectInfo
    action: str  # "delete" | "keep" | "young" | "inflight"


def plan_deletions(
    listing: Iterable[ObjectInfo],
    used: set[str] | frozenset[str],
    registrations: Iterable[refs.RegistrationDoc],
    now: float,
    grace: float,
    skew: float = refs.CLOCK_SKEW,
) -> list[Decision]:
    """Decide per listed object. Pure: no I/O, no clock. Unknown age counts as young (keep)."""
    registered: set[str] = set()
    for reg in registrations:
        if reg.live(now, skew):
            registered.update(reg.objects)
    out: list[Decision] = []
    for obj in listing:
        if obj.md5 in used:
            action = "keep"
        elif obj.md5 in registered:
            action = "inflight"
        elif obj.mtime is None or now - obj.mtime < grace:
            action = "young"
        else:
            action = "delete"
        out.append(Decision(obj, action))
    return out


def parse_metadata_objects(rel: str, data: bytes) -> set[str]:
    try:
        doc = json.loads(data)
        objects = doc["objects"]
        if not isinstance(objects, list) or not all(
            isinstance(o, str) and refs.OBJECT_RE.match(o) for o in objects
        ):
            raise ValueError("'objects' must be a list of <md5> / <md5>.dir")
    except (ValueError, KeyError, TypeError) as exc:
        raise GCFailedClosed(f"{rel}: unreadable metadata: {type(exc).__name__}: {exc}") from exc
    return set(objects)


def dir_entries(rel: str, data: bytes) -> set[str]:
    """The md5s a DVC `.dir` object lists, parsed by dvc-data's Tree (DVC's own format)."""
    from dvc_data.hashfile.tree import Tree

    try:
        raw = json.loads(data)
        if not isinstance(raw, list):
            raise ValueError("a .dir object is a JSON list")
        tree = Tree.from_list(raw, hash_name="md5")
        out = set()
        for _key, _meta, hash_info in tree:
            if hash_info is None or not hash_info.value:
                continue
            value = str(hash_info.value)
            if not refs.OBJECT_RE.match(value):
                raise ValueError(f"entry hash {value!r}")
            out.add(value)
    except Exception as exc:
        raise GCFailedClosed(f"{rel}: unreadable .dir object: {type(exc).__name__}: {exc}") from exc
    return out


@dataclass
class ManifestFolder:
    rel: str  # terrasnap/manifests/<ns>/<name>/<hex>
    files: dict[str, float | None]  # rel -> mtime

    @property
    def published(self) -> bool:
        return posixpath.join(self.rel, MANIFEST_FILE) in self.files

    def newest(self) -> float | None:
        times = list(self.files.values())
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)
