"""terrasnap.controller: the kopf operator — registrations (handlers), the reconcile functions they call
(snapshots, stores; testable without kopf or a cluster), metrics and entry point (run). The Kubernetes
client is terrasnap.kube, shared with the cluster GC.

Run it with `terrasnap operator` or `python -m terrasnap.controller`.
"""
