"""Chart tier: helm lint/template (no cluster), server-side dry run and `helm install` on the test control plane.

The cluster fixtures (cluster, kubeconfig, kubectl, namespace) are the cluster tier's own, imported from
tests/cluster/conftest.py; tests that use them carry the `cluster` marker, so `-m "not cluster"` skips them.
helm is built from the Go module proxy (tests/chart/build_helm.sh, cached) before the first test runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cluster.conftest import (  # noqa: F401  (fixtures re-used by this tier)
    cluster,
    kubeconfig,
    kubectl,
    namespace,
    pytest_runtest_makereport,
)

_HERE = Path(__file__).resolve().parent
_CONTROLPLANE = _HERE.parent / "controlplane"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if _HERE in Path(str(i.fspath)).resolve().parents]
    if not mine or config.getoption("collectonly"):
        return
    # Build before the first test, outside any test's timeout (cold: minutes; cached: instant).
    if any(i.get_closest_marker("helm") for i in mine):
        subprocess.run(["bash", str(_HERE / "build_helm.sh")], check=True, stdout=subprocess.DEVNULL)
    if any(i.get_closest_marker("cluster") for i in mine):
        subprocess.run(["bash", str(_CONTROLPLANE / "build.sh")], check=True, stdout=subprocess.DEVNULL)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "helm: needs the helm binary (built by tests/chart/build_helm.sh)")
