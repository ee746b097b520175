"""The snapshot pod's split on the real control plane: nothing a step leaves running outlives its container.

(On the real kubelet a container's processes end with it; the test node agent must do the same, or a
daemon left by the pipeline step could rewrite what the snapshot step reports.)"""

from __future__ import annotations

import pytest

from tests.controlplane.testing import Cluster, wait_for

pytestmark = [pytest.mark.cluster]

# The init container leaves a daemon (its own session, reparented) that would write a marker into the
# shared workspace 2 s later; the main container waits 4 s and reports whether the marker appeared.
DAEMON = "setsid sh -c 'sleep 2; echo forged > /work/marker' > /dev/null 2>&1 < /dev/null & exit 0"
CHECK = "sleep 4; if [ -e /work/marker ]; then echo forged > /dev/termination-log; else echo clean > /dev/termination-log; fi"


def test_a_daemon_left_by_an_init_container_dies_with_it(cluster: Cluster, namespace: str) -> None:
    def c(name: str, script: str) -> dict[str, object]:
        return {"name": name, "image": "busybox", "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}

    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "daemon", "namespace": namespace},
                   "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                            "volumes": [{"name": "work", "emptyDir": {}}],
                            "initContainers": [c("pipeline", DAEMON)], "containers": [c("snapshot", CHECK)]}},
                  namespace=namespace)
    pod = wait_for(lambda: (p := cluster.get("pod", "daemon", namespace=namespace))["status"].get("phase")
                   in ("Succeeded", "Failed") and p, timeout=60, what="pod done")
    (main,) = pod["status"]["containerStatuses"]
    assert main["state"]["terminated"]["message"].strip() == "clean", main
