"""The worker pods' NetworkPolicy: rendered per namespace, accepted by the real apiserver (server-side dry
run), no ingress, egress to DNS and the configured store/source addresses only."""

from __future__ import annotations

import json

import pytest

from tests.chart import helmtool as h
from tests.controlplane.testing import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.helm]


def test_worker_network_policy_passes_server_side_dry_run(cluster: Cluster, namespace: str) -> None:
    values = {"worker": {"networkPolicy": {"enabled": True, "namespaces": [namespace], "egress": [
        {"cidrs": ["199.36.153.8/30"], "ports": [{"port": 443}]},
        {"cidrs": ["10.20.0.0/16"], "ports": [{"port": 8443, "protocol": "TCP"}]}]}}}
    objs = [o for o in h.template(values, release="np", namespace=namespace) if o["kind"] == "NetworkPolicy"]
    assert len(objs) == 1
    (np,) = objs
    assert np["metadata"]["namespace"] == namespace
    spec = np["spec"]
    assert spec["ingress"] == [] and spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "snapshot"
    assert [r.get("to") for r in spec["egress"]] == [None, [{"ipBlock": {"cidr": "199.36.153.8/30"}}],
                                                    [{"ipBlock": {"cidr": "10.20.0.0/16"}}]]
    assert spec["egress"][0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    p = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(np), check=False)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["spec"]["egress"][1]["ports"] == [{"protocol": "TCP", "port": 443}]
    # a CIDR the apiserver refuses is refused (the dry run really validates)
    bad = json.loads(json.dumps(np))
    bad["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"] = "not-a-cidr"
    p = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0 and "cidr" in p.stderr.lower(), p.stderr
    # the snapshot pods' labels are the ones the planner gives them
    from terrasnap.planner.job import snapshot_labels

    labels = snapshot_labels("s", 1, "main")
    assert all(labels[k] == v for k, v in spec["podSelector"]["matchLabels"].items())


def test_no_namespaces_no_policy() -> None:
    assert not [o for o in h.template({}, release="np", namespace="x") if o["kind"] == "NetworkPolicy"]
