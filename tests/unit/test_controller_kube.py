"""terrasnap.kube without a cluster: connecting reads $KUBECONFIG now, 409/404 mapping, the Event helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from terrasnap import kube as k


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t0ken}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path


def test_connecting_reads_kubeconfig_as_it_is_then(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "a", "https://a.example:6443")))
    assert k.load_configuration().host == "https://a.example:6443"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "b", "https://b.example:6443")))
    assert k.Kube().configuration.host == "https://b.example:6443"
    official = k.official_client()  # what the cluster GC uses
    assert official.Configuration.get_default_copy().host == "https://b.example:6443"


class Scripted(k.Kube):
    """Kube whose HTTP layer answers with a scripted status."""

    def __init__(self, status: int) -> None:
        super().__init__(k8s_client.Configuration(host="http://127.0.0.1:1"))
        self.status = status
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, query: Any = None, content_type: str = "") -> Any:
        self.sent.append((method, path, body))
        if self.status >= 400:
            raise k.KubeError(self.status, "Scripted")
        return body or {}


def test_create_treats_already_exists_as_success_and_delete_treats_gone_as_done() -> None:
    assert Scripted(409).create("/x", {"metadata": {"name": "a"}}) == (None, False)
    assert Scripted(200).create("/x", {"metadata": {"name": "a"}})[1] is True
    assert Scripted(404).delete("/x/a") is False
    assert Scripted(404).get("/x/a") is None
    with pytest.raises(k.KubeError):
        Scripted(403).create("/x", {})


def test_events_name_their_object_and_go_to_default_for_cluster_scoped_ones() -> None:
    snap = {"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot",
            "metadata": {"name": "b", "namespace": "ml", "uid": "u1", "resourceVersion": "7"}}  # fmt: skip
    event = k.event_manifest(snap, "Warning", "Failed", "x" * 5000, component="terrasnap-operator")
    assert event["metadata"]["namespace"] == "ml" and event["metadata"]["generateName"] == "b."
    assert event["involvedObject"] == {"apiVersion": "terrasnap.io/v1alpha1", "kind": "DatasetSnapshot",
                                       "name": "b", "namespace": "ml", "uid": "u1", "resourceVersion": "7"}  # fmt: skip
    assert (event["type"], event["reason"], len(event["message"])) == ("Warning", "Failed", k.EVENT_MESSAGE_LIMIT)
    assert event["source"] == {"component": "terrasnap-operator"}
    store = {"apiVersion": "terrasnap.io/v1alpha1", "kind": "SnapshotStore", "metadata": {"name": "main"}}
    assert k.event_manifest(store, "Normal", "R", "m", component="c")["metadata"]["namespace"] == "default"


def test_a_failed_event_post_never_fails_the_caller() -> None:
    kube = Scripted(403)
    kube.event({"kind": "SnapshotStore", "metadata": {"name": "main"}}, "Normal", "R", "m")
    ((method, path, body),) = kube.sent
    assert (method, path, body["reason"]) == ("POST", "/api/v1/namespaces/default/events", "R")
