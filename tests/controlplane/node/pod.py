#!/usr/bin/env python3
"""A node for the test control plane that runs pods as local processes (a tiny kubelet + scheduler).

* registers a Ready Node (and renews its Lease), binds pending pods to it (respecting spec.nodeName,
  cordon = spec.unschedulable, NoSchedule taints/tolerations and nodeSelector);
* runs each container as a process (see pod_exec.py): command/args with $(VAR) expansion, env and envFrom
  (values, Secret/ConfigMap keys, fieldRef, resourceFieldRef), workingDir, securityContext
  runAsUser/runAsGroup/supplementalGroups/fsGroup/readOnlyRootFilesystem/allowPrivilegeEscalation,
  volumes (emptyDir, secret, configMap, downwardAPI, projected incl. serviceAccountToken, hostPath,
  persistentVolumeClaim) at their real mount paths in a private mount namespace, init containers,
  restartPolicy, terminationMessagePath(+FallbackToLogsOnError) into the pod status, exit codes,
  activeDeadlineSeconds, graceful deletion (SIGTERM to the process group, SIGKILL after the grace period);
* keeps container logs and serves the kubelet's /containerLogs endpoint, so `kubectl logs` works;
* provisions hostPath PersistentVolumes for claims of its StorageClass `standard` (the default class).

Images are recorded, not pulled: the process runs on the host's filesystem with the project's venv first
on PATH. Every pod shares the host's network (like hostNetwork: true).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.server
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import urllib3
from kubernetes import config as kconfig
from kubernetes.client import Configuration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
VENV_BIN = Path(sys.executable).parent
PROVISIONER = "terrasnap.io/hostpath"
STORAGE_CLASS = "standard"
MAX_TERMINATION_MESSAGE = 4096
log = logging.getLogger("node-agent")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> float:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Kube:
    """Minimal JSON REST client built on the kubernetes package's kubeconfig loader."""

    def __init__(self, kubeconfig: str):
        cfg = Configuration()
        kconfig.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.host = cfg.host.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": "terrasnap-node-agent"}
        if cfg.api_key.get("authorization"):
            self.headers["Authorization"] = cfg.api_key["authorization"]
        self.pool = urllib3.PoolManager(
            num_pools=4, maxsize=16, cert_reqs="CERT_REQUIRED", ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file, key_file=cfg.key_file,
        )

    def request(self, method: str, path: str, body=None, query: dict | None = None,
                content_type: str = "application/json", timeout: float = 30, ok404: bool = False):
        url = self.host + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        r = self.pool.request(method, url, body=data, headers=headers, timeout=timeout, retries=False)
        if r.status == 404 and ok404:
            return None
        if r.status >= 300:
            raise ApiError(r.status, r.data.decode(errors="replace"))
        return json.loads(r.data) if r.data else None

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def merge_patch(self, path, body, **kw):
        return self.request("PATCH", path, body, content_type="application/merge-patch+json", **kw)

    def watch(self, path: str, rv: str, timeout: int = 60):
        q = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": str(timeout),
             "allowWatchBookmarks": "true"}
        url = self.host + path + "?" + urllib.parse.urlencode(q)
        r = self.pool.request("GET", url, headers=self.headers, preload_content=False, retries=False,
                              timeout=urllib3.Timeout(connect=10, read=timeout + 30))
        try:
            if r.status != 200:
                raise ApiError(r.status, r.read().decode(errors="replace"))
            buf = b""
            while True:
                chunk = r.read1(65536)  # whatever has arrived (read(n) would wait for n bytes)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            r.release_conn()


def pod_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods" + (f"/{name}" if name else "")


# ---------------------------------------------------------------------------------------------------------
# env and $(VAR) expansion

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, s)


def field_ref(pod: dict, path: str, node: str) -> str:
    md = pod["metadata"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (md.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": md.get("name", ""),
        "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""),
        "spec.nodeName": node,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path == "metadata.labels":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((md.get("labels") or {}).items()))
    if path == "metadata.annotations":
        return "\n".join(f'{k}="{v}"' for k, v in sorted((md.get("annotations") or {}).items()))
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path}")
    return simple[path]


def _quantity(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    return float(q)


def resource_ref(container: dict, ref: dict, node_alloc: dict) -> str:
    res = ref["resource"]
    kind, _, name = res.partition(".")
    val = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if val is None:
        val = node_alloc.get(name, "0")
    divisor = _quantity(str(ref.get("divisor", "1")))
    n = _quantity(str(val)) / divisor
    import math
    return str(math.ceil(n))


# ---------------------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """A container cannot be configured yet (missing Secret/ConfigMap key, unbound claim, ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class PodWorker:
    """Runs one pod on this node: volumes, init containers, containers, status, deletion."""

    def __init__(self, agent: Agent, pod: dict):
        self.agent = agent
        self.kube = agent.kube
        self.pod = pod
        md = pod["metadata"]
        self.ns, self.name, self.uid = md["namespace"], md["name"], md["uid"]
        self.dir = agent.state / "pods" / self.uid
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.deleted = False          # object gone from the API
        self.procs: dict[str, subprocess.Popen] = {}
        self.statuses: dict[str, dict] = {}
        self.init_statuses: dict[str, dict] = {}
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = (pod.get("status") or {}).get("startTime") or now()
        self.started_at_mono = time.monotonic() - max(0.0, time.time() - parse_time(self.start_time))
        self.last_status: dict | None = None
        self.volumes: dict[str, dict] = {}
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.ns}/{self.name}", daemon=True)

    # -- API plumbing -------------------------------------------------------------------------------------
    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
        self.changed.set()

    @property
    def deleting(self) -> bool:
        return self.deleted or bool(self.pod["metadata"].get("deletionTimestamp"))

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.agent.event(self.pod, reason, message, type_)

    def push_status(self, force: bool = False) -> None:
        spec = self.pod["spec"]
        conts = [self.statuses[c["name"]] for c in spec["containers"] if c["name"] in self.statuses]
        inits = [self.init_statuses[c["name"]] for c in spec.get("initContainers") or []
                 if c["name"] in self.init_statuses]
        initialized = all(s.get("state", {}).get("terminated", {}).get("exitCode") == 0 for s in inits) and (
            len(inits) == len(spec.get("initContainers") or []))
        all_ready = bool(conts) and len(conts) == len(spec["containers"]) and all(s["ready"] for s in conts)
        t = now()
        completed = self.phase in ("Succeeded", "Failed")

        def cond(type_, ok, reason=None):
            c = {"type": type_, "status": "True" if ok else "False", "lastProbeTime": None,
                 "lastTransitionTime": t}
            if reason and not ok:
                c["reason"] = reason
            prev = next((x for x in (self.last_status or {}).get("conditions", []) if x["type"] == type_), None)
            if prev and prev["status"] == c["status"]:
                c["lastTransitionTime"] = prev["lastTransitionTime"]
            return c

        status = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "qosClass": (self.pod.get("status") or {}).get("qosClass", "BestEffort"),
            "conditions": [
                cond("PodReadyToStartContainers", bool(self.volumes) or not spec.get("volumes")),
                cond("Initialized", initialized, "ContainersNotInitialized"),
                cond("Ready", all_ready and not completed, "PodCompleted" if completed else "ContainersNotReady"),
                cond("ContainersReady", all_ready and not completed,
                     "PodCompleted" if completed else "ContainersNotReady"),
                cond("PodScheduled", True),
            ],
            "containerStatuses": conts,
            "initContainerStatuses": inits,
            "reason": self.reason,
            "message": self.message,
        }
        # keep conditions set by others (e.g. DisruptionTarget from controllers)
        for c in (self.pod.get("status") or {}).get("conditions") or []:
            if c["type"] not in {x["type"] for x in status["conditions"]}:
                status["conditions"].append(c)
        if not force and status == self.last_status:
            return
        try:
            self.kube.merge_patch(pod_path(self.ns, self.name) + "/status", {"status": status})
            self.last_status = status
        except ApiError as e:
            if e.status == 404:
                self.deleted = True
            else:
                log.warning("status update for %s/%s failed: %s", self.ns, self.name, e)
        except Exception as e:  # network hiccup: next change retries
            log.warning("status update for %s/%s failed: %s", self.ns, self.name, e)

    # -- volumes ------------------------------------------------------------------------------------------
    def _get(self, kind: str, name: str, optional: bool) -> dict | None:
        obj = self.kube.get(f"/api/v1/namespaces/{self.ns}/{kind}/{name}", ok404=True)
        if obj is None and not optional:
            singular = {"secrets": "secret", "configmaps": "configmap"}[kind]
            raise ConfigError("CreateContainerConfigError", f'{singular} "{name}" not found')
        return obj

    def _data(self, kind: str, obj: dict | None) -> dict[str, bytes]:
        if obj is None:
            return {}
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out

    def _write_files(self, d: Path, files: dict[str, tuple[bytes, int]]) -> None:
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for rel, (data, mode) in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            if fs_group is not None:
                os.chown(p, 0, fs_group)
                mode |= 0o040 if mode & 0o400 else 0
            p.chmod(mode)

    def _keyed_files(self, kind: str, src: dict, default_mode: int) -> dict[str, tuple[bytes, int]]:
        obj = self._get(kind, src["name"], bool(src.get("optional")))
        data = self._data(kind, obj)
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

    def _downward_files(self, items: list, default_mode: int) -> dict[str, tuple[bytes, int]]:
        out = {}
        for it in items:
            if "fieldRef" in it:
                v = field_ref(self.pod, it["fieldRef"]["fieldPath"], self.agent.node_name)
            else:
                c = next(c for c in self.pod["spec"]["containers"]
                         if c["name"] == it["resourceFieldRef"].get("containerName"))
                v = resource_ref(c, it["resourceFieldRef"], self.agent.allocatable)
            out[it["path"]] = (v.encode(), it.get("mode", default_mode))
        return out

    def _token(self, src: dict) -> bytes:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": [src["audience"]] if src.get("audience") else None,
                "expirationSeconds": src.get("expirationSeconds", 3600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            },
        }
        r = self.kube.request("POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        return r["status"]["token"].encode()

    def prepare_volumes(self) -> dict[str, dict]:
        vols: dict[str, dict] = {}
        vdir = self.dir / "volumes"
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            d = vdir / name
            if "emptyDir" in v:
                d.mkdir(parents=True, exist_ok=True)
                d.chmod(0o777)
                if fs_group is not None:
                    os.chown(d, 0, fs_group)
                    d.chmod(0o2777)
                vols[name] = {"path": str(d), "ro": False}
            elif "secret" in v or "configMap" in v:
                kind, src = ("secrets", v["secret"]) if "secret" in v else ("configmaps", v["configMap"])
                src = dict(src)
                src.setdefault("name", src.pop("secretName", None))
                files = self._keyed_files(kind, src, src.get("defaultMode", 0o644))
                self._fresh(d)
                self._write_files(d, files)
                vols[name] = {"path": str(d), "ro": True}
            elif "downwardAPI" in v:
                da = v["downwardAPI"]
                self._fresh(d)
                self._write_files(d, self._downward_files(da.get("items") or [], da.get("defaultMode", 0o644)))
                vols[name] = {"path": str(d), "ro": True}
            elif "projected" in v:
                pr = v["projected"]
                mode = pr.get("defaultMode", 0o644)
                files: dict[str, tuple[bytes, int]] = {}
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
                self._fresh(d)
                self._write_files(d, files)
                vols[name] = {"path": str(d), "ro": True}
            elif "hostPath" in v:
                hp = v["hostPath"]
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
                vols[name] = {"path": str(p), "ro": False}
            elif "persistentVolumeClaim" in v or "ephemeral" in v:
                # a generic ephemeral volume is a PVC named <pod>-<volume>, made by the ephemeral-volume
                # controller and owned by the pod
                pvc_src = v.get("persistentVolumeClaim") or {"claimName": f"{self.name}-{name}"}
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
                vols[name] = {"path": src, "ro": bool(pvc_src.get("readOnly"))}
            else:
                kind = next(k for k in v if k != "name")
                raise ConfigError("FailedMount", f"volume type {kind} is not supported by this test node")
        return vols

    @staticmethod
    def _fresh(d: Path) -> None:
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        d.chmod(0o755)

    # -- containers ---------------------------------------------------------------------------------------
    def build_env(self, c: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                ref = ef["configMapRef"]
                data = self._data("configmaps", self._get("configmaps", ref["name"], bool(ref.get("optional"))))
            else:
                ref = ef["secretRef"]
                data = self._data("secrets", self._get("secrets", ref["name"], bool(ref.get("optional"))))
            for k, v in data.items():
                env[prefix + k] = v.decode(errors="replace")
        for e in c.get("env") or []:
            n = e["name"]
            if "valueFrom" not in e:
                env[n] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "secretKeyRef" in vf or "configMapKeyRef" in vf:
                kind, ref = ("secrets", vf["secretKeyRef"]) if "secretKeyRef" in vf else ("configmaps", vf["configMapKeyRef"])
                data = self._data(kind, self._get(kind, ref["name"], bool(ref.get("optional"))))
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError("CreateContainerConfigError",
                                      f"couldn't find key {ref['key']} in {kind[:-1].replace('configmap', 'ConfigMap').replace('secret', 'Secret')} {self.ns}/{ref['name']}")
                env[n] = data[ref["key"]].decode(errors="replace")
            elif "fieldRef" in vf:
                env[n] = field_ref(self.pod, vf["fieldRef"]["fieldPath"], self.agent.node_name)
            elif "resourceFieldRef" in vf:
                env[n] = resource_ref(c, vf["resourceFieldRef"], self.agent.allocatable)
            else:
                raise ConfigError("CreateContainerConfigError", f"unsupported valueFrom {list(vf)}")
        return env

    def security(self, c: dict) -> dict:
        psc = self.pod["spec"].get("securityContext") or {}
        csc = c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if uid is None:
            # no image to read a USER from: run as root unless runAsNonRoot asks otherwise
            uid = 65532 if non_root else 0
        if non_root and uid == 0:
            raise ConfigError("CreateContainerConfigError",
                              f"container's runAsUser breaks non-root policy (pod: {self.name}_{self.ns}({self.uid}), "
                              f"container: {c['name']})")
        if gid is None:
            gid = uid if uid != 0 else 0
        groups = list(psc.get("supplementalGroups") or [])
        if psc.get("fsGroup") is not None:
            groups.append(psc["fsGroup"])
        no_new_privs = csc.get("allowPrivilegeEscalation") is False
        return {"uid": int(uid), "gid": int(gid), "groups": sorted(set(groups)),
                "noNewPrivs": no_new_privs, "readOnlyRootFilesystem": bool(csc.get("readOnlyRootFilesystem"))}

    def base_env(self, sec: dict) -> dict[str, str]:
        path = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        try:
            home = pwd.getpwuid(sec["uid"]).pw_dir
        except KeyError:
            home = "/"
        ap = self.agent.apiserver_port
        return {
            "PATH": path,
            "HOME": home,
            "HOSTNAME": self.name,
            "VIRTUAL_ENV": str(VENV_BIN.parent),
            "LANG": "C.UTF-8",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(ap),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(ap),
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{ap}",
            "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{ap}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": str(ap),
            "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
        }

    def log_file(self, cname: str, restart: int) -> Path:
        return self.dir / "logs" / cname / f"{restart}.log"

    def start_container(self, c: dict, restart: int, init: bool) -> subprocess.Popen:
        cname = c["name"]
        sec = self.security(c)
        env = self.base_env(sec)
        env.update(self.build_env(c))
        cmd = [expand(x, env) for x in c.get("command") or []]
        args = [expand(x, env) for x in c.get("args") or []]
        argv = cmd + args
        if not argv:
            raise ConfigError("CreateContainerError", f"container {cname}: no command (images are not pulled "
                              "on this test node, so the image's entrypoint is unknown)")
        cdir = self.dir / "containers" / f"{cname}-{restart}"
        if cdir.exists():
            shutil.rmtree(cdir, ignore_errors=True)
        cdir.mkdir(parents=True)
        term = self.dir / "termination" / cname
        term.parent.mkdir(parents=True, exist_ok=True)
        term.write_bytes(b"")
        term.chmod(0o666)
        tm_path = c.get("terminationMessagePath") or "/dev/termination-log"
        mounts = []
        for vm in c.get("volumeMounts") or []:
            vol = self.volumes.get(vm["name"])
            if vol is None:
                raise ConfigError("CreateContainerConfigError", f"volume {vm['name']} not found")
            src = Path(vol["path"])
            sub = vm.get("subPath") or (expand(vm["subPathExpr"], env) if vm.get("subPathExpr") else "")
            if sub:
                src = src / sub
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
                    src.chmod(0o777)
            mounts.append({"name": vm["name"], "source": str(src), "target": vm["mountPath"],
                           "readOnly": bool(vm.get("readOnly")) or vol["ro"]})
        mounts.append({"name": "termination-log", "source": str(term), "target": tm_path, "readOnly": False})
        spec = {
            "root": str(cdir / "rootfs"), "upper": str(cdir / "upper"), "work": str(cdir / "work"),
            "state": str(self.agent.state),
            "mounts": mounts, "argv": argv, "env": env, "cwd": c.get("workingDir") or "/",
            "terminationMessagePath": tm_path,
            "expose": [sys.base_prefix, str(VENV_BIN.parent), str(REPO), str(self.agent.state)],
            **sec,
        }
        (cdir / "spec.json").write_text(json.dumps(spec))
        lf = self.log_file(cname, restart)
        lf.parent.mkdir(parents=True, exist_ok=True)
        with open(lf, "ab") as out:
            p = subprocess.Popen(
                [sys.executable, "-I", "-S", str(HERE / "pod_exec.py"), str(cdir / "spec.json")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, cwd="/",
            )
        p.started_at = now()  # type: ignore[attr-defined]
        p.cdir = cdir  # type: ignore[attr-defined]
        p.term = term  # type: ignore[attr-defined]
        log.info("started %s/%s[%s] pid %d: %s", self.ns, self.name, cname, p.pid, argv)
        return p

    def termination_message(self, c: dict, exit_code: int, restart: int, term: Path) -> str:
        msg = ""
        with contextlib.suppress(OSError):
            msg = term.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
        if not msg and exit_code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                data = self.log_file(c["name"], restart).read_bytes()
                lines = data.decode(errors="replace").splitlines()[-80:]
                msg = "\n".join(lines)[-2048:]
        return msg

    def kill(self, p: subprocess.Popen, grace: float) -> None:
        if p.poll() is not None:
            return
        pids = _descendants(p.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        pids |= _descendants(p.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)

    def _waiting(self, c: dict, reason: str, message: str | None = None, restarts: int = 0,
                 last: dict | None = None, init: bool = False) -> None:
        st = {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False, "started": False,
              "restartCount": restarts, "state": {"waiting": {"reason": reason}}, "lastState": last or {}}
        if message:
            st["state"]["waiting"]["message"] = message
        (self.init_statuses if init else self.statuses)[c["name"]] = st

    def _running(self, c: dict, p, restarts: int, last: dict | None, init: bool = False) -> None:
        st = {"name": c["name"], "image": c.get("image", ""), "imageID": f"terrasnap-process://{c.get('image', '')}",
              "containerID": f"process://{p.pid}", "ready": not init, "started": True,
              "restartCount": restarts, "state": {"running": {"startedAt": p.started_at}}, "lastState": last or {}}
        (self.init_statuses if init else self.statuses)[c["name"]] = st

    def _terminated(self, c: dict, p, restarts: int, code: int, init: bool = False,
                    reason: str | None = None) -> dict:
        if code < 0:
            code = 128 - code  # killed by signal N -> 128+N, like a container runtime
        term = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                "startedAt": p.started_at, "finishedAt": now(), "containerID": f"process://{p.pid}"}
        msg = self.termination_message(c, code, restarts, p.term)
        if msg:
            term["message"] = msg
        prev = (self.init_statuses if init else self.statuses).get(c["name"], {})
        st = {"name": c["name"], "image": c.get("image", ""), "imageID": f"terrasnap-process://{c.get('image', '')}",
              "containerID": f"process://{p.pid}", "ready": False, "started": False,
              "restartCount": restarts, "state": {"terminated": term}, "lastState": prev.get("lastState", {})}
        (self.init_statuses if init else self.statuses)[c["name"]] = st
        return st

    # -- the pod's life -----------------------------------------------------------------------------------
    def deadline_exceeded(self) -> bool:
        ads = self.pod["spec"].get("activeDeadlineSeconds")
        return ads is not None and time.monotonic() - self.started_at_mono > ads

    def grace(self) -> float:
        md = self.pod["metadata"]
        g = md.get("deletionGracePeriodSeconds")
        if g is None:
            g = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(max(g, 0))

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s/%s crashed", self.ns, self.name)
            self.phase, self.reason, self.message = "Failed", "NodeAgentError", "the test node agent failed"
            for p in list(self.procs.values()):
                self.kill(p, 0)
            self.push_status()
        finally:
            if self.deleting:
                self.finish_deletion()
            self.agent.worker_done(self)

    def wait_change(self, timeout: float) -> None:
        self.changed.wait(timeout)
        self.changed.clear()

    def _run(self) -> None:
        spec = self.pod["spec"]
        self.dir.mkdir(parents=True, exist_ok=True)
        for c in spec.get("initContainers") or []:
            self._waiting(c, "PodInitializing", init=True)
        for c in spec["containers"]:
            self._waiting(c, "ContainerCreating" if not spec.get("initContainers") else "PodInitializing")
        self.push_status()
        # volumes (retry like the kubelet while something is missing)
        warned = None
        while True:
            if self.deleting:
                return
            if self.deadline_exceeded():
                return self.fail_deadline()
            try:
                self.volumes = self.prepare_volumes()
                break
            except (ConfigError, ApiError, urllib3.exceptions.HTTPError) as e:
                if str(e) != warned:
                    self.event("FailedMount", str(e), "Warning")
                    warned = str(e)
                self.wait_change(1.0)
        restart_policy = spec.get("restartPolicy", "Always")
        # init containers, one after another
        for c in spec.get("initContainers") or []:
            if c.get("restartPolicy") == "Always":  # sidecar: start it and move on
                ok = self.start_main(c, init=True, sidecar=True)
                if not ok:
                    return
                continue
            restarts = 0
            while True:
                code = self.run_to_end(c, restarts, init=True)
                if code is None:
                    return  # deleted / deadline
                if code == 0:
                    break
                if restart_policy == "Never":
                    self.phase = "Failed"
                    for mc in spec["containers"]:
                        self._waiting(mc, "PodInitializing")
                    self.push_status()
                    self.event("Failed", f"init container {c['name']} failed with exit code {code}", "Warning")
                    return
                restarts += 1
                self.backoff(c, restarts, init=True)
                if self.deleting:
                    return
        for c in spec["containers"]:
            if not self.start_main(c):
                return
        self.supervise(restart_policy)

    def start_main(self, c: dict, init: bool = False, sidecar: bool = False, restarts: int = 0) -> bool:
        warned = None
        while True:
            if self.deleting:
                return False
            if self.deadline_exceeded():
                self.fail_deadline()
                return False
            try:
                p = self.start_container(c, restarts, init)
                break
            except (ConfigError, ApiError, urllib3.exceptions.HTTPError) as e:
                reason = e.reason if isinstance(e, ConfigError) else "CreateContainerConfigError"
                self._waiting(c, reason, str(e), restarts, init=init)
                self.push_status()
                if str(e) != warned:
                    self.event("Failed", f"Error: {e}", "Warning")
                    warned = str(e)
                self.wait_change(1.0)
        key = ("init:" if init else "") + c["name"]
        self.procs[key] = p
        if not init:
            self.phase = "Running"  # Pending until a main container runs (the kubelet's rule)
        p.restarts = restarts  # type: ignore[attr-defined]
        p.container = c  # type: ignore[attr-defined]
        p.init = init  # type: ignore[attr-defined]
        self._running(c, p, restarts, (self.init_statuses if init else self.statuses).get(c["name"], {}).get("lastState"),
                      init=init)
        if sidecar:
            (self.init_statuses)[c["name"]]["ready"] = True
        self.event("Started", f"Started container {c['name']}")
        self.push_status()
        return True

    def run_to_end(self, c: dict, restarts: int, init: bool) -> int | None:
        if not self.start_main(c, init=init, restarts=restarts):
            return None
        p = self.procs["init:" + c["name"] if init else c["name"]]
        while p.poll() is None:
            if self.deleting:
                self.kill(p, self.grace())
                return None
            if self.deadline_exceeded():
                self.kill(p, 0)
                self.fail_deadline()
                return None
            self.wait_change(0.1)
        code = p.returncode
        self._terminated(c, p, restarts, code, init=init)
        self.push_status()
        return code if code >= 0 else 128 - code

    def backoff(self, c: dict, restarts: int, init: bool = False) -> None:
        delay = min(10.0 * 2 ** (restarts - 1), 300.0) if restarts > 1 else 1.0
        st = (self.init_statuses if init else self.statuses)[c["name"]]
        last = {"terminated": st["state"].get("terminated", {})}
        self._waiting(c, "CrashLoopBackOff", f"back-off {int(delay)}s restarting failed container={c['name']}",
                      restarts - 1, last=last, init=init)
        self.push_status()
        end = time.monotonic() + delay
        while time.monotonic() < end and not self.deleting and not self.deadline_exceeded():
            self.wait_change(min(0.2, end - time.monotonic()) if end > time.monotonic() else 0)

    def supervise(self, restart_policy: str) -> None:
        main = {c["name"]: c for c in self.pod["spec"]["containers"]}
        pending_restart: dict[str, tuple[float, int]] = {}
        while True:
            if self.deleting:
                grace = self.grace()
                self.event("Killing", f"Stopping container(s) {', '.join(main)}")
                threads = []
                for p in list(self.procs.values()):
                    if p.poll() is None:
                        t = threading.Thread(target=self.kill, args=(p, grace), daemon=True)
                        t.start()
                        threads.append(t)
                for t in threads:
                    t.join()
                for p in list(self.procs.values()):
                    c = p.container  # type: ignore[attr-defined]
                    if p.returncode is not None and self._state(c, p.init)["state"].get("running"):  # type: ignore[attr-defined]
                        self._terminated(c, p, p.restarts, p.returncode, init=p.init)  # type: ignore[attr-defined]
                if self.phase == "Running":
                    codes = [s["state"].get("terminated", {}).get("exitCode", 1) for s in self.statuses.values()]
                    self.phase = "Succeeded" if restart_policy != "Always" and all(x == 0 for x in codes) else "Failed"
                self.push_status()
                return
            if self.deadline_exceeded():
                for p in list(self.procs.values()):
                    self.kill(p, 0)
                for p in list(self.procs.values()):
                    c = p.container  # type: ignore[attr-defined]
                    self._terminated(c, p, p.restarts, p.returncode if p.returncode is not None else 137,  # type: ignore[attr-defined]
                                     init=p.init)  # type: ignore[attr-defined]
                return self.fail_deadline()
            changed = False
            for name, c in main.items():
                p = self.procs.get(name)
                if p is None or name in pending_restart:
                    continue
                if p.poll() is None or not self._state(c, False)["state"].get("running"):
                    continue
                code = p.returncode
                st = self._terminated(c, p, p.restarts, code)  # type: ignore[attr-defined]
                code = st["state"]["terminated"]["exitCode"]
                changed = True
                if restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0):
                    restarts = p.restarts + 1  # type: ignore[attr-defined]
                    delay = min(10.0 * 2 ** (restarts - 2), 300.0) if restarts > 1 else 1.0
                    last = {"terminated": st["state"]["terminated"]}
                    self._waiting(c, "CrashLoopBackOff",
                                  f"back-off {int(delay)}s restarting failed container={name}", p.restarts,  # type: ignore[attr-defined]
                                  last=last)
                    pending_restart[name] = (time.monotonic() + delay, restarts)
            for name, (when, restarts) in list(pending_restart.items()):
                if time.monotonic() >= when:
                    del pending_restart[name]
                    if not self.start_main(main[name], restarts=restarts):
                        return
                    changed = True
            if not pending_restart and all(
                self.procs.get(n) is not None and self.procs[n].poll() is not None
                and self._state(main[n], False)["state"].get("terminated") for n in main
            ):
                codes = [self.statuses[n]["state"]["terminated"]["exitCode"] for n in main]
                # sidecars stop once the main containers are done
                for key, p in list(self.procs.items()):
                    if key.startswith("init:") and p.poll() is None:
                        self.kill(p, self.grace())
                        self._terminated(p.container, p, p.restarts, p.returncode, init=True)  # type: ignore[attr-defined]
                self.phase = "Succeeded" if all(x == 0 for x in codes) else "Failed"
                self.push_status()
                return
            if changed:
                self.push_status()
            self.wait_change(0.1)

    def _state(self, c: dict, init: bool) -> dict:
        return (self.init_statuses if init else self.statuses)[c["name"]]

    def fail_deadline(self) -> None:
        for p in list(self.procs.values()):
            self.kill(p, 0)
        self.phase = "Failed"
        self.reason = "DeadlineExceeded"
        self.message = ("Pod was active on the node longer than the specified deadline")
        self.event("DeadlineExceeded", self.message, "Warning")
        self.push_status(force=True)

    def finish_deletion(self) -> None:
        """Everything is stopped: let the API server remove the object (the kubelet's final delete)."""
        for p in list(self.procs.values()):
            self.kill(p, 0)
        if self.deleted:
            return
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}}
        with contextlib.suppress(ApiError):
            self.kube.request("DELETE", pod_path(self.ns, self.name), body)


def _descendants(pid: int) -> set[int]:
    try:
        import psutil
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except Exception:
        return set()


# ---------------------------------------------------------------------------------------------------------


class LogHandler(http.server.BaseHTTPRequestHandler):
    """The kubelet endpoints the API server proxies to: /containerLogs/{ns}/{pod}/{container}, /healthz."""

    agent: Agent
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.debug("kubelet-api: " + fmt, *args)

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/") if p]
        if parts == ["healthz"]:
            return self._send(200, b"ok")
        if parts == ["pods"]:
            items = [w.pod for w in list(self.agent.workers.values())]
            return self._send(200, json.dumps({"kind": "PodList", "apiVersion": "v1", "items": items}).encode(),
                              "application/json")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._send(404, b"not found")
        _, ns, name, cname = parts
        found = self.agent.find_logs(ns, name, cname, previous=q.get("previous", ["false"])[0] == "true")
        if found is None:
            return self._send(404, f'container "{cname}" in pod "{name}" not found'.encode())
        path, worker = found
        follow = q.get("follow", ["false"])[0] == "true"
        tail = int(q["tailLines"][0]) if "tailLines" in q else None
        limit = int(q["limitBytes"][0]) if "limitBytes" in q else None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        offset = len(data)
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        if limit is not None:
            data = data[:limit]
        if not follow:
            return self._send(200, data)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = len(data)

        def chunk(b: bytes) -> None:
            self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
            self.wfile.flush()

        try:
            if data:
                chunk(data)
            with open(path, "rb") as f:
                f.seek(offset)
                while True:
                    b = f.read(65536)
                    if b:
                        if limit is not None:
                            b = b[: max(0, limit - sent)]
                        if b:
                            chunk(b)
                            sent += len(b)
                        if limit is not None and sent >= limit:
                            break
                        continue
                    if worker is None or not worker.container_running(cname):
                        b = f.read()
                        if b:
                            chunk(b)
                        break
                    time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass


def _container_running(self: PodWorker, cname: str) -> bool:
    p = self.procs.get(cname) or self.procs.get("init:" + cname)
    return p is not None and p.poll() is None and not self.agent.stopping.is_set()


PodWorker.container_running = _container_running  # type: ignore[attr-defined]


class Agent:
    def __init__(self, a: argparse.Namespace):
        self.kube = Kube(a.kubeconfig)
        self.node_name = a.node_name
        self.state = Path(a.state).resolve()
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "pods").mkdir(exist_ok=True)
        (self.state / "pvs").mkdir(exist_ok=True)
        self.port = a.port
        self.apiserver_port = a.apiserver_port
        self.version = a.kubernetes_version
        self.tls = (a.tls_cert, a.tls_key, a.client_ca)
        self.workers: dict[str, PodWorker] = {}
        self.finished: dict[tuple[str, str], str] = {}  # (ns, name) -> uid of a finished pod, for logs
        self.done: set[str] = set()  # uids of pods whose worker ended: never run twice
        self.wlock = threading.Lock()
        self.stopping = threading.Event()
        mem_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        self.allocatable = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110",
                            "ephemeral-storage": f"{shutil.disk_usage(self.state).total // 1024}Ki"}

    # -- node -----------------------------------------------------------------------------------------
    def node_status(self) -> dict:
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
                          {"type": "Hostname", "address": self.node_name}],
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
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "terrasnap.io/process-node": "true"}},
            "spec": {},
            "status": self.node_status(),
        }
        try:
            self.kube.request("POST", "/api/v1/nodes", node)
        except ApiError as e:
            if e.status != 409:
                raise
        self.kube.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": self.node_status()})
        # The TaintNodesByCondition admission plugin registers the node with the not-ready taint; the
        # node-lifecycle controller (not run here: its evictions would only add noise) would lift it once the
        # node reports Ready, so the node does that itself.
        node = self.kube.get(f"/api/v1/nodes/{self.node_name}")
        taints = node["spec"].get("taints") or []
        keep = [t for t in taints if t["key"] != "node.kubernetes.io/not-ready"]
        if keep != taints:
            self.kube.merge_patch(f"/api/v1/nodes/{self.node_name}", {"spec": {"taints": keep or None}})
        log.info("node %s registered", self.node_name)

    def heartbeat_loop(self) -> None:
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        last_status = time.monotonic()
        while not self.stopping.wait(10):
            try:
                node = self.kube.get(f"/api/v1/nodes/{self.node_name}", ok404=True)
                if node is None:
                    self.register()
                    continue
                lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": self.node_name, "namespace": "kube-node-lease",
                                      "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                           "name": self.node_name,
                                                           "uid": node["metadata"]["uid"]}]},
                         "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                                  "renewTime": now_micro()}}
                try:
                    self.kube.merge_patch(lease_path, {"spec": lease["spec"]})
                except ApiError as e:
                    if e.status != 404:
                        raise
                    self.kube.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                      lease)
                if time.monotonic() - last_status > 40:
                    self.kube.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": self.node_status()})
                    last_status = time.monotonic()
            except Exception as e:
                log.warning("heartbeat: %s", e)

    def ensure_storage_class(self) -> None:
        sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
              "metadata": {"name": STORAGE_CLASS,
                           "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
              "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}
        with contextlib.suppress(ApiError):
            self.kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", sc)

    # -- events ---------------------------------------------------------------------------------------
    def event(self, pod: dict, reason: str, message: str, type_: str = "Normal") -> None:
        md = pod["metadata"]
        t = now()
        ev = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
            "involvedObject": {"kind": "Pod", "namespace": md["namespace"], "name": md["name"], "uid": md["uid"],
                               "apiVersion": "v1"},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": "kubelet", "host": self.node_name},
            "firstTimestamp": t, "lastTimestamp": t, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.node_name,
        }
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{md['namespace']}/events", ev, timeout=5)
        except Exception as e:
            log.debug("event: %s", e)

    # -- scheduling -----------------------------------------------------------------------------------
    def schedulable(self, pod: dict) -> bool:
        spec = pod["spec"]
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return False
        node = self.kube.get(f"/api/v1/nodes/{self.node_name}", ok404=True)
        if node is None or node["spec"].get("unschedulable"):
            return False
        labels = node["metadata"].get("labels") or {}
        for k, v in (spec.get("nodeSelector") or {}).items():
            if labels.get(k) != v:
                return False
        for taint in node["spec"].get("taints") or []:
            if taint["effect"] not in ("NoSchedule", "NoExecute"):
                continue
            if not any(_tolerates(t, taint) for t in spec.get("tolerations") or []):
                return False
        return True

    def bind(self, pod: dict) -> None:
        md = pod["metadata"]
        if not self.schedulable(pod):
            return
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": md["name"], "uid": md["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
        try:
            self.kube.request("POST", pod_path(md["namespace"], md["name"]) + "/binding", body)
            self.event(pod, "Scheduled", f"Successfully assigned {md['namespace']}/{md['name']} to {self.node_name}")
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("bind %s/%s: %s", md["namespace"], md["name"], e)

    # -- pods -----------------------------------------------------------------------------------------
    def handle_pod(self, etype: str, pod: dict) -> None:
        md, spec = pod["metadata"], pod["spec"]
        uid = md["uid"]
        with self.wlock:
            w = self.workers.get(uid)
        if etype == "DELETED":
            if w:
                w.deleted = True
                w.changed.set()
            else:
                self.cleanup_pod_dir(uid, md["namespace"], md["name"])
            return
        if w:
            w.update(pod)
            return
        node = spec.get("nodeName")
        if not node:
            if not md.get("deletionTimestamp") and pod.get("status", {}).get("phase", "Pending") == "Pending":
                self.bind(pod)
            return
        if node != self.node_name:
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if uid in self.done or (self.state / "pods" / uid / "done").exists():
            phase = "Succeeded"  # ran here already; a late event with an older phase must not start it again
        if phase in ("Succeeded", "Failed"):
            if md.get("deletionTimestamp"):  # nothing runs: let the object go (the kubelet's final delete)
                threading.Thread(target=self._final_delete, args=(pod,), daemon=True).start()
            else:
                self.finished.setdefault((md["namespace"], md["name"]), uid)
            return
        if self.stopping.is_set():
            return
        # A pod already Running that this agent does not know was started by an earlier agent process (its
        # processes died with it): it runs again from the start, as after a node reboot.
        w = PodWorker(self, pod)
        with self.wlock:
            self.workers[uid] = w
            self.finished.pop((md["namespace"], md["name"]), None)
        w.thread.start()

    def _final_delete(self, pod: dict) -> None:
        md = pod["metadata"]
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": md["uid"]}}
        with contextlib.suppress(ApiError):
            self.kube.request("DELETE", pod_path(md["namespace"], md["name"]), body)

    def worker_done(self, w: PodWorker) -> None:
        with self.wlock:
            self.done.add(w.uid)
            with contextlib.suppress(OSError):
                (w.dir / "done").touch()
            self.workers.pop(w.uid, None)
            if w.deleted:
                self.cleanup_pod_dir(w.uid, w.ns, w.name)
            else:
                self.finished[(w.ns, w.name)] = w.uid

    def cleanup_pod_dir(self, uid: str, ns: str, name: str) -> None:
        if self.finished.get((ns, name)) == uid:
            self.finished.pop((ns, name), None)
        d = self.state / "pods" / uid
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)

    def find_logs(self, ns: str, name: str, cname: str, previous: bool):
        with self.wlock:
            w = next((w for w in self.workers.values() if w.ns == ns and w.name == name), None)
            uid = w.uid if w else self.finished.get((ns, name))
        if uid is None:
            return None
        d = self.state / "pods" / uid / "logs" / cname
        runs = sorted((int(p.stem) for p in d.glob("*.log")), reverse=True) if d.exists() else []
        if not runs:
            return None
        if previous:
            if len(runs) < 2:
                return None
            return d / f"{runs[1]}.log", None
        return d / f"{runs[0]}.log", w

    def pod_loop(self) -> None:
        path = "/api/v1/pods"
        while not self.stopping.is_set():
            try:
                lst = self.kube.get(path)
                rv = lst["metadata"]["resourceVersion"]
                seen = set()
                for pod in lst["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.handle_pod("ADDED", pod)
                with self.wlock:
                    gone = [w for uid, w in self.workers.items() if uid not in seen]
                for w in gone:
                    w.deleted = True
                    w.changed.set()
                while not self.stopping.is_set():
                    for ev in self.kube.watch(path, rv):
                        t, obj = ev["type"], ev["object"]
                        if t == "ERROR":
                            raise ApiError(obj.get("code", 500), json.dumps(obj))
                        rv = obj["metadata"]["resourceVersion"]
                        if t == "BOOKMARK":
                            continue
                        try:
                            self.handle_pod(t, obj)
                        except Exception:
                            log.exception("handling pod event")
                        if self.stopping.is_set():
                            return
            except ApiError as e:
                if e.status != 410:
                    log.warning("pod watch: %s", e)
                    self.stopping.wait(1)
            except Exception as e:
                log.warning("pod watch: %s", e)
                self.stopping.wait(1)

    # -- persistent volumes ---------------------------------------------------------------------------
    def pv_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.provision()
            except Exception as e:
                log.warning("provisioner: %s", e)
            self.stopping.wait(1)

    def schedule_loop(self) -> None:
        """Re-try binding pending pods (the watch only fires when a pod changes, not when the node does)."""
        while not self.stopping.wait(1):
            try:
                pods = self.kube.get("/api/v1/pods", query={"fieldSelector": "spec.nodeName=,status.phase=Pending"})
                for pod in pods["items"]:
                    if not pod["metadata"].get("deletionTimestamp"):
                        self.bind(pod)
            except Exception as e:
                log.warning("scheduler: %s", e)

    def provision(self) -> None:
        pvcs = self.kube.get("/api/v1/persistentvolumeclaims")["items"]
        for pvc in pvcs:
            md, spec = pvc["metadata"], pvc["spec"]
            if spec.get("volumeName") or pvc.get("status", {}).get("phase") != "Pending":
                continue
            if spec.get("storageClassName") != STORAGE_CLASS or md.get("deletionTimestamp"):
                continue
            name = f"pvc-{md['uid']}"
            path = self.state / "pvs" / name
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
                self.kube.request("POST", "/api/v1/persistentvolumes", pv)
                log.info("provisioned %s for %s/%s", name, md["namespace"], md["name"])
            except ApiError as e:
                if e.status != 409:
                    raise
        for pv in self.kube.get("/api/v1/persistentvolumes")["items"]:
            ann = pv["metadata"].get("annotations") or {}
            if ann.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            if pv.get("status", {}).get("phase") == "Released" and \
                    pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
                shutil.rmtree(self.state / "pvs" / pv["metadata"]["name"], ignore_errors=True)
                with contextlib.suppress(ApiError):
                    self.kube.request("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")

    # -- kubelet API ----------------------------------------------------------------------------------
    def serve(self) -> None:
        LogHandler.agent = self
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), LogHandler)
        srv.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls[0], self.tls[1])
        ctx.load_verify_locations(self.tls[2])
        ctx.verify_mode = ssl.CERT_REQUIRED
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        self.server = srv
        srv.serve_forever(poll_interval=0.5)

    # -- main -----------------------------------------------------------------------------------------
    def run(self) -> None:
        self.register()
        self.ensure_storage_class()
        threads = [threading.Thread(target=f, name=f.__name__, daemon=True)
                   for f in (self.heartbeat_loop, self.pod_loop, self.pv_loop, self.schedule_loop, self.serve)]
        for t in threads:
            t.start()
        self.stopping.wait()
        log.info("stopping: killing running pods")
        with self.wlock:
            workers = list(self.workers.values())
        ts = []
        for w in workers:
            for p in list(w.procs.values()):
                t = threading.Thread(target=w.kill, args=(p, 2.0), daemon=True)
                t.start()
                ts.append(t)
        for t in ts:
            t.join(10)
        with contextlib.suppress(Exception):
            self.server.shutdown()


def _tolerates(t: dict, taint: dict) -> bool:
    if t.get("effect") and t["effect"] != taint["effect"]:
        return False
    if t.get("operator") == "Exists":
        return not t.get("key") or t["key"] == taint["key"]
    return t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", "")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node-name", default="terrasnap-node")
    ap.add_argument("--state", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--client-ca", required=True)
    ap.add_argument("--apiserver-port", type=int, required=True)
    ap.add_argument("--kubernetes-version", default="v0.0.0")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if os.geteuid() != 0:
        log.warning("not root: mount namespaces and runAsUser will not work")
    agent = Agent(a)

    def stop(*_):
        agent.stopping.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    socket.setdefaulttimeout(60)
    agent.run()


if __name__ == "__main__":
    main()
