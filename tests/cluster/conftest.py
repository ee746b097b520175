"""Fixtures for the cluster tier: a real kube-apiserver + etcd + kube-controller-manager + process node.

    cluster      (session)  the running test cluster (see `Cluster`); reuses one started by `make cluster`,
                            else starts one and stops it when the last pytest session using it ends
    kubeconfig   (session)  path of the admin kubeconfig (also exported as $KUBECONFIG for subprocesses)
    kubectl      (session)  cluster.kubectl: run the cluster's own kubectl, e.g. kubectl("get", "pods", "-n", ns)
    k8s_client   (session)  a kubernetes.client.ApiClient for the admin kubeconfig
    namespace    (function) a fresh namespace for one test, deleted afterwards (kept if
                            TERRASNAP_KEEP_NAMESPACES=1); on failure its pods/jobs/events are printed

Every test collected under tests/cluster gets the `cluster` marker, so `-m "not cluster"` skips the tier.
The Kubernetes binaries are built (or found in ~/.cache/terrasnap) before the first test runs, outside any
test's timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.controlplane.testing import Cluster, KubectlError, wait_for  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[2]
CONTROLPLANE = REPO / "tests" / "controlplane"
CLUSTER_PY = CONTROLPLANE / "cluster.py"
_HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------


_build_error: str | None = None


@pytest.hookimpl(tryfirst=True)  # before -m deselects: `-m "not cluster"` must see the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the Kubernetes binaries (cold: minutes; cached: instant) before the first test, so no test's
    timeout includes the build; only if a cluster test was selected."""
    global _build_error
    if session.config.getoption("collectonly"):
        return
    if not any(item.get_closest_marker("cluster") for item in session.items):
        return
    p = subprocess.run(["bash", str(CONTROLPLANE / "build.sh")], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        _build_error = p.stderr[-5000:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if _build_error is not None:
        pytest.fail(f"could not build the test control plane:\n{_build_error}", pytrace=False)
    me = os.getpid()
    p = subprocess.run([sys.executable, str(CLUSTER_PY), "up", "--user", str(me)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"could not start the test cluster:\n{p.stderr[-5000:]}", pytrace=False)
    kubeconfig = p.stdout.strip().splitlines()[-1]
    info = json.loads(subprocess.run([sys.executable, str(CLUSTER_PY), "status"], stdout=subprocess.PIPE,
                                     text=True).stdout)
    c = Cluster(kubeconfig=kubeconfig, bin_dir=Path(info["bin_dir"]), server=info["server"],
                node_name=info["node_name"], version=info["version"], state_dir=Path(info["state"]), info=info)
    saved = {k: os.environ.get(k) for k in ("KUBECONFIG", "PATH")}
    os.environ["KUBECONFIG"] = c.kubeconfig
    os.environ["PATH"] = f"{c.bin_dir}:{os.environ.get('PATH', '')}"
    try:
        yield c
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run([sys.executable, str(CLUSTER_PY), "release", "--user", str(me)],
                       stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> str:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Callable[..., subprocess.CompletedProcess]:
    return cluster.kubectl


@pytest.fixture(scope="session")
def k8s_client(cluster: Cluster):
    api = cluster.api_client()
    yield api
    api.close()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    ns = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "terrasnap.io/test=true")
    # pods need the namespace's default ServiceAccount (created by the serviceaccount controller)
    wait_for(lambda: cluster.kubectl("get", "serviceaccount", "default", namespace=ns, check=False).returncode == 0,
             30, what=f"ServiceAccount default in {ns}")
    yield ns
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        out = cluster.kubectl("get", "all,events", "-o", "wide", namespace=ns, check=False)
        print(f"\n--- namespace {ns} at failure ---\n{out.stdout}{out.stderr}")
        pods = cluster.kubectl("get", "pods", "-o", "yaml", namespace=ns, check=False)
        print(pods.stdout[-8000:])
    if os.environ.get("TERRASNAP_KEEP_NAMESPACES") != "1":
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
