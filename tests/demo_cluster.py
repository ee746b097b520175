"""`make demo-cluster`: the operator on the test control plane, end to end.

Starts (or reuses) the test cluster and a fake-gcs-server on 127.0.0.1:4443, uploads the sample data to
gs://terrasnap-demo-raw/sample/, installs the CRDs, runs the operator in the background, applies examples/,
waits for the DatasetSnapshot to be Ready and prints `kubectl get dsnap -o wide` and the manifest URI.

Idempotent: a second run reuses everything that is up. The operator and the emulator run under a small
supervisor that stops them when the cluster goes away (`make cluster-down`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from tests.support import fakegcs  # noqa: E402
from tests.support.sampledata import make_demo  # noqa: E402

CLUSTER_PY = REPO / "tests" / "controlplane" / "cluster.py"
GCS_PORT = 4443
HEALTH_PORT = 18081
METRICS_PORT = 18080
SYSTEM_NAMESPACE = "terrasnap-system"


def say(message: str) -> None:
    print(f"[demo-cluster] {message}", file=sys.stderr, flush=True)


def cluster_up() -> tuple[str, Path]:
    proc = subprocess.run([sys.executable, str(CLUSTER_PY), "up"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit("could not start the test cluster")
    kubeconfig = proc.stdout.strip().splitlines()[-1]
    status = json.loads(subprocess.run([sys.executable, str(CLUSTER_PY), "status"], capture_output=True,
                                       text=True).stdout)  # fmt: skip
    return kubeconfig, Path(status["bin_dir"])


def healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HEALTH_PORT}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def ours_running(state: Path, kubeconfig: str) -> bool:
    """Whether this demo's supervisor runs an operator for this cluster."""
    try:
        record = json.loads((state / "supervisor.json").read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return bool(record.get("kubeconfig") == kubeconfig and healthy())


def supervise(kubeconfig: str, state: Path) -> int:
    """Run the operator until the cluster's kubeconfig disappears (cluster-down), then stop it and the
    emulator this demo started."""
    (state / "supervisor.json").write_text(json.dumps({"pid": os.getpid(), "kubeconfig": kubeconfig}))
    env = {**os.environ, "KUBECONFIG": kubeconfig, "TERRASNAP_NAMESPACE": SYSTEM_NAMESPACE,
           "TERRASNAP_WORKER_IMAGE": "terrasnap/worker:demo"}  # fmt: skip
    with open(state / "operator.log", "ab") as log:
        child = subprocess.Popen(
            [str(Path(sys.executable).parent / "terrasnap"), "operator", "--namespace", "ml-data",
             "--selector", "!terrasnap.io/test-run",
             "--metrics-port", str(METRICS_PORT),
             "--liveness", f"http://127.0.0.1:{HEALTH_PORT}/healthz"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop and child.poll() is None and Path(kubeconfig).exists():
        time.sleep(2)
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
    (state / "supervisor.json").unlink(missing_ok=True)
    gcs_pid = state / "fakegcs.pid"
    if not Path(kubeconfig).exists() and gcs_pid.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(gcs_pid.read_text().strip()), signal.SIGTERM)
        gcs_pid.unlink(missing_ok=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--state", type=Path, default=REPO / ".state" / "demo-cluster")
    ap.add_argument("--supervise", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args()
    state = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    if args.supervise:
        return supervise(args.supervise, state)

    kubeconfig, bin_dir = cluster_up()
    env = {**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}

    def kubectl(*argv: str, check: bool = True) -> str:
        proc = subprocess.run([str(bin_dir / "kubectl"), *argv], env=env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"kubectl {' '.join(argv)} failed")
        return proc.stdout

    say(f"cluster up: KUBECONFIG={kubeconfig}")
    endpoint = fakegcs.ensure_background(state, GCS_PORT)
    gcs = fakegcs.FakeGCS(endpoint=endpoint, root=state / "fakegcs-data")
    for bucket in ("terrasnap-demo", "terrasnap-demo-raw"):
        with contextlib.suppress(Exception):  # already there (idempotent re-run)
            gcs.create_bucket(bucket)
    from terrasnap.engine.store import Store

    data = make_demo(state / "sample-data")
    raw = Store.from_url("gs://terrasnap-demo-raw/sample", endpoint)
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        raw.write_bytes(path.relative_to(data).as_posix(), path.read_bytes())
    say(f"fake-gcs-server at {endpoint}; sample data in gs://terrasnap-demo-raw/sample/")

    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/datasetsnapshots.terrasnap.io",
            "crd/snapshotstores.terrasnap.io")  # fmt: skip
    for namespace in (SYSTEM_NAMESPACE, "ml-data"):
        if kubectl("get", "namespace", namespace, check=False) == "":
            kubectl("create", "namespace", namespace)

    if not ours_running(state, kubeconfig):
        if healthy():
            raise SystemExit(f"port {HEALTH_PORT} answers but is not this demo's operator; stop that process")
        subprocess.Popen(
            [sys.executable, __file__, "--state", str(state), "--supervise", kubeconfig],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 60
        while not healthy():
            if time.time() > deadline:
                raise SystemExit(f"the operator did not come up; see {state / 'operator.log'}")
            time.sleep(0.5)
        say(
            f"operator running (log {state / 'operator.log'}, metrics http://127.0.0.1:{METRICS_PORT}/metrics)"
        )
    else:
        say("operator already running")

    kubectl("apply", "-f", str(REPO / "examples"))
    say("waiting for dsnap/buildings to be Ready (the Job runs the engine on the process node)...")
    kubectl("wait", "--for=condition=Ready", "dsnap/buildings", "-n", "ml-data", f"--timeout={args.timeout}s")
    print(kubectl("get", "dsnap", "-A", "-o", "wide"), end="")
    uri = kubectl("get", "dsnap", "buildings", "-n", "ml-data", "-o", "jsonpath={.status.manifest.uri}")
    print(f"manifest: {uri}")
    print(
        f'next: eval "$(.venv/bin/python {CLUSTER_PY.relative_to(REPO)} env)"; kubectl describe dsnap -n ml-data buildings'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
