"""terrasnap.kube: status writes with a resourceVersion precondition, retried on conflicts (no cluster)."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s_client

from terrasnap.kube import Kube, KubeError


class FakeKube(Kube):
    """Kube with the HTTP layer replaced by an in-memory object that changes under the writer."""

    def __init__(self, conflicts: int) -> None:
        super().__init__(k8s_client.Configuration(host="http://127.0.0.1:1"))
        self.obj: dict[str, Any] = {
            "metadata": {"resourceVersion": "1"},
            "status": {"phase": "Pending", "x": 1},
        }
        self.conflicts = conflicts
        self.patches: list[dict[str, Any]] = []
        self.reads = 0

    def request(
        self, method: str, path: str, body: Any = None, query: Any = None, content_type: str = ""
    ) -> Any:
        if method == "GET":
            self.reads += 1
            return self.obj
        assert method == "PATCH" and path.endswith("/status")
        if self.conflicts:
            self.conflicts -= 1
            self.obj = {
                **self.obj,
                "metadata": {"resourceVersion": str(int(self.obj["metadata"]["resourceVersion"]) + 1)},
            }
            raise KubeError(409, "Conflict")
        assert body["metadata"]["resourceVersion"] == self.obj["metadata"]["resourceVersion"]
        self.patches.append(body)
        return self.obj


def test_update_status_retries_conflicts_with_fresh_reads_and_sends_a_merge_diff() -> None:
    kube = FakeKube(conflicts=2)
    stale = {"metadata": {"resourceVersion": "0"}, "status": {"phase": "Pending", "x": 1}}
    result = kube.update_status("/x", lambda o: {"phase": "Running"}, current=stale)
    assert result is not None
    assert kube.reads == 2  # the stale copy first, then two fresh reads
    (patch,) = kube.patches
    assert patch["status"] == {"phase": "Running", "x": None}  # removed keys are sent as null


def test_update_status_without_change_writes_nothing() -> None:
    kube = FakeKube(conflicts=0)
    kube.update_status("/x", lambda o: dict(o["status"]))
    kube.update_status("/x", lambda o: None)
    assert kube.patches == []
