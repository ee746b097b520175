"""One container as a local process: its user and environment, its pod_exec spec, start, kill, exit message.

`start` runs a container whose image is in the project's podman store as a real container instead (podman.py).

The process is `pod_exec.py` (standard library only), which makes the container's root and mounts and then
execs the command; it runs in its own session so the whole group can be signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from . import refs
from .kube import Kube, Obj, now
from .refs import ConfigError, expand
from .volumes import Volume

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
VENV_BIN = Path(sys.executable).parent
MAX_TERMINATION_MESSAGE = 4096
log = logging.getLogger("node-agent")


class Security(TypedDict):
    """The securityContext as pod_exec applies it (these keys go into its spec as they are)."""

    uid: int
    gid: int
    groups: list[int]
    noNewPrivs: bool
    readOnlyRootFilesystem: bool


@dataclass(eq=False)
class Process:
    """A started container: the pod_exec process and what the status reports about it."""

    popen: subprocess.Popen[bytes]
    container: Obj
    init: bool
    restarts: int
    started_at: str
    term: Path  # the termination-message file on the host

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    @property
    def container_id(self) -> str:
        return f"process://{self.pid}"

    @property
    def image_id(self) -> str:
        return f"terrasnap-process://{self.container.get('image', '')}"

    @property
    def exit_reason(self) -> str | None:
        """A reason the runtime gives for the exit (StartError, OOMKilled), else None (Completed/Error)."""
        return None

    @property
    def exit_message(self) -> str | None:
        """The runtime's message for `exit_reason` (instead of the termination message)."""
        return None


@dataclass
class PodContext:
    """What every container of one pod is started with."""

    kube: Kube
    pod: Obj
    dir: Path  # the pod's directory on the host
    state: Path  # the node agent's state directory
    node_name: str
    allocatable: dict[str, str]
    apiserver_port: int
    volumes: dict[str, Volume]


def run_as(pod: Obj, c: Obj) -> tuple[int | None, int | None, bool | None]:
    """runAsUser, runAsGroup and runAsNonRoot: the container's securityContext over the pod's."""
    psc = pod["spec"].get("securityContext") or {}
    csc = c.get("securityContext") or {}
    return (csc.get("runAsUser", psc.get("runAsUser")), csc.get("runAsGroup", psc.get("runAsGroup")),
            csc.get("runAsNonRoot", psc.get("runAsNonRoot")))


def security(pod: Obj, c: Obj) -> Security:
    md = pod["metadata"]
    psc = pod["spec"].get("securityContext") or {}
    csc = c.get("securityContext") or {}
    uid, gid, non_root = run_as(pod, c)
    if uid is None:
        # no image to read a USER from: run as root unless runAsNonRoot asks otherwise
        uid = 65532 if non_root else 0
    if non_root and uid == 0:
        raise ConfigError("CreateContainerConfigError",
                          f"container's runAsUser breaks non-root policy (pod: {md['name']}_{md['namespace']}({md['uid']}), "
                          f"container: {c['name']})")
    if gid is None:
        gid = uid if uid != 0 else 0
    groups = list(psc.get("supplementalGroups") or [])
    if psc.get("fsGroup") is not None:
        groups.append(psc["fsGroup"])
    no_new_privs = csc.get("allowPrivilegeEscalation") is False
    return {"uid": int(uid), "gid": int(gid), "groups": sorted(set(groups)),
            "noNewPrivs": no_new_privs, "readOnlyRootFilesystem": bool(csc.get("readOnlyRootFilesystem"))}


def base_env(sec: Security, pod_name: str, apiserver_port: int) -> dict[str, str]:
    """What every container's environment starts from (the venv first on PATH, the apiserver's address)."""
    path = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    try:
        home = pwd.getpwuid(sec["uid"]).pw_dir
    except KeyError:
        home = "/"
    ap = apiserver_port
    return {
        "PATH": path,
        "HOME": home,
        "HOSTNAME": pod_name,
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


def container_env(ctx: PodContext, c: Obj) -> dict[str, str]:
    """envFrom, then env in order (each value may use $(VAR) of the ones before it)."""
    ns = ctx.pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for ef in c.get("envFrom") or []:
        prefix = ef.get("prefix", "")
        kind: refs.Kind
        kind, ref = ("configmaps", ef["configMapRef"]) if "configMapRef" in ef else ("secrets", ef["secretRef"])
        data = refs.data(kind, refs.lookup(ctx.kube, ns, kind, ref["name"], bool(ref.get("optional"))))
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
            data = refs.data(kind, refs.lookup(ctx.kube, ns, kind, ref["name"], bool(ref.get("optional"))))
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError("CreateContainerConfigError",
                                  f"couldn't find key {ref['key']} in {kind[:-1].replace('configmap', 'ConfigMap').replace('secret', 'Secret')} {ns}/{ref['name']}")
            env[n] = data[ref["key"]].decode(errors="replace")
        elif "fieldRef" in vf:
            env[n] = refs.field_ref(ctx.pod, vf["fieldRef"]["fieldPath"], ctx.node_name)
        elif "resourceFieldRef" in vf:
            env[n] = refs.resource_ref(c, vf["resourceFieldRef"], ctx.allocatable)
        else:
            raise ConfigError("CreateContainerConfigError", f"unsupported valueFrom {list(vf)}")
    return env


def log_file(pod_dir: Path, cname: str, restart: int) -> Path:
    return pod_dir / "logs" / cname / f"{restart}.log"


class Mount(TypedDict):
    name: str
    source: str  # on the host
    target: str  # in the container
    readOnly: bool


def termination_file(ctx: PodContext, c: Obj) -> Path:
    """The (fresh, empty, world-writable) host file bound at the container's terminationMessagePath."""
    term = ctx.dir / "termination" / str(c["name"])
    term.parent.mkdir(parents=True, exist_ok=True)
    term.write_bytes(b"")
    term.chmod(0o666)
    return term


def volume_mounts(ctx: PodContext, c: Obj, env: dict[str, str]) -> list[Mount]:
    """The container's volumeMounts as host sources (subPath/subPathExpr resolved, created if missing)."""
    mounts: list[Mount] = []
    for vm in c.get("volumeMounts") or []:
        vol = ctx.volumes.get(vm["name"])
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
    return mounts


def start(ctx: PodContext, c: Obj, restart: int, init: bool) -> Process:
    """Start one container: as a podman container if its image is a `localhost/` image in the project's
    podman store (node/podman.py), else as a local process. Raises ConfigError if it cannot be configured."""
    from . import podman  # podman imports this module

    if podman.runs(c.get("image") or ""):
        return podman.start(ctx, c, restart, init)
    return start_process(ctx, c, restart, init)


def start_process(ctx: PodContext, c: Obj, restart: int, init: bool) -> Process:
    """Write the container's pod_exec spec and start it; raises ConfigError if it cannot be configured."""
    md = ctx.pod["metadata"]
    cname = c["name"]
    sec = security(ctx.pod, c)
    env = base_env(sec, md["name"], ctx.apiserver_port)
    env.update(container_env(ctx, c))
    cmd = [expand(x, env) for x in c.get("command") or []]
    args = [expand(x, env) for x in c.get("args") or []]
    argv = cmd + args
    if not argv:
        raise ConfigError("CreateContainerError", f"container {cname}: no command (image {c.get('image')!r} "
                          "is not in this node's podman store, so its entrypoint is unknown)")
    cdir = ctx.dir / "containers" / f"{cname}-{restart}"
    if cdir.exists():
        shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    term = termination_file(ctx, c)
    tm_path = c.get("terminationMessagePath") or "/dev/termination-log"
    mounts = volume_mounts(ctx, c, env)
    mounts.append({"name": "termination-log", "source": str(term), "target": tm_path, "readOnly": False})
    spec = {
        "root": str(cdir / "rootfs"), "upper": str(cdir / "upper"), "work": str(cdir / "work"),
        "state": str(ctx.state),
        "mounts": mounts, "argv": argv, "env": env, "cwd": c.get("workingDir") or "/",
        "terminationMessagePath": tm_path,
        "expose": [sys.base_prefix, str(VENV_BIN.parent), str(REPO), str(ctx.state)],
        **sec,
    }
    (cdir / "spec.json").write_text(json.dumps(spec))
    lf = log_file(ctx.dir, cname, restart)
    lf.parent.mkdir(parents=True, exist_ok=True)
    with open(lf, "ab") as out:
        p = subprocess.Popen(
            [sys.executable, "-I", "-S", str(HERE / "pod_exec.py"), str(cdir / "spec.json")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, cwd="/",
        )
    log.info("started %s/%s[%s] pid %d: %s", md["namespace"], md["name"], cname, p.pid, argv)
    return Process(p, c, init, restart, now(), term)


def termination_message(pod_dir: Path, c: Obj, exit_code: int, restart: int, term: Path) -> str:
    """The termination-message file, or with FallbackToLogsOnError the log's tail after a failure."""
    msg = ""
    with contextlib.suppress(OSError):
        msg = term.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
    if not msg and exit_code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        with contextlib.suppress(OSError):
            data = log_file(pod_dir, c["name"], restart).read_bytes()
            lines = data.decode(errors="replace").splitlines()[-80:]
            msg = "\n".join(lines)[-2048:]
    return msg


def kill(p: Process, grace: float) -> None:
    """SIGTERM to the process group and every descendant (some leave the group), SIGKILL after `grace`
    (a podman container: its stop signal, SIGKILL after `grace`, then removed)."""
    from . import podman

    if isinstance(p, podman.Container):
        return podman.kill(p, grace)
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
        p.popen.wait(5)


def reap(p: Process) -> int:
    """After a container's main process exited: SIGKILL every process left in its mount namespace (a
    daemon a stage left behind, reparented and in a session of its own), as a real runtime does when a
    container's init dies. Returns how many were killed. (A podman container has its own PID namespace: the
    kernel already killed the rest when its init exited.)"""
    from . import podman

    if isinstance(p, podman.Container):
        return 0
    marker = Path(str(p.popen.args[-1])).parent / "mntns"  # type: ignore[index]
    try:
        ns = marker.read_text().strip()
    except OSError:
        return 0
    if not ns:
        return 0
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "mnt") != ns:
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError):
            continue
    if killed:
        log.info("killed %d process(es) left behind by container %s", killed, p.container.get("name"))
    return killed


def _descendants(pid: int) -> set[int]:
    try:
        import psutil
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except Exception:
        return set()
