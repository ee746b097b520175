"""One container as a real podman container, for a `localhost/` image present in the project's podman store.

The rule (`runs`): a container whose `image` is a `localhost/...` reference that `podman image inspect` finds in
the store `images/podman.sh` configures runs here; every other image keeps the process mode (containers.py).
Results are cached for a few seconds per image, so a pod start costs at most one podman call for the check.

The pod spec maps to `podman create` flags the way a kubelet + CRI runtime applies it: the image's ENTRYPOINT
and CMD unless `command`/`args` replace them, the image's ENV and USER, runAsUser/runAsGroup/supplemental
groups/fsGroup, runAsNonRoot checked against the image's USER, readOnlyRootFilesystem, allowPrivilegeEscalation,
capabilities, privileged, seccomp (Unconfined unless RuntimeDefault is asked for, the kubelet's default),
workingDir (created like runc does), volumes and the termination-message file as binds, the host network.
Env values travel in podman's own environment (`-e NAME`), never in an argv. `podman start --attach` is the
process the pod worker watches: its exit status is the container's (signal N -> 128+N, as from any runtime),
its output goes to the container's log file. Once it exited the container's state is read (exit code,
StartError, OOMKilled) and the container removed.

Every container carries the label `terrasnap.node-state=<agent state dir>`; `sweep` removes this node's
containers (the agent calls it when it starts and when it stops, so none outlives the agent).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from .containers import (
    REPO,
    PodContext,
    Process,
    container_env,
    log_file,
    run_as,
    termination_file,
    volume_mounts,
)
from .kube import Obj, now
from .refs import ConfigError, expand

log = logging.getLogger("node-agent")
CACHE_SECONDS = 5.0
STATE_LABEL = "terrasnap.node-state"



@dataclass(eq=False)
class Container(Process):
    """A started podman container: `popen` is `podman start --attach <name>`. Once that exited, the container's
    state is read (a container that never started is a StartError, exit code 128, as from containerd) and the
    container removed; `poll`/`returncode` then answer the container's exit code."""

    name: str  # podman's container name
    cid: str  # podman's container id
    image_digest: str  # what containerStatuses[].imageID reports
    stop_signal: str
    log: Path  # the container's log file
    outcome: tuple[int, str | None, str | None] | None = field(default=None, repr=False)  # code, reason, message
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def container_id(self) -> str:
        return f"podman://{self.cid}"

    @property
    def image_id(self) -> str:
        return self.image_digest

    def poll(self) -> int | None:
        rc = self.popen.poll()
        return None if rc is None else self._finish(rc)[0]

    @property
    def returncode(self) -> int | None:
        rc = self.popen.returncode
        return None if rc is None else self._finish(rc)[0]

    @property
    def exit_reason(self) -> str | None:
        return self.outcome[1] if self.outcome else None

    @property
    def exit_message(self) -> str | None:
        return self.outcome[2] if self.outcome else None

    def _finish(self, rc: int) -> tuple[int, str | None, str | None]:
        with self.lock:
            if self.outcome is None:
                self.outcome = self._read_state(rc)
                podman("rm", "-f", "-t", "0", "--ignore", self.cid, timeout=60)
            return self.outcome

    def _read_state(self, rc: int) -> tuple[int, str | None, str | None]:
        try:
            p = podman("container", "inspect", "--format", "{{json .State}}", self.cid, timeout=30)
            state = json.loads(p.stdout) if p.returncode == 0 else None
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired):
            state = None
        if not isinstance(state, dict):  # removed meanwhile (kill's rm -f): what podman start said
            return rc, None, None
        if state.get("Status") == "created":  # the runtime could not start it
            err = ""
            try:
                lines = self.log.read_text(errors="replace").splitlines()
                err = next((ln.removeprefix("Error: ") for ln in reversed(lines) if ln.startswith("Error: ")), "")
            except OSError:
                pass
            return 128, "StartError", err or state.get("Error") or f"podman start exited {rc}"
        code = int(state.get("ExitCode", rc))
        return code, "OOMKilled" if state.get("OOMKilled") else None, None


@dataclass(frozen=True)
class Image:
    """What the pod spec mapping needs from `podman image inspect`."""

    ref: str
    id: str  # sha256:<config digest>
    digest: str  # <repository>@sha256:<manifest digest>, or the id
    user: str  # the image's USER ("" = root)
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    stop_signal: str


# -- podman itself --------------------------------------------------------------------------------------------
@cache
def podman_env() -> dict[str, str] | None:
    """The agent's environment plus what `images/podman.sh --env` says (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF);
    None if podman is not installed here (then no image is ever local: everything runs as a process)."""
    if shutil.which("podman") is None:
        return None
    p = subprocess.run(["bash", str(REPO / "images" / "podman.sh"), "--env"], capture_output=True, text=True)
    if p.returncode != 0:
        log.warning("images/podman.sh --env failed (container mode off): %s", p.stderr.strip()[-500:])
        return None
    env = dict(os.environ)
    for line in p.stdout.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            env[k.strip()] = v.strip()
    return env


# Variables podman itself reads (where it puts temporary files, its configuration, its home). A pod's value for
# one (the worker sets TMPDIR to its emptyDir) must reach the container, not steer podman on the host: those
# go on the command line as NAME=VALUE; every other value reaches the container through podman's environment.
PODMAN_OWN = ("TMPDIR", "HOME", "PATH", "USER", "LANG", "TZ", "SHELL")
PODMAN_OWN_PREFIXES = ("XDG_", "CONTAINERS_", "CONTAINER_", "REGISTRY_", "BUILDAH_", "STORAGE_", "DOCKER_", "LC_")


def podman_reads(name: str) -> bool:
    return name in PODMAN_OWN or name.startswith(PODMAN_OWN_PREFIXES)


def podman(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
           check: bool = False) -> subprocess.CompletedProcess[str]:
    base = podman_env()
    if base is None:
        raise RuntimeError("podman is not available")
    extra = {k: v for k, v in (env or {}).items() if not podman_reads(k)}
    p = subprocess.run(["podman", *args], capture_output=True, text=True, env={**base, **extra},
                       stdin=subprocess.DEVNULL, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"podman {args[0]} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p


_images: dict[str, tuple[float, Image | None]] = {}
_images_lock = threading.Lock()


def image(ref: str) -> Image | None:
    """The local image `ref` (cached for CACHE_SECONDS, found or not), None if the store has no such image."""
    t = time.monotonic()
    with _images_lock:
        hit = _images.get(ref)
        if hit is not None and t - hit[0] < CACHE_SECONDS:
            return hit[1]
    found = _inspect(ref)
    with _images_lock:
        _images[ref] = (time.monotonic(), found)
    return found


def _inspect(ref: str) -> Image | None:
    if podman_env() is None:
        return None
    try:
        p = podman("image", "inspect", ref, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("podman image inspect %s: %s", ref, e)
        return None
    if p.returncode != 0:
        return None
    info: dict[str, Any] = json.loads(p.stdout)[0]
    cfg = info.get("Config") or {}
    repo = ref.rsplit("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    digests = info.get("RepoDigests") or []
    digest = next((d for d in digests if d.split("@", 1)[0] == repo), None)
    image_id = "sha256:" + str(info["Id"]).removeprefix("sha256:")
    return Image(ref=ref, id=image_id, digest=digest or image_id, user=str(cfg.get("User") or info.get("User") or ""),
                 entrypoint=tuple(cfg.get("Entrypoint") or ()), cmd=tuple(cfg.get("Cmd") or ()),
                 stop_signal=str(cfg.get("StopSignal") or "SIGTERM"))


def runs(ref: str) -> bool:
    """Whether a container of image `ref` runs as a podman container on this node."""
    return ref.startswith("localhost/") and image(ref) is not None


# -- the pod spec as podman flags -----------------------------------------------------------------------------
def container_name(pod: Obj, c: Obj, restart: int) -> str:
    """Unique per pod uid, container and restart (the dockershim's `k8s_<container>_<pod>_<ns>_<uid>_<n>`)."""
    md = pod["metadata"]
    return f"k8s_{c['name']}_{md['name']}_{md['namespace']}_{md['uid']}_{restart}"


def _image_uid(img: Image) -> int | str:
    """The image's USER as the kubelet sees it: a uid, or a name it cannot verify."""
    user = img.user.split(":", 1)[0]
    if user == "":
        return 0
    return int(user) if user.isdigit() else user


def user_flags(pod: Obj, c: Obj, img: Image) -> list[str]:
    """--user/--group-add from the securityContext; runAsNonRoot refused like the kubelet (verifyRunAsNonRoot)."""
    md = pod["metadata"]
    psc = pod["spec"].get("securityContext") or {}
    uid, gid, non_root = run_as(pod, c)
    where = f"(pod: {md['name']}_{md['namespace']}({md['uid']}), container: {c['name']})"
    if non_root:
        if uid is not None:
            if int(uid) == 0:
                raise ConfigError("CreateContainerConfigError", f"container's runAsUser breaks non-root policy {where}")
        else:
            iu = _image_uid(img)
            if isinstance(iu, str):
                raise ConfigError("CreateContainerConfigError", f"container has runAsNonRoot and image has "
                                  f"non-numeric user ({iu}), cannot verify user is non-root {where}")
            if iu == 0:
                raise ConfigError("CreateContainerConfigError",
                                  f"container has runAsNonRoot and image will run as root {where}")
    flags: list[str] = []
    if uid is not None or gid is not None:
        user = str(uid) if uid is not None else (img.user.split(":", 1)[0] or "0")
        flags += ["--user", f"{user}:{gid}" if gid is not None else user]
    groups = list(psc.get("supplementalGroups") or [])
    if psc.get("fsGroup") is not None:
        groups.append(psc["fsGroup"])
    for g in sorted(set(groups)):
        flags += ["--group-add", str(g)]
    return flags


def security_flags(c: Obj, pod: Obj) -> list[str]:
    psc = pod["spec"].get("securityContext") or {}
    csc = c.get("securityContext") or {}
    flags: list[str] = []
    if csc.get("privileged"):
        flags.append("--privileged")
    if csc.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # no writable /tmp, /run: the kubelet adds none
    if csc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    caps = csc.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        flags += ["--cap-drop", str(cap)]
    for cap in caps.get("add") or []:
        flags += ["--cap-add", str(cap)]
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp == "Unconfined" and not csc.get("privileged"):
        flags += ["--security-opt", "seccomp=unconfined"]  # the kubelet's default without seccompProfile
    elif seccomp == "Localhost":
        raise ConfigError("CreateContainerConfigError", "seccompProfile type Localhost is not supported by this "
                          "test node")
    return flags


def environment(ctx: PodContext, c: Obj) -> dict[str, str]:
    """What the kubelet adds (the apiserver's service variables) and the pod's env; not the process mode's
    PATH/HOME/VIRTUAL_ENV/LANG: the image's ENV applies."""
    ap = str(ctx.apiserver_port)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": ap,
           "KUBERNETES_SERVICE_PORT_HTTPS": ap, "KUBERNETES_PORT": f"tcp://127.0.0.1:{ap}",
           "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{ap}", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
           "KUBERNETES_PORT_443_TCP_PORT": ap, "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # as in the process mode (the project's test env)
    env.update(container_env(ctx, c))
    return env


def create_args(ctx: PodContext, c: Obj, restart: int, img: Image, env: dict[str, str],
                term: Path) -> list[str]:
    """`podman create` arguments for the container (no secret in them: env values are passed by name)."""
    pod = ctx.pod
    md, spec = pod["metadata"], pod["spec"]
    name = container_name(pod, c, restart)
    hostname = (spec.get("hostname") or md["name"])[:63]
    # (podman 4.3's `create` has no --passwd=false: a runAsUser missing from the image's /etc/passwd gets an
    # entry there, HOME = the working directory unless the image's ENV sets HOME; a CRI runtime adds none)
    args = ["create", "--pull", "never", "--log-driver", "none", "--network", "host",
            "--hostname", hostname, "--name", name,
            "--label", f"{STATE_LABEL}={ctx.state}",
            "--label", f"io.kubernetes.pod.name={md['name']}",
            "--label", f"io.kubernetes.pod.namespace={md['namespace']}",
            "--label", f"io.kubernetes.pod.uid={md['uid']}",
            "--label", f"io.kubernetes.container.name={c['name']}"]
    args += user_flags(pod, c, img)
    args += security_flags(c, pod)
    if c.get("workingDir"):
        args += ["-w", c["workingDir"]]
    for m in volume_mounts(ctx, c, env):
        args += ["-v", f"{m['source']}:{m['target']}" + (":ro" if m["readOnly"] else "")]
    tm_path = c.get("terminationMessagePath") or "/dev/termination-log"
    args += ["-v", f"{term}:{tm_path}"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}" if podman_reads(k) else k]
    command = [expand(x, env) for x in c.get("command") or []]
    cargs = [expand(x, env) for x in c.get("args") or []]
    if command:
        # podman (like Docker) drops the image's CMD once the entrypoint is replaced: the kubelet's rule too
        args += ["--entrypoint", json.dumps(command)]
    elif not cargs and not img.entrypoint and not img.cmd:
        raise ConfigError("CreateContainerError", f"container {c['name']}: no command specified (image "
                          f"{img.ref} has no ENTRYPOINT or CMD)")
    return [*args, img.id, *cargs]


def _mkdir_in_root(root: Path, path: str) -> None:
    """mkdir -p `path` inside the container root `root` (symlinks resolved within it), as runc creates a
    missing cwd (podman refuses an explicit workdir the image lacks)."""
    cur = root
    parts = list(PurePosixPath(path).parts[1:])
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / part
        if nxt.is_symlink():
            hops += 1
            if hops > 40:
                return
            target = PurePosixPath(os.readlink(nxt))
            if target.is_absolute():
                cur = root
                parts = list(target.parts[1:]) + parts
            else:
                parts = list(target.parts) + parts
            continue
        if not nxt.exists():
            nxt.mkdir(mode=0o755)
        cur = nxt


# -- start, kill, sweep -------------------------------------------------------------------------------------
def start(ctx: PodContext, c: Obj, restart: int, init: bool) -> Container:
    """Create the container (ConfigError if the spec cannot be applied) and start it attached."""
    md = ctx.pod["metadata"]
    ref = c.get("image") or ""
    img = image(ref)
    if img is None:
        raise ConfigError("ErrImageNeverPull", f'Container image "{ref}" is not present with pull policy of Never')
    env = environment(ctx, c)
    term = termination_file(ctx, c)
    args = create_args(ctx, c, restart, img, env, term)
    name = container_name(ctx.pod, c, restart)
    p = podman(*args, env=env)
    if p.returncode != 0:
        with _images_lock:  # the image may have been replaced or removed: ask again next time
            _images.pop(ref, None)
        raise ConfigError("CreateContainerError", p.stderr.strip()[-2000:] or f"podman create exited {p.returncode}")
    cid = p.stdout.strip().splitlines()[-1]
    try:
        if c.get("workingDir"):
            m = podman("mount", cid, check=True)
            try:
                _mkdir_in_root(Path(m.stdout.strip()), c["workingDir"])
            finally:
                podman("umount", cid)
    except (OSError, RuntimeError) as e:
        podman("rm", "-f", "-t", "0", "--ignore", cid)
        raise ConfigError("CreateContainerError", f"workingDir {c['workingDir']}: {e}") from e
    lf = log_file(ctx.dir, c["name"], restart)
    lf.parent.mkdir(parents=True, exist_ok=True)
    base = podman_env()
    assert base is not None
    with open(lf, "ab") as out:
        sp = subprocess.Popen(["podman", "start", "--attach", cid], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, cwd="/", env=base)
    log.info("started %s/%s[%s] as podman container %s (%s, %s) pid %d: podman %s", md["namespace"], md["name"],
             c["name"], name, cid[:12], img.digest, sp.pid, " ".join(args))
    return Container(sp, c, init, restart, now(), term, name=name, cid=cid, image_digest=img.digest,
                     stop_signal=img.stop_signal, log=lf)


def kill(p: Container, grace: float) -> None:
    """The image's stop signal (SIGTERM by default), SIGKILL after `grace`, then the container is removed."""
    if p.poll() is None:
        deadline = time.monotonic() + grace
        sent = False
        while time.monotonic() < deadline and p.poll() is None:
            # fails while `podman start` has not started it yet: try again
            sent = sent or podman("kill", "--signal", p.stop_signal, p.cid, timeout=30).returncode == 0
            time.sleep(0.05)
        if p.poll() is None and podman("kill", "--signal", "KILL", p.cid, timeout=30).returncode != 0:
            podman("rm", "-f", "-t", "0", "--ignore", p.cid, timeout=60)
        try:
            p.popen.wait(10)
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait(5)
    p.poll()  # read its state, remove it
    podman("rm", "-f", "-t", "0", "--ignore", p.cid, timeout=60)  # in case it is still there


def sweep(state: Path) -> int:
    """Remove every container of the node agent whose state directory is `state`; how many there were."""
    try:
        if podman_env() is None:
            return 0
        p = podman("ps", "-a", "-q", "--filter", f"label={STATE_LABEL}={state}")
        ids = p.stdout.split()
        if ids:
            podman("rm", "-f", "-t", "0", "--ignore", *ids, timeout=120)
            log.info("removed %d podman container(s) of this node", len(ids))
        return len(ids)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        log.warning("removing this node's podman containers: %s", e)
        return 0
