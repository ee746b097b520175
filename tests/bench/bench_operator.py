"""`make bench-operator`: how fast the operator turns DatasetSnapshots into Jobs, and what it costs.

On a private test control plane (its own etcd/apiserver/controller-manager/node, torn down afterwards) with
the node cordoned, so Jobs are created but their pods never run:

1. latency: 200 DatasetSnapshots are created at once (concurrent POSTs); for each, the time from the
   apiserver's answer to the create until a watch on Jobs sees its Job. Reported as p50/p99/max
   (goal < 1 s and < 3 s).
2. footprint: 800 more (1,000 in all); once every one has its Job and a Pending status, the operator's
   RSS (goal < 150 MB) and the wall time to reconcile them.

Results go to stdout and to .state/bench-operator/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
CLUSTER_PY = REPO / "tests" / "controlplane" / "cluster.py"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def snapshot(name: str, store: str) -> dict[str, Any]:
    return {
        "apiVersion": "terrasnap.io/v1alpha1",
        "kind": "DatasetSnapshot",
        "metadata": {"name": name},
        "spec": {"store": store, "source": {"bucket": {"url": f"gs://bench-raw/{name}/"}}},
    }


class JobWatch(threading.Thread):
    """Records when each terrasnap Job is first seen (monotonic clock)."""

    def __init__(self, kube: Any, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube = kube
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = False

    def run(self) -> None:
        from terrasnap import kube as k

        listing = self.kube.request("GET", k.jobs_path(self.namespace))
        rv = listing["metadata"]["resourceVersion"]
        while not self.stop:
            url = (
                self.kube.configuration.host
                + k.jobs_path(self.namespace)
                + f"?watch=1&resourceVersion={rv}&timeoutSeconds=300&allowWatchBookmarks=false"
            )
            headers = {"Accept": "application/json"}
            auth = self.kube.configuration.auth_settings().get("BearerToken")
            if auth:
                headers["Authorization"] = auth["value"]
            response = self.kube._rest.request("GET", url, headers=headers, _request_timeout=(10, 330))
            self.ready.set()
            buffer = b""
            for chunk in response.response.stream(4096):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    labels = (obj.get("metadata") or {}).get("labels") or {}
                    name = labels.get("terrasnap.io/snapshot")
                    if event.get("type") == "ADDED" and name and name not in self.seen:
                        self.seen[name] = time.monotonic()
                if self.stop:
                    return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--state", type=Path, default=REPO / ".state" / "bench-operator")
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--total", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="leave the bench cluster running")
    args = ap.parse_args()
    state = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TERRASNAP_CLUSTER_STATE": str(state / "cluster")}
    up = subprocess.run([sys.executable, str(CLUSTER_PY), "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        sys.stderr.write(up.stderr)
        return 1
    kubeconfig = up.stdout.strip().splitlines()[-1]
    info = json.loads(subprocess.run([sys.executable, str(CLUSTER_PY), "status"], env=env,
                                     capture_output=True, text=True).stdout)  # fmt: skip
    kubectl_bin = str(Path(info["bin_dir"]) / "kubectl")
    env["KUBECONFIG"] = kubeconfig
    operator: subprocess.Popen[bytes] | None = None
    try:

        def kubectl(*argv: str) -> str:
            return subprocess.run(
                [kubectl_bin, *argv], env=env, check=True, capture_output=True, text=True
            ).stdout

        kubectl("apply", "-f", str(REPO / "crds"))
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/datasetsnapshots.terrasnap.io",
                "crd/snapshotstores.terrasnap.io")  # fmt: skip
        for ns in ("terrasnap-system", "bench"):
            subprocess.run([kubectl_bin, "create", "namespace", ns], env=env, capture_output=True)
        kubectl("cordon", info["node_name"])
        store = {"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore", "metadata": {"name": "bench"},
                 "spec": {"url": f"file://{state / 'store'}"}}  # fmt: skip
        subprocess.run([kubectl_bin, "apply", "-f", "-"], input=json.dumps(store), env=env, check=True,
                       capture_output=True, text=True)  # fmt: skip

        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        from terrasnap import kube as k

        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = 32
        kube = k.Kube(configuration)

        health = 18181
        op_env = {**env, "TERRASNAP_NAMESPACE": "terrasnap-system", "TERRASNAP_WORKER_IMAGE": "bench:0"}
        log = open(state / "operator.log", "wb")  # noqa: SIM115
        operator = subprocess.Popen(
            [sys.executable, "-m", "terrasnap.controller", "--quiet", "--metrics-port", "0",
             "--liveness", f"http://127.0.0.1:{health}/healthz"],
            env=op_env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or operator.poll() is not None:
                    raise SystemExit("operator did not start; see " + str(state / "operator.log")) from None
                time.sleep(0.3)
        import psutil

        proc = psutil.Process(operator.pid)
        rss_idle = proc.memory_info().rss

        watch = JobWatch(kube, "bench")
        watch.start()
        watch.ready.wait(30)
        time.sleep(1)

        created: dict[str, float] = {}

        def create(name: str) -> None:
            kube.request("POST", k.snapshot_path("bench"), snapshot(name, "bench"))
            created[name] = time.monotonic()

        def cpu(pid: int) -> float:
            times = psutil.Process(pid).cpu_times()
            return float(times.user + times.system)

        apiserver_pid = int(info["pids"]["kube-apiserver"]["pid"])
        cpu_before = (cpu(operator.pid), cpu(apiserver_pid))
        names = [f"s{i:04d}" for i in range(args.total)]
        burst = names[: args.burst]
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(create, burst))
        create_wall = time.monotonic() - t0
        deadline_t = time.monotonic() + 300
        while len([n for n in burst if n in watch.seen]) < len(burst) and time.monotonic() < deadline_t:
            time.sleep(0.05)
        latencies = [watch.seen[n] - created[n] for n in burst if n in watch.seen]
        burst_wall = max(watch.seen[n] for n in burst if n in watch.seen) - t0
        cpu_burst = (cpu(operator.pid) - cpu_before[0], cpu(apiserver_pid) - cpu_before[1])

        rest = names[args.burst :]
        t1 = time.monotonic()
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(create, rest))
        while len(watch.seen) < args.total and time.monotonic() < t1 + 900:
            time.sleep(0.2)
        jobs_wall = time.monotonic() - t0

        def pending() -> int:
            items = kube.request("GET", k.snapshot_path("bench")).get("items") or []
            return sum(1 for o in items if (o.get("status") or {}).get("job"))

        while pending() < args.total and time.monotonic() < t1 + 900:
            time.sleep(1)
        settled_wall = time.monotonic() - t0
        time.sleep(10)
        if os.environ.get("TERRASNAP_TRACEMALLOC"):
            operator.send_signal(signal.SIGUSR1)  # the operator prints its top allocation sites to its log
            time.sleep(20)
        rss_samples = []
        for _ in range(5):
            rss_samples.append(proc.memory_info().rss)
            time.sleep(1)
        watch.stop = True

        results = {
            "burst": args.burst,
            "total": args.total,
            "jobs_seen": len(watch.seen),
            "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "latency_p99_s": round(percentile(latencies, 0.99), 3) if latencies else None,
            "latency_max_s": round(max(latencies), 3) if latencies else None,
            "burst_create_wall_s": round(create_wall, 2),
            "burst_all_jobs_wall_s": round(burst_wall, 2),
            "all_jobs_wall_s": round(jobs_wall, 2),
            "all_pending_status_wall_s": round(settled_wall, 2),
            "burst_cpu_s_operator": round(cpu_burst[0], 2),
            "burst_cpu_s_apiserver": round(cpu_burst[1], 2),
            "rss_idle_mb": round(rss_idle / 2**20, 1),
            "rss_mb": round(max(rss_samples) / 2**20, 1),
            "cpu_count": os.cpu_count(),
        }
        (state / "results.json").write_text(json.dumps(results, indent=2))
        print(f"apply → Job, {args.burst} DatasetSnapshots at once: p50 {results['latency_p50_s']} s, "
              f"p99 {results['latency_p99_s']} s, max {results['latency_max_s']} s "
              f"(goal < 1 s / < 3 s); all {args.burst} Jobs within {results['burst_all_jobs_wall_s']} s "
              f"(CPU: operator {results['burst_cpu_s_operator']} s, kube-apiserver {results['burst_cpu_s_apiserver']} s)")  # fmt: skip
        print(f"{args.total} DatasetSnapshots: all Jobs after {results['all_jobs_wall_s']} s, all statuses Pending "
              f"after {results['all_pending_status_wall_s']} s; operator RSS {results['rss_mb']} MB "
              f"(idle {results['rss_idle_mb']} MB; goal < 150 MB)")  # fmt: skip
        print(json.dumps(results))
        return 0
    finally:
        if operator is not None and operator.poll() is None:
            operator.terminate()
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
        if not args.keep:
            subprocess.run([sys.executable, str(CLUSTER_PY), "down", "--force"], env=env, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
