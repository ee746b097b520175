"""The operator image, run for real with podman against the test control plane: it starts as the chart runs
it (user 65532, read-only root filesystem, every capability dropped), connects with a mounted kubeconfig, and
answers its liveness and metrics endpoints; it really watches: a SnapshotStore it is given gets its status.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.testing import Cluster, wait_for
from tests.support import images
from tests.support.images import podman

pytestmark = [pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
# Only objects with this label are the containerized operator's (other operators share the test cluster).
RUN = ("terrasnap.io/test-run", f"img-{uuid.uuid4().hex[:8]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def operator_container(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    image = images.ref("operator")
    assert images.available(image), f"{image} is not in the local store: run `make images`"
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/datasetsnapshots.terrasnap.io", "crd/snapshotstores.terrasnap.io")  # fmt: skip
    system = f"tsimg-system-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", system)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(Path(cluster.kubeconfig).read_bytes())
    os.chown(kubeconfig, 65532, 65532)
    kubeconfig.chmod(0o400)
    health, metrics = _free_port(), _free_port()
    name = f"terrasnap-operator-{uuid.uuid4().hex[:8]}"
    podman("run", "--detach", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "--user", "65532:65532", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-v", f"{kubeconfig}:/etc/terrasnap/kubeconfig:ro", "-e", "KUBECONFIG=/etc/terrasnap/kubeconfig",
           "-e", f"TERRASNAP_NAMESPACE={system}", "-e", f"TERRASNAP_WORKER_IMAGE={images.ref('worker')}",
           image, "operator", "--namespace", "tsimg-*", "--selector", f"{RUN[0]}={RUN[1]}", f"--metrics-port={metrics}", "--metrics-address=127.0.0.1",
           f"--liveness=http://127.0.0.1:{health}/healthz")  # fmt: skip
    try:
        yield name, health, metrics
    finally:
        logs = podman("logs", name, check=False)
        print(f"\n--- operator container log (tail) ---\n{(logs.stdout + logs.stderr)[-4000:]}")
        podman("rm", "--force", "--time", "5", name, check=False)
        cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.timeout(240)
def test_operator_image_answers_liveness_and_reconciles(cluster: Cluster,
                                                        operator_container: tuple[str, int, int]) -> None:
    name, health, metrics = operator_container

    def live() -> bool:
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"the operator container is {state}:\n{podman('logs', name, check=False).stderr[-3000:]}"
        return _get(f"http://127.0.0.1:{health}/healthz")[0] == 200

    wait_for(live, 90, interval=0.5, what="the operator image's liveness endpoint")
    status, text = _get(f"http://127.0.0.1:{metrics}/metrics")
    assert status == 200 and "terrasnap_" in text
    # It runs as the image's numeric user, not root: the container's process, seen from the host.
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    assert uids.split()[1:] == ["65532"] * 4, uids

    # It reconciles: a SnapshotStore (cluster-scoped, always handled) gets a status from it.
    store = f"tsimg-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore", "metadata": {"name": store, "labels": {RUN[0]: RUN[1]}},
                   "spec": {"url": f"gs://{store}/dvc", "endpoint": "http://127.0.0.1:1"}})
    try:
        def reported() -> bool:
            obj = cluster.get("snapshotstore", store)
            return bool((obj.get("status") or {}).get("conditions"))

        wait_for(reported, 60, interval=0.5, what="a status on the SnapshotStore from the containerized operator")
    finally:
        cluster.kubectl("delete", "snapshotstore", store, "--wait=false", check=False)
