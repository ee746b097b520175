"""terrasnap.controller: the kopf operator (handlers), its Kubernetes client, metrics and entry point.

Run it with `terrasnap operator` or `python -m terrasnap.controller`.
"""
