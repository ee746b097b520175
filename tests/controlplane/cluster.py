#!/usr/bin/env python3
"""Start/stop the terrasnap test Kubernetes: etcd + kube-apiserver + kube-controller-manager + node agent.

    .venv/bin/python tests/controlplane/cluster.py up   [--owner make|pytest]  # idempotent; last line: kubeconfig
    .venv/bin/python tests/controlplane/cluster.py down                       # stop everything, remove state
    .venv/bin/python tests/controlplane/cluster.py status                     # JSON state, exit 1 if not running
    .venv/bin/python tests/controlplane/cluster.py env                        # `export KUBECONFIG=... PATH=...`

The components are the real upstream binaries (built by build.sh, cached under ~/.cache/terrasnap), each a
separate process in its own session, so they outlive the command that started them; the node agent is
the package tests/controlplane/node (`python -m tests.controlplane.node`). State lives in
$TERRASNAP_CLUSTER_STATE (default: <repo>/.state/cluster). Ports are picked free on loopback unless
TERRASNAP_{ETCD,APISERVER,KUBELET}_PORT are set, and are recorded in cluster.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if __package__ in (None, ""):  # run as a script (make cluster): make `tests.controlplane` importable
    sys.path.insert(0, str(REPO))
from tests.controlplane import pki  # noqa: E402

T = TypeVar("T")

NODE_NAME = os.environ.get("TERRASNAP_NODE_NAME", "terrasnap-node")
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "node-agent")
# Controllers the tests (and the operator) rely on; the names are kube-controller-manager's own.
CONTROLLERS = [
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "ephemeral-volume-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "disruption-controller",
]


def state_dir() -> Path:
    return Path(os.environ.get("TERRASNAP_CLUSTER_STATE", REPO / ".state" / "cluster")).resolve()


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(sd: Path) -> Iterator[None]:
    sd.mkdir(parents=True, exist_ok=True)
    with open(sd.parent / f".{sd.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------------
# processes


def _proc_alive(rec: dict) -> bool:
    try:
        import psutil

        p = psutil.Process(rec["pid"])
        return bool(abs(p.create_time() - rec["create_time"]) < 1.0 and p.status() != psutil.STATUS_ZOMBIE)
    except Exception:
        return False


def _spawn(name: str, argv: list[str], sd: Path, env: dict | None = None) -> dict:
    import psutil

    with open(sd / "logs" / f"{name}.log", "ab") as logf:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env or os.environ.copy(),
            cwd=sd,
        )
    return {"pid": p.pid, "create_time": psutil.Process(p.pid).create_time(), "argv": argv}


def _stop(rec: dict, name: str, grace: float = 10.0) -> None:
    if not _proc_alive(rec):
        return
    pid = rec["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and _proc_alive(rec):
        time.sleep(0.1)
    if _proc_alive(rec):
        log(f"{name} did not stop in {grace}s; killing")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    # reap if it is our child (it is not, normally: started by an earlier command)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _pythonpath() -> str:
    """The repository first on the module path, so `python -m tests.controlplane.node` finds its package."""
    rest = os.environ.get("PYTHONPATH")
    return f"{REPO}{os.pathsep}{rest}" if rest else str(REPO)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port(env: str) -> int:
    v = os.environ.get(env)
    return int(v) if v else _free_port()


# ---------------------------------------------------------------------------------------------------------
# state


def load(sd: Path | None = None) -> dict | None:
    sd = sd or state_dir()
    try:
        st: dict = json.loads((sd / "cluster.json").read_text())
        return st
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save(st: dict, sd: Path) -> None:
    tmp = sd / "cluster.json.tmp"
    tmp.write_text(json.dumps(st, indent=2))
    tmp.replace(sd / "cluster.json")


def running(st: dict | None) -> bool:
    if not st or set(st.get("pids", {})) != set(COMPONENTS):
        return False
    if not all(_proc_alive(r) for r in st["pids"].values()):
        return False
    try:
        return _get(st, "/readyz", timeout=3) == "ok"
    except Exception:
        return False


def _ssl_ctx(st: dict) -> ssl.SSLContext:
    pk = Path(st["state"]) / "pki"
    ctx = ssl.create_default_context(cafile=str(pk / "ca.crt"))
    ctx.load_cert_chain(str(pk / "admin.crt"), str(pk / "admin.key"))
    return ctx


def _get(st: dict, path: str, timeout: float = 5) -> str:
    url = f"https://127.0.0.1:{st['ports']['apiserver']}{path}"
    with urllib.request.urlopen(url, context=_ssl_ctx(st), timeout=timeout) as r:
        body: bytes = r.read()
        return body.decode()


def _wait(what: str, fn: Callable[[], T], timeout: float, procs: dict | None = None,
          sd: Path | None = None) -> T:
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        if procs:
            for n, rec in procs.items():
                if not _proc_alive(rec):
                    tail = ""
                    if sd:
                        with contextlib.suppress(Exception):
                            tail = (sd / "logs" / f"{n}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{n} exited while waiting for {what}:\n{tail}")
        try:
            v = fn()
            if v:
                return v
        except Exception as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


# ---------------------------------------------------------------------------------------------------------
# up / down


def _kubeconfig(path: Path, server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> Path:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "terrasnap-test", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "terrasnap-test", "context": {"cluster": "terrasnap-test", "user": user}}],
        "current-context": "terrasnap-test",
        "preferences": {},
    }
    pki.write(path, json.dumps(cfg, indent=2).encode())
    return path


def build() -> Path:
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip().splitlines()
    return Path(out[-1])


def up(owner: str = "make", user: int | None = None) -> dict:
    sd = state_dir()
    bin_dir = build()
    with locked(sd):
        st = load(sd)
        if running(st):
            assert st is not None
            if owner == "make" and st.get("owner") != "make":
                st["owner"] = "make"  # an explicit `make cluster` keeps it up past the pytest session
                save(st, sd)
        else:
            if st:
                log("found a stale cluster state; cleaning it up")
                _down_locked(sd, st)
            t0 = time.time()
            st = _start(sd, bin_dir, owner)
            log(f"cluster up in {time.time() - t0:.1f}s")
        if user:
            import psutil

            (sd / "users").mkdir(parents=True, exist_ok=True)
            (sd / "users" / str(user)).write_text(f"{user} {psutil.Process(user).create_time()}")
        return st


def _start(sd: Path, bin_dir: Path, owner: str) -> dict:
    for sub in ("logs", "pki", "etcd", "node", "users"):
        (sd / sub).mkdir(parents=True, exist_ok=True)
    pk = sd / "pki"
    ca = pki.CA.create()
    pki.write(pk / "ca.crt", ca.cert_pem(), 0o644)
    pki.write(pk / "ca.key", ca.key_pem())
    crt, key = ca.issue(
        "kube-apiserver",
        server=True,
        dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"),
        ips=("127.0.0.1", "10.0.0.1"),
    )
    pki.write(pk / "apiserver.crt", crt, 0o644)
    pki.write(pk / "apiserver.key", key)
    admin_crt, admin_key = ca.issue("terrasnap-admin", ("system:masters",), client=True)
    pki.write(pk / "admin.crt", admin_crt, 0o644)
    pki.write(pk / "admin.key", admin_key)
    kcm_crt, kcm_key = ca.issue("system:kube-controller-manager", client=True)
    kubelet_client_crt, kubelet_client_key = ca.issue(
        "kube-apiserver-kubelet-client", ("system:masters",), client=True
    )
    pki.write(pk / "apiserver-kubelet-client.crt", kubelet_client_crt, 0o644)
    pki.write(pk / "apiserver-kubelet-client.key", kubelet_client_key)
    kl_crt, kl_key = ca.issue(f"system:node:{NODE_NAME}", ("system:nodes",), server=True, client=True,
                              dns=("localhost", NODE_NAME), ips=("127.0.0.1",))
    pki.write(pk / "kubelet.crt", kl_crt, 0o644)
    pki.write(pk / "kubelet.key", kl_key)
    sa_key, sa_pub = pki.service_account_keys()
    pki.write(pk / "sa.key", sa_key)
    pki.write(pk / "sa.pub", sa_pub, 0o644)

    ports = {
        "etcd": _port("TERRASNAP_ETCD_PORT"),
        "etcd_peer": _free_port(),
        "apiserver": _port("TERRASNAP_APISERVER_PORT"),
        "kubelet": _port("TERRASNAP_KUBELET_PORT"),
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfig = _kubeconfig(sd / "kubeconfig", server, ca.cert_pem(), admin_crt, admin_key, "terrasnap-admin")
    kcm_kubeconfig = _kubeconfig(sd / "kcm.kubeconfig", server, ca.cert_pem(), kcm_crt, kcm_key,
                                 "system:kube-controller-manager")
    st: dict = {
        "state": str(sd),
        "version": bin_dir.parent.name.removeprefix("k8s-"),
        "bin_dir": str(bin_dir),
        "kubeconfig": str(kubeconfig),
        "server": server,
        "ports": ports,
        "node_name": NODE_NAME,
        "owner": owner,
        "pids": {},
        "started_at": time.time(),
    }
    procs: dict = st["pids"]
    try:
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        procs["etcd"] = _spawn("etcd", [
            str(bin_dir / "etcd"),
            "--name=terrasnap", f"--data-dir={sd / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=terrasnap={peer_url}",
            "--unsafe-no-fsync=true",            # throwaway test data; fsync is the slow part
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ], sd)
        save(st, sd)

        def etcd_ok() -> bool:
            with urllib.request.urlopen(f"{etcd_url}/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        _wait("etcd", etcd_ok, 30, procs, sd)

        procs["kube-apiserver"] = _spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pk / 'apiserver.crt'}", f"--tls-private-key-file={pk / 'apiserver.key'}",
            f"--client-ca-file={pk / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pk / 'sa.pub'}",
            f"--service-account-signing-key-file={pk / 'sa.key'}",
            "--authorization-mode=RBAC",
            # Upstream defaults (incl. PodSecurity, ServiceAccount, NamespaceLifecycle, ResourceQuota) stay on.
            "--allow-privileged=true",
            f"--kubelet-client-certificate={pk / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pk / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pk / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--endpoint-reconciler-type=none",   # loopback advertise address: no 'kubernetes' endpoints
            "--profiling=false",
            "--cert-dir", str(pk),
            "-v=1",
        ], sd)
        save(st, sd)
        _wait("kube-apiserver /readyz", lambda: _get(st, "/readyz", 3) == "ok", 120, procs, sd)

        procs["kube-controller-manager"] = _spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kcm_kubeconfig}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pk / 'sa.key'}",
            f"--root-ca-file={pk / 'ca.crt'}",
            f"--cluster-signing-cert-file={pk / 'ca.crt'}", f"--cluster-signing-key-file={pk / 'ca.key'}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--secure-port=0",
            "--concurrent-job-syncs=5", "--concurrent-cron-job-syncs=5",
            "-v=1",
        ], sd)
        save(st, sd)

        venv_py = Path(sys.executable)
        procs["node-agent"] = _spawn("node-agent", [
            str(venv_py), "-m", "tests.controlplane.node",
            f"--kubeconfig={kubeconfig}", f"--node-name={NODE_NAME}", f"--state={sd / 'node'}",
            f"--port={ports['kubelet']}", f"--tls-cert={pk / 'kubelet.crt'}", f"--tls-key={pk / 'kubelet.key'}",
            f"--client-ca={pk / 'ca.crt'}", f"--apiserver-port={ports['apiserver']}",
            f"--kubernetes-version={st['version']}",
        ], sd, env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": _pythonpath()})
        save(st, sd)

        def node_ready() -> bool:
            node = json.loads(_get(st, f"/api/v1/nodes/{NODE_NAME}"))
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
        _wait("node Ready", node_ready, 60, procs, sd)

        def controllers_ok() -> bool:  # serviceaccount + root-ca-publisher controllers at work
            _get(st, "/api/v1/namespaces/default/serviceaccounts/default")
            _get(st, "/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
            return True
        _wait("kube-controller-manager (default ServiceAccount)", controllers_ok, 60, procs, sd)
    except BaseException:
        log("start failed; stopping what was started")
        _down_locked(sd, st, remove=False)
        raise
    save(st, sd)
    return st


def _down_locked(sd: Path, st: dict | None, remove: bool = True) -> None:
    if st:
        for name in reversed(COMPONENTS):
            rec = st.get("pids", {}).get(name)
            if rec:
                _stop(rec, name, grace=20 if name == "node-agent" else 10)
    if remove:
        _rm_state(sd)


def _rm_state(sd: Path) -> None:
    # Never follow into mounts: the node agent unmounts pod volumes itself (they live only in pods' private
    # mount namespaces), so a plain rmtree is safe.
    shutil.rmtree(sd, ignore_errors=True)


def _live_users(sd: Path) -> list[Path]:
    import psutil

    live = []
    for f in (sd / "users").glob("*"):
        try:
            pid, ctime = f.read_text().split()
            if abs(psutil.Process(int(pid)).create_time() - float(ctime)) < 1.0:
                live.append(f)
                continue
        except Exception:
            pass
        f.unlink(missing_ok=True)
    return live


def release(pid: int) -> bool:
    """Drop PID's use; stop the cluster if a test session started it and nobody else uses it now."""
    sd = state_dir()
    with locked(sd):
        (sd / "users" / str(pid)).unlink(missing_ok=True)
        st = load(sd)
        if st and st.get("owner") == "pytest" and not _live_users(sd):
            _down_locked(sd, st)
            return True
    return False


def down(force: bool = False) -> bool:
    """Stop the cluster and remove its state; refuses while pytest sessions use it, unless force."""
    sd = state_dir()
    with locked(sd):
        users = _live_users(sd) if (sd / "users").is_dir() else []
        if users and not force:
            pids = ", ".join(u.name for u in users)
            log(f"not stopping: the cluster is in use by running test sessions (pids {pids}); "
                "stop them first, or force it (make cluster-down FORCE=1)")
            return False
        _down_locked(sd, load(sd))
        return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--owner", default="make", choices=["make", "pytest"])
    u.add_argument("--user", type=int, help="register this pid as a user (pytest sessions)")
    r = sub.add_parser("release")
    r.add_argument("--user", type=int, required=True)
    d = sub.add_parser("down")
    d.add_argument("--force", action="store_true", help="stop even while test sessions use it")
    sub.add_parser("status")
    sub.add_parser("env")
    sub.add_parser("build")
    a = ap.parse_args()
    if a.cmd == "release":
        print("stopped" if release(a.user) else "still in use")
    elif a.cmd == "up":
        st = up("pytest" if a.user else a.owner, a.user)
        sys.stderr.flush()
        print(f"# kubectl: {st['bin_dir']}/kubectl   (or: eval \"$(.venv/bin/python {Path(__file__).relative_to(REPO)} env)\")")
        print(st["kubeconfig"], flush=True)
    elif a.cmd == "down":
        return 0 if down(a.force) else 1
    elif a.cmd == "build":
        print(build())
    elif a.cmd == "status":
        found = load()
        ok = running(found)
        print(json.dumps({"running": ok, **(found or {})}, indent=2))
        return 0 if ok else 1
    elif a.cmd == "env":
        found = load()
        if not running(found):
            print("cluster not running (start it with `make cluster`)", file=sys.stderr)
            return 1
        assert found is not None
        print(f"export KUBECONFIG={found['kubeconfig']}")
        print(f"export PATH={found['bin_dir']}:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main())
