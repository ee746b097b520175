"""Dynamic provisioning for StorageClass `standard` (the default): a hostPath PV per claim, deleted when released.

The real PV binder (kube-controller-manager) binds the claim to the PV made here.
"""

from __future__ import annotations

import contextlib
import logging
import shutil

from .kube import ApiError
from .node import Node

PROVISIONER = "terrasnap.io/hostpath"
STORAGE_CLASS = "standard"
log = logging.getLogger("node-agent")


def ensure_storage_class(node: Node) -> None:
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
          "metadata": {"name": STORAGE_CLASS,
                       "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
          "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}
    with contextlib.suppress(ApiError):
        node.kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", sc)


def provision(node: Node) -> None:
    kube = node.kube
    pvcs = kube.get("/api/v1/persistentvolumeclaims")["items"]
    for pvc in pvcs:
        md, spec = pvc["metadata"], pvc["spec"]
        if spec.get("volumeName") or pvc.get("status", {}).get("phase") != "Pending":
            continue
        if spec.get("storageClassName") != STORAGE_CLASS or md.get("deletionTimestamp"):
            continue
        name = f"pvc-{md['uid']}"
        path = node.state / "pvs" / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": md["namespace"],
                             "name": md["name"], "uid": md["uid"]},
            },
        }
        try:
            kube.request("POST", "/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for %s/%s", name, md["namespace"], md["name"])
        except ApiError as e:
            if e.status != 409:
                raise
    for pv in kube.get("/api/v1/persistentvolumes")["items"]:
        ann = pv["metadata"].get("annotations") or {}
        if ann.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            continue
        if pv.get("status", {}).get("phase") == "Released" and \
                pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            shutil.rmtree(node.state / "pvs" / pv["metadata"]["name"], ignore_errors=True)
            with contextlib.suppress(ApiError):
                kube.request("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")


def pv_loop(node: Node) -> None:
    while not node.stopping.is_set():
        try:
            provision(node)
        except Exception as e:
            log.warning("provisioner: %s", e)
        node.stopping.wait(1)
