"""An in-memory apiserver for unit tests of the controller's logic (terrasnap.kube.Client).

Plain dicts keyed by API path. It does what the controller relies on and nothing more: 409 on creating an
existing name, 404 as None/False, label-selector lists, JSON merge patches, `generation` bumped by spec
changes, `resourceVersion` bumped by every write and checked as a precondition on `/status` patches, and
Events stored like any object (posted through the real terrasnap.kube.event_manifest). Status writes go
through the real terrasnap.kube.update_status.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from terrasnap import kube as k
from terrasnap.api import selectors

Obj = dict[str, Any]


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}  # item path → object
        self.requests: list[tuple[str, str]] = []  # (verb, path), in order
        self._serial = itertools.count(1)

    # --- test helpers -------------------------------------------------------------------------------------

    def put(self, collection: str, obj: Mapping[str, Any]) -> Obj:
        """Store `obj` under `collection` as the apiserver would have created it."""
        created, ok = self._create(collection, obj)
        assert ok, f"{collection}/{obj['metadata']['name']} exists"
        return copy.deepcopy(created)

    def items(self, collection: str) -> list[Obj]:
        return [copy.deepcopy(o) for p, o in sorted(self.objects.items()) if p.rsplit("/", 1)[0] == collection]

    def events(self, namespace: str, name: str | None = None) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about `name` (or all) in `namespace`, oldest first."""
        found = self.items(k.events_path(namespace))
        found.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [
            (e["type"], e["reason"], e["message"])
            for e in found
            if name is None or e["involvedObject"].get("name") == name
        ]

    def set_status(self, path: str, status: Mapping[str, Any]) -> None:
        """What a Job controller or kubelet would write."""
        self.objects[path]["status"] = copy.deepcopy(dict(status))
        self._touch(self.objects[path])

    def edit_spec(self, path: str, spec: Mapping[str, Any]) -> Obj:
        """What `kubectl apply` of a changed spec would do."""
        return self.patch(path, {"spec": dict(spec)})

    # --- terrasnap.kube.Client ----------------------------------------------------------------------------

    def get(self, path: str) -> Obj | None:
        self.requests.append(("get", path))
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    def list(self, path: str, label_selector: str | None = None) -> list[Obj]:
        self.requests.append(("list", path))
        return [
            o for o in self.items(path) if selectors.matches((o.get("metadata") or {}).get("labels"), label_selector)
        ]

    def create(self, path: str, body: Mapping[str, Any]) -> tuple[Obj | None, bool]:
        self.requests.append(("create", path))
        created, ok = self._create(path, body)
        return (copy.deepcopy(created), True) if ok else (None, False)

    def patch(self, path: str, body: Mapping[str, Any]) -> Obj:
        self.requests.append(("patch", path))
        subresource = path.endswith("/status")
        target_path = path.removesuffix("/status")
        target = self.objects.get(target_path)
        if target is None:
            raise k.KubeError(404, "NotFound", path)
        wanted = ((body.get("metadata") or {}).get("resourceVersion")) if subresource else None
        if wanted is not None and wanted != target["metadata"]["resourceVersion"]:
            raise k.KubeError(409, "Conflict", f"{path}: resourceVersion {wanted} is stale")
        if subresource:
            target["status"] = _merge(target.get("status") or {}, body.get("status") or {})
        else:
            before = copy.deepcopy(target.get("spec"))
            patched = _merge(target, {key: v for key, v in body.items() if key != "status"})
            target.clear()
            target.update(patched)
            if "generation" in target["metadata"] and target.get("spec") != before:
                target["metadata"]["generation"] += 1
        self._touch(target)
        return copy.deepcopy(target)

    def delete(self, path: str, propagation: str = "Background") -> bool:
        self.requests.append(("delete", path))
        return self.objects.pop(path, None) is not None

    def update_status(
        self, path: str, compute: Callable[[Obj], Obj | None], attempts: int = 8, current: Obj | None = None
    ) -> tuple[Obj, Obj, Obj] | None:
        return k.update_status(self, path, compute, attempts=attempts, current=current)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        manifest = k.event_manifest(obj, type_, reason, message, component="terrasnap-operator")
        self.create(k.events_path(manifest["metadata"]["namespace"]), manifest)

    # --- internals ----------------------------------------------------------------------------------------

    def _create(self, collection: str, body: Mapping[str, Any]) -> tuple[Obj, bool]:
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'x-')}{next(self._serial):05d}"
        path = f"{collection}/{meta['name']}"
        if path in self.objects:
            return self.objects[path], False
        meta.setdefault("uid", f"uid-{meta['name']}")
        if "spec" in obj and obj.get("kind") in ("DatasetSnapshot", "SnapshotStore"):
            meta.setdefault("generation", 1)
        self._touch(obj)
        self.objects[path] = obj
        return obj, True

    def _touch(self, obj: Obj) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._serial))

