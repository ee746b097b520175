"""The node agent runs a container whose image is a `localhost/` image in the project's podman store as a real
podman container (tests/controlplane/node/podman.py). Each test asserts on something that only holds if the
pod spec was mapped onto the container faithfully (the process mode, or a wrong flag, would fail it).

The image: the worker image `make images` builds (CI builds it before the tests), else the development base
image `localhost/terrasnap/try:base`. Both have `sh`; the worker's entrypoint is `terrasnap`, so the tests
give `command: [sh, -c, ...]` wherever they need a shell. `TERRASNAP_TEST_NODE_IMAGE=<ref>` picks another
local image (e.g. the base image while the worker image exists, to run the root-image branches).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.controlplane.testing import Cluster, wait_for
from tests.support import images

DEV_IMAGE = "localhost/terrasnap/try:base"


def _pick_image() -> str | None:
    if shutil.which("podman") is None:
        return None
    wanted = os.environ.get("TERRASNAP_TEST_NODE_IMAGE")
    for ref in [wanted] if wanted else (images.ref("worker"), DEV_IMAGE):
        if images.available(ref):
            return ref
    return None


IMAGE = _pick_image()
pytestmark = [
    pytest.mark.cluster, pytest.mark.timeout(180),
    pytest.mark.skipif(IMAGE is None, reason=f"neither {images.ref('worker')} (make images) nor {DEV_IMAGE} is in "
                       "the project's podman store (bash images/podman.sh images)"),
]
SH = "sh"


def inspect(image: str) -> dict[str, Any]:
    p = subprocess.run([*images.PODMAN, "image", "inspect", image], capture_output=True, text=True, check=True)
    return dict(json.loads(p.stdout)[0])


def podman_names(fragment: str) -> list[str]:
    """Names of podman containers (running or not) whose name contains `fragment`."""
    p = subprocess.run([*images.PODMAN, "ps", "-a", "--format", "{{.Names}}", "--filter", f"name={fragment}"],
                       capture_output=True, text=True, check=True)
    return p.stdout.split()


def image_uid(info: dict[str, Any]) -> int | str:
    user = str((info.get("Config") or {}).get("User") or info.get("User") or "").split(":", 1)[0]
    return 0 if user == "" else int(user) if user.isdigit() else user


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": [SH, "-c", script], **extra}


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": containers, **spec}}


def finished(cluster: Cluster, ns: str, name: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        p: dict[str, Any] = cluster.get("pod", name, namespace=ns)
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None
    result: dict[str, Any] = wait_for(done, timeout, what=f"pod {name} finished")
    return result


def statuses(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in p["status"]["containerStatuses"]}


def message(st: dict[str, Any]) -> str:
    return str(st["state"]["terminated"].get("message", ""))


def agent_log(cluster: Cluster) -> str:
    return (cluster.state_dir / "logs" / "node-agent.log").read_text(errors="replace")


# ---------------------------------------------------------------------------------------------------------


def test_user_image_id_and_process_mode_for_other_images(cluster: Cluster, namespace: str) -> None:
    """runAsUser/runAsGroup/supplementalGroups become --user/--group-add; without runAsUser the image's USER
    applies; the status reports the image's digest; a non-local image in the same pod stays a process."""
    assert IMAGE is not None
    info = inspect(IMAGE)
    ids = 'printf "%s:%s:%s" "$(id -u)" "$(id -g)" "$(id -G)" > /dev/termination-log'
    cluster.apply(pod("users", [
        shell("given", ids, securityContext={"runAsUser": 4321, "runAsGroup": 4322}),
        shell("image", ids),
        {"name": "proc", "image": "localhost/terrasnap/absent:0", "command": [SH, "-c", "echo process"]},
    ], securityContext={"supplementalGroups": [4400]}), namespace=namespace)
    p = finished(cluster, namespace, "users")
    st = statuses(p)
    assert p["status"]["phase"] == "Succeeded", st
    uid, gid, groups = message(st["given"]).split(":")
    assert (uid, gid) == ("4321", "4322")
    assert "4400" in groups.split()
    iu = image_uid(info)
    assert isinstance(iu, int), f"{IMAGE} has a non-numeric USER {iu!r}"
    assert message(st["image"]).split(":")[0] == str(iu)
    for name in ("given", "image"):
        assert st[name]["containerID"].startswith("podman://"), st[name]
        assert st[name]["state"]["terminated"]["containerID"] == st[name]["containerID"]
        iid = st[name]["imageID"]
        assert not iid.startswith("terrasnap-process://")
        assert iid in (info.get("RepoDigests") or []) or iid == "sha256:" + info["Id"], (iid, info.get("RepoDigests"))
        assert st[name]["image"] == IMAGE
    # not a localhost/ image in the store: the process mode, as before
    assert st["proc"]["containerID"].startswith("process://")
    assert st["proc"]["imageID"] == "terrasnap-process://localhost/terrasnap/absent:0"


def test_run_as_non_root_checks_the_image_user(cluster: Cluster, namespace: str) -> None:
    """runAsNonRoot without runAsUser: the kubelet refuses an image whose USER is root, runs any other."""
    assert IMAGE is not None
    iu = image_uid(inspect(IMAGE))
    cluster.apply(pod("nonroot", [shell("main", "id -u > /dev/termination-log")],
                      securityContext={"runAsNonRoot": True}), namespace=namespace)
    if iu == 0 or isinstance(iu, str):
        def reason() -> Any:
            sts = cluster.get("pod", "nonroot", namespace=namespace)["status"].get("containerStatuses") or [{}]
            return sts[0].get("state", {}).get("waiting")
        w = wait_for(lambda: (r := reason()) and r.get("reason") == "CreateContainerConfigError" and r, 30,
                     what="CreateContainerConfigError")
        assert "runAsNonRoot" in w["message"], w
        assert ("image will run as root" if iu == 0 else "non-numeric user") in w["message"]
    else:
        p = finished(cluster, namespace, "nonroot")
        assert message(statuses(p)["main"]).strip() == str(iu)


def test_read_only_root_capabilities_and_volumes(cluster: Cluster, namespace: str) -> None:
    """readOnlyRootFilesystem (no writable /tmp either), capabilities drop ALL, allowPrivilegeEscalation false,
    an emptyDir with subPath, workingDir created; the same as root without them as the control."""
    probe = ('(touch /probe && echo root-writable) 2>/dev/null; (touch /tmp/probe && echo tmp-writable) 2>/dev/null;'
             ' echo hi > /scratch/sub/f && echo vol-writable; cat /sub/f; pwd;'
             ' grep -E "^(CapEff|NoNewPrivs)" /proc/self/status')
    mounts = [{"name": "scratch", "mountPath": "/scratch"},
              {"name": "scratch", "mountPath": "/sub", "subPath": "sub"}]
    cluster.apply(pod("locked", [
        shell("locked", f"mkdir -p /scratch/sub; {{ {probe}; }} > /dev/termination-log", volumeMounts=mounts,
              workingDir="/made/for/it",
              securityContext={"runAsUser": 0, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                               "capabilities": {"drop": ["ALL"]}}),
        shell("open", f"mkdir -p /scratch/sub; {{ {probe}; }} > /dev/termination-log", volumeMounts=mounts,
              securityContext={"runAsUser": 0}),
    ], volumes=[{"name": "scratch", "emptyDir": {}}]), namespace=namespace)
    p = finished(cluster, namespace, "locked")
    st = statuses(p)
    locked, open_ = message(st["locked"]), message(st["open"])
    assert "root-writable" not in locked and "tmp-writable" not in locked, locked
    assert "vol-writable" in locked and "\nhi\n" in locked, locked  # the subPath is the emptyDir's sub/
    assert "/made/for/it" in locked.splitlines()
    assert "CapEff:\t0000000000000000" in locked
    assert "NoNewPrivs:\t1" in locked
    # the control: root in a container without those settings
    assert "root-writable" in open_ and "tmp-writable" in open_, open_
    assert "CapEff:\t0000000000000000" not in open_
    assert "NoNewPrivs:\t0" in open_


def test_termination_message_exit_code_and_logs(cluster: Cluster, namespace: str) -> None:
    cluster.apply(pod("ending", [
        shell("main", 'echo to-the-log; echo "last words" > /dev/termination-log; exit 3'),
        shell("custom", "echo custom-path > /var/msg; exit 0", terminationMessagePath="/var/msg"),
        shell("fallback", "echo from-the-log; exit 5", terminationMessagePolicy="FallbackToLogsOnError"),
    ]), namespace=namespace)
    p = finished(cluster, namespace, "ending")
    st = statuses(p)
    assert p["status"]["phase"] == "Failed"
    t = st["main"]["state"]["terminated"]
    assert (t["exitCode"], t["reason"], t["message"]) == (3, "Error", "last words\n")
    assert st["custom"]["state"]["terminated"]["exitCode"] == 0
    assert message(st["custom"]) == "custom-path\n"
    assert (st["fallback"]["state"]["terminated"]["exitCode"], message(st["fallback"])) == (5, "from-the-log")
    logs = cluster.kubectl("logs", "ending", "-c", "main", namespace=namespace).stdout
    assert logs == "to-the-log\n"


def test_variables_podman_reads_reach_the_container_not_podman(cluster: Cluster, namespace: str) -> None:
    """The worker sets HOME and TMPDIR to its emptyDir: podman on the host must not put its own temporary
    files there (it did: `open /workspace/NNN: no such file or directory`), and the container sees them."""
    cluster.apply(pod("own-vars", [
        shell("main", 'echo "$HOME $TMPDIR $XDG_CACHE_HOME" > /dev/termination-log',
              env=[{"name": "HOME", "value": "/nowhere-on-the-host/home"},
                   {"name": "TMPDIR", "value": "/nowhere-on-the-host/tmp"},
                   {"name": "XDG_CACHE_HOME", "value": "/nowhere-on-the-host/cache"}]),
    ]), namespace=namespace)
    p = finished(cluster, namespace, "own-vars")
    st = statuses(p)["main"]
    assert p["status"]["phase"] == "Succeeded", st
    assert message(st) == "/nowhere-on-the-host/home /nowhere-on-the-host/tmp /nowhere-on-the-host/cache\n"


def test_secret_env_is_inside_but_not_in_any_argv(cluster: Cluster, namespace: str) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    cluster.kubectl("create", "secret", "generic", "creds", f"--from-literal=token={token}", namespace=namespace)
    cluster.apply(pod("secretive", [shell(
        "main", 'printf %s "$TOKEN" > /dev/termination-log; sleep 600 & wait',
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
             {"name": "PLAIN", "value": "visible"}])], terminationGracePeriodSeconds=2), namespace=namespace)

    def running() -> dict[str, Any] | None:
        p: dict[str, Any] = cluster.get("pod", "secretive", namespace=namespace)
        return p if p["status"].get("phase") == "Running" else None
    p = wait_for(running, 30, what="pod Running")
    uid = p["metadata"]["uid"]

    def container_sleep() -> str | None:
        """The environment of the container's `sleep 600` (found by the token in it)."""
        for proc in psutil.process_iter(["cmdline"]):
            if (proc.info["cmdline"] or [])[:2] == ["sleep", "600"]:
                try:
                    env = Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if token in env:
                    return env
        return None
    env = wait_for(container_sleep, 10, what="the container's sleep with TOKEN in its environment")
    assert f"TOKEN={token}" in env.split("\0") and "PLAIN=visible" in env.split("\0")
    argvs = [" ".join(proc.info["cmdline"] or []) for proc in psutil.process_iter(["cmdline"])]
    assert any(uid in a for a in argvs), "no podman/conmon process of the pod"
    assert not [a for a in argvs if token in a]
    log = agent_log(cluster)
    create = [line for line in log.splitlines() if "podman create" in line and uid in line]
    assert create and "-e TOKEN" in create[-1] and "-e PLAIN" in create[-1], create
    assert token not in log and "visible" not in create[-1]
    cluster.kubectl("delete", "pod", "secretive", "--timeout=30s", namespace=namespace)


def test_deletion_stops_the_container(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """Graceful deletion: the stop signal first (a trap sees it), SIGKILL after the grace period for one that
    ignores it (sh as PID 1 does); afterwards podman has no container of either pod."""
    tmp_path.chmod(0o777)
    out = {"name": "out", "hostPath": {"path": str(tmp_path), "type": "Directory"}}
    cluster.apply([
        pod("polite", [shell("main", "trap 'echo TERM > /out/polite; exit 0' TERM; sleep 600 & wait",
                             volumeMounts=[{"name": "out", "mountPath": "/out"}])],
            volumes=[out], terminationGracePeriodSeconds=30),
        pod("stubborn", [shell("main", "trap '' TERM; while :; do sleep 1; done")],
            terminationGracePeriodSeconds=2),
    ], namespace=namespace)
    uids = {}
    for name in ("polite", "stubborn"):
        def running(name: str = name) -> dict[str, Any] | None:
            p: dict[str, Any] = cluster.get("pod", name, namespace=namespace)
            return p if p["status"].get("phase") == "Running" else None
        p = wait_for(running, 30, what=f"{name} Running")
        uids[name] = p["metadata"]["uid"]
        assert p["status"]["containerStatuses"][0]["containerID"].startswith("podman://")
        assert podman_names(uids[name]), f"no podman container for {name}"
    cluster.kubectl("delete", "pod", "polite", "stubborn", "--timeout=60s", namespace=namespace)
    assert (tmp_path / "polite").read_text() == "TERM\n"
    for name, uid in uids.items():
        assert podman_names(uid) == [], f"{name}'s container is still there"


def test_no_command_runs_the_image_entrypoint(cluster: Cluster, namespace: str) -> None:
    """No command: the image's ENTRYPOINT/CMD (an image without either cannot start, as with a CRI runtime)."""
    assert IMAGE is not None
    cfg = inspect(IMAGE).get("Config") or {}
    cluster.apply(pod("entry", [{"name": "main", "image": IMAGE, "args": ["--help"]}]), namespace=namespace)
    if not cfg.get("Entrypoint"):
        # args alone replace the CMD; nothing to run them with but the args themselves
        p = finished(cluster, namespace, "entry")
        assert statuses(p)["main"]["state"]["terminated"]["exitCode"] != 0  # `--help` is no program
        cluster.apply(pod("nothing", [{"name": "main", "image": IMAGE}]), namespace=namespace)
        if not cfg.get("Cmd"):
            def waiting() -> Any:
                sts = cluster.get("pod", "nothing", namespace=namespace)["status"].get("containerStatuses") or [{}]
                return sts[0].get("state", {}).get("waiting", {}).get("reason") == "CreateContainerError"
            wait_for(waiting, 30, what="CreateContainerError")
        return
    p = finished(cluster, namespace, "entry")
    st = statuses(p)["main"]
    assert st["containerID"].startswith("podman://")
    assert st["state"]["terminated"]["exitCode"] == 0, cluster.kubectl("logs", "entry", namespace=namespace).stdout
    assert cluster.kubectl("logs", "entry", namespace=namespace).stdout.strip()


def test_restarts_and_deadline(cluster: Cluster, namespace: str) -> None:
    """The pod lifecycle is unchanged: OnFailure restarts a failing container (a new container per restart,
    its log kept for `kubectl logs -p`), activeDeadlineSeconds kills a running one; nothing is left in podman."""
    cluster.apply(pod("crashy", [
        shell("crash", 'echo "run at $(date +%s%N)"; exit 1'),
        {"name": "sleeper", "image": IMAGE, "command": ["sleep", "600"]},
    ], restartPolicy="OnFailure", activeDeadlineSeconds=5), namespace=namespace)
    p = finished(cluster, namespace, "crashy", timeout=60)
    st = statuses(p)
    assert (p["status"]["phase"], p["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert st["crash"]["restartCount"] >= 1, st["crash"]
    assert st["crash"]["lastState"]["terminated"]["exitCode"] == 1
    assert st["crash"]["containerID"].startswith("podman://")
    assert st["sleeper"]["state"]["terminated"]["exitCode"] == 137  # sleep as PID 1: only SIGKILL ends it
    prev = cluster.kubectl("logs", "crashy", "-c", "crash", "-p", namespace=namespace).stdout
    assert prev.startswith("run at ")
    assert podman_names(p["metadata"]["uid"]) == []


def test_a_command_that_cannot_start_is_a_start_error(cluster: Cluster, namespace: str) -> None:
    cluster.apply(pod("nostart", [{"name": "main", "image": IMAGE, "command": ["/no/such/program"]}]),
                  namespace=namespace)
    p = finished(cluster, namespace, "nostart")
    t = statuses(p)["main"]["state"]["terminated"]
    assert (t["reason"], t["exitCode"]) == ("StartError", 128), t
    assert "/no/such/program" in t["message"]
    assert podman_names(p["metadata"]["uid"]) == []
