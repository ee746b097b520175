"""A pod's volumes on the host: emptyDir, secret, configMap, downwardAPI, projected, hostPath, PVC, ephemeral.

Each volume becomes a host directory (or file) that pod_exec binds at the container's mount path.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from . import refs
from .kube import Kube, Obj
from .refs import ConfigError

Files = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)


class Volume(TypedDict):
    path: str  # on the host
    ro: bool


@dataclass
class VolumeSource:
    """What the volumes of one pod are made from."""

    kube: Kube
    pod: Obj
    dir: Path  # the pod's volumes directory
    node_name: str
    allocatable: dict[str, str]

    @property
    def ns(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def _write_files(self, d: Path, files: Files) -> None:
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for rel, (content, mode) in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            if fs_group is not None:
                os.chown(p, 0, fs_group)
                mode |= 0o040 if mode & 0o400 else 0
            p.chmod(mode)

    def _keyed_files(self, kind: refs.Kind, src: Obj, default_mode: int) -> Files:
        obj = refs.lookup(self.kube, self.ns, kind, src["name"], bool(src.get("optional")))
        data = refs.data(kind, obj)
        items = src.get("items")
        if not items:
            return {k: (v, default_mode) for k, v in data.items()}
        out = {}
        for it in items:
            if it["key"] not in data:
                if src.get("optional"):
                    continue
                raise ConfigError("FailedMount", f'couldn\'t find key {it["key"]} in {kind[:-1]} {self.ns}/{src["name"]}')
            out[it["path"]] = (data[it["key"]], it.get("mode", default_mode))
        return out

    def _downward_files(self, items: list[Obj], default_mode: int) -> Files:
        out = {}
        for it in items:
            if "fieldRef" in it:
                v = refs.field_ref(self.pod, it["fieldRef"]["fieldPath"], self.node_name)
            else:
                c = next(c for c in self.pod["spec"]["containers"]
                         if c["name"] == it["resourceFieldRef"].get("containerName"))
                v = refs.resource_ref(c, it["resourceFieldRef"], self.allocatable)
            out[it["path"]] = (v.encode(), it.get("mode", default_mode))
        return out

    def _token(self, src: Obj) -> bytes:
        md = self.pod["metadata"]
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": [src["audience"]] if src.get("audience") else None,
                "expirationSeconds": src.get("expirationSeconds", 3600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]},
            },
        }
        r = self.kube.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        return str(r["status"]["token"]).encode()

    def prepare(self) -> dict[str, Volume]:
        """Every volume of the pod, by name; raises ConfigError while something it needs is missing."""
        vols: dict[str, Volume] = {}
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            d = self.dir / name
            if "emptyDir" in v:
                d.mkdir(parents=True, exist_ok=True)
                d.chmod(0o777)
                if fs_group is not None:
                    os.chown(d, 0, fs_group)
                    d.chmod(0o2777)
                vols[name] = {"path": str(d), "ro": False}
            elif "secret" in v or "configMap" in v:
                kind: refs.Kind
                kind, src = ("secrets", v["secret"]) if "secret" in v else ("configmaps", v["configMap"])
                src = dict(src)
                src.setdefault("name", src.pop("secretName", None))
                files = self._keyed_files(kind, src, src.get("defaultMode", 0o644))
                _fresh(d)
                self._write_files(d, files)
                vols[name] = {"path": str(d), "ro": True}
            elif "downwardAPI" in v:
                da = v["downwardAPI"]
                _fresh(d)
                self._write_files(d, self._downward_files(da.get("items") or [], da.get("defaultMode", 0o644)))
                vols[name] = {"path": str(d), "ro": True}
            elif "projected" in v:
                self._write_projected(d, v["projected"], fs_group)
                vols[name] = {"path": str(d), "ro": True}
            elif "hostPath" in v:
                vols[name] = {"path": str(_host_path(v["hostPath"])), "ro": False}
            elif "persistentVolumeClaim" in v or "ephemeral" in v:
                vols[name] = self._claim(v)
            else:
                kind_ = next(k for k in v if k != "name")
                raise ConfigError("FailedMount", f"volume type {kind_} is not supported by this test node")
        return vols

    def _write_projected(self, d: Path, pr: Obj, fs_group: int | None) -> None:
        mode = pr.get("defaultMode", 0o644)
        files: Files = {}
        for s in pr.get("sources") or []:
            if "secret" in s:
                files.update(self._keyed_files("secrets", s["secret"], mode))
            elif "configMap" in s:
                files.update(self._keyed_files("configmaps", s["configMap"], mode))
            elif "downwardAPI" in s:
                files.update(self._downward_files(s["downwardAPI"].get("items") or [], mode))
            elif "serviceAccountToken" in s:
                sat = s["serviceAccountToken"]
                files[sat["path"]] = (self._token(sat), 0o644 if fs_group is None else 0o640)
            else:
                raise ConfigError("FailedMount", f"unsupported projected source {list(s)}")
        _fresh(d)
        self._write_files(d, files)

    def _claim(self, v: Obj) -> Volume:
        # a generic ephemeral volume is a PVC named <pod>-<volume>, made by the ephemeral-volume
        # controller and owned by the pod
        pvc_src = v.get("persistentVolumeClaim") or {"claimName": f"{self.pod['metadata']['name']}-{v['name']}"}
        claim = pvc_src["claimName"]
        pvc = self.kube.get(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}", ok404=True)
        if pvc is None:
            raise ConfigError("FailedMount", f'persistentvolumeclaim "{claim}" not found')
        if pvc.get("status", {}).get("phase") != "Bound":
            raise ConfigError("FailedMount", f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.kube.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
        src = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
        if not src:
            raise ConfigError("FailedMount", f"volume {pv['metadata']['name']} is not a host path")
        Path(src).mkdir(parents=True, exist_ok=True)
        return {"path": src, "ro": bool(pvc_src.get("readOnly"))}


def _host_path(hp: Obj) -> Path:
    p = Path(hp["path"])
    typ = hp.get("type") or ""
    if typ == "DirectoryOrCreate":
        p.mkdir(parents=True, exist_ok=True)
    elif typ == "FileOrCreate" and not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    elif typ == "Directory" and not p.is_dir():
        raise ConfigError("FailedMount", f"hostPath type check failed: {p} is not a directory")
    elif typ == "File" and not p.is_file():
        raise ConfigError("FailedMount", f"hostPath type check failed: {p} is not a file")
    elif not p.exists():
        p.mkdir(parents=True, exist_ok=True)  # kubelet's default ("") creates nothing; be lenient
    return p


def _fresh(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    d.chmod(0o755)
