"""This Node: what it is (name, state directory, capacity), its registration, status, Lease and Events."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from .kube import ApiError, Kube, Obj, now, now_micro

log = logging.getLogger("node-agent")


class Node:
    def __init__(self, kube: Kube, name: str, state: Path, port: int, apiserver_port: int, version: str):
        self.kube = kube
        self.name = name
        self.state = state  # pods/<uid>/ and pvs/ live here
        self.port = port  # the kubelet API (logs)
        self.apiserver_port = apiserver_port
        self.version = version
        self.stopping = threading.Event()
        self.ready_since = now()
        mem_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        self.allocatable = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110",
                            "ephemeral-storage": f"{shutil.disk_usage(self.state).total // 1024}Ki"}

    def status(self) -> Obj:
        t = now()
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "terrasnap test node agent is posting ready status"),
        ]
        return {
            "capacity": self.allocatable, "allocatable": self.allocatable,
            "conditions": [{"type": ty, "status": s, "reason": r, "message": m, "lastHeartbeatTime": t,
                            "lastTransitionTime": self.ready_since} for ty, s, r, m in conds],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id") or uuid.uuid4().hex, "systemUUID": str(uuid.uuid4()),
                "bootID": _read("/proc/sys/kernel/random/boot_id"), "kernelVersion": os.uname().release,
                "osImage": _os_image(), "containerRuntimeVersion": "terrasnap-process://0.1",
                "kubeletVersion": self.version, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def register(self) -> None:
        self.ready_since = now()
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": {
                "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "terrasnap.io/process-node": "true"}},
            "spec": {},
            "status": self.status(),
        }
        try:
            self.kube.request("POST", "/api/v1/nodes", node)
        except ApiError as e:
            if e.status != 409:
                raise
        self.kube.merge_patch(f"/api/v1/nodes/{self.name}/status", {"status": self.status()})
        # The TaintNodesByCondition admission plugin registers the node with the not-ready taint; the
        # node-lifecycle controller (not run here: its evictions would only add noise) would lift it once the
        # node reports Ready, so the node does that itself.
        got = self.kube.get(f"/api/v1/nodes/{self.name}")
        taints = got["spec"].get("taints") or []
        keep = [t for t in taints if t["key"] != "node.kubernetes.io/not-ready"]
        if keep != taints:
            self.kube.merge_patch(f"/api/v1/nodes/{self.name}", {"spec": {"taints": keep or None}})
        log.info("node %s registered", self.name)

    def heartbeat_loop(self) -> None:
        """Renew the Lease every 10 s and post the status every 40 s; register again if the Node is gone."""
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        last_status = time.monotonic()
        while not self.stopping.wait(10):
            try:
                node = self.kube.get(f"/api/v1/nodes/{self.name}", ok404=True)
                if node is None:
                    self.register()
                    continue
                lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": self.name, "namespace": "kube-node-lease",
                                      "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                           "name": self.name,
                                                           "uid": node["metadata"]["uid"]}]},
                         "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                                  "renewTime": now_micro()}}
                try:
                    self.kube.merge_patch(lease_path, {"spec": lease["spec"]})
                except ApiError as e:
                    if e.status != 404:
                        raise
                    self.kube.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                      lease)
                if time.monotonic() - last_status > 40:
                    self.kube.merge_patch(f"/api/v1/nodes/{self.name}/status", {"status": self.status()})
                    last_status = time.monotonic()
            except Exception as e:
                log.warning("heartbeat: %s", e)

    def event(self, pod: Obj, reason: str, message: str, type_: str = "Normal") -> None:
        """An Event about a pod, from the kubelet; best effort."""
        md = pod["metadata"]
        t = now()
        ev = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
            "involvedObject": {"kind": "Pod", "namespace": md["namespace"], "name": md["name"], "uid": md["uid"],
                               "apiVersion": "v1"},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": t, "lastTimestamp": t, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.name,
        }
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{md['namespace']}/events", ev, timeout=5)
        except Exception as e:
            log.debug("event: %s", e)


def _read(p: str) -> str:
    try:
        return Path(p).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"
