"""A node for the test control plane that runs pods as local processes or podman containers (a tiny kubelet +
scheduler).

Run as `python -m tests.controlplane.node` (cluster.py starts it; see ../README.md for what it supports).

    agent.py        the process: pod watch -> one PodWorker per pod, the loops, shutdown
    node.py         this Node: registration, status, Lease, Events
    scheduler.py    binding pending pods (nodeName, cordon, taints/tolerations, nodeSelector)
    pod.py          one pod's life: volumes, init containers and sidecars, restarts, deadline, deletion
    status.py       container states and the pod's status (pure)
    containers.py   one container as a process: user, env, the pod_exec spec, start, kill, exit message
    podman.py       one container as a podman container, for a localhost/ image in the project's store
    volumes.py      volumes on the host (emptyDir, secret, configMap, downwardAPI, projected, hostPath, PVC)
    refs.py         Secret/ConfigMap data, fieldRef/resourceFieldRef, $(VAR) expansion
    provisioner.py  hostPath PersistentVolumes for StorageClass `standard`
    kubelet_api.py  /containerLogs (kubectl logs), /pods, /healthz over TLS
    kube.py         the JSON REST client (and watch) for the API server
    pod_exec.py     run by the agent per container, standard library only: mount namespace, overlay root,
                    volumes, user, exec

Images are never pulled. A container whose image is a `localhost/` image in the project's podman store
(`make images`) runs as a real container (podman.py); any other runs as a process on the host's filesystem
with the project's venv first on PATH (the image is only recorded). Every pod shares the host's network (like
hostNetwork: true).
"""
