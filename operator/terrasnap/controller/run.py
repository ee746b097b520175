"""`terrasnap operator`: run the kopf operator against the current kubeconfig (or in-cluster config).

Exposed as `main(argv) -> int` for the `terrasnap` CLI; also `python -m terrasnap.controller`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def parser() -> argparse.ArgumentParser:
    """Options override the TERRASNAP_* variables; both are validated by terrasnap.api.config.load."""
    p = argparse.ArgumentParser(prog="terrasnap operator", description=__doc__)
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only these namespaces, globs allowed (repeatable; default: the whole cluster)",
    )
    p.add_argument(
        "--metrics-port",
        help="Prometheus metrics port, 0 to disable (env TERRASNAP_METRICS_PORT, default 8080)",
    )
    p.add_argument("--metrics-address", help="bind address (env TERRASNAP_METRICS_ADDRESS, default 0.0.0.0)")
    p.add_argument(
        "--liveness",
        help="kopf liveness endpoint URL, empty to disable "
        "(env TERRASNAP_LIVENESS, default http://0.0.0.0:8081/healthz)",
    )
    p.add_argument(
        "--selector",
        "-l",
        help="serve only DatasetSnapshots/SnapshotStores matching this label selector, e.g. 'team=geo' or "
        "'!example.com/skip' (env TERRASNAP_SELECTOR)",
    )
    p.add_argument(
        "--peering",
        help="kopf peering object name for several replicas (env TERRASNAP_PEERING; default: standalone)",
    )
    p.add_argument("--priority", help="kopf peering priority (env TERRASNAP_PRIORITY, default 0)")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p.add_argument("--quiet", "-q", action="store_true", help="warnings and errors only")
    return p


def main(argv: list[str] | None = None) -> int:
    from terrasnap.api.config import ConfigError, load

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    flags = {
        "--metrics-port": args.metrics_port,
        "--metrics-address": args.metrics_address,
        "--liveness": args.liveness,
        "--selector": args.selector,
        "--peering": args.peering,
        "--priority": args.priority,
    }
    try:
        config = load(os.environ, flags, watch_namespaces=tuple(args.namespace))
    except ConfigError as exc:
        print(f"terrasnap operator: {exc}", file=sys.stderr)
        return 2

    import kopf

    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    kopf.configure(verbose=args.verbose, quiet=args.quiet)
    logging.getLogger().setLevel(level)
    # kubernetes/urllib3 debug logs would print request headers (tokens): keep them quiet.
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every handler run of every object at INFO; our own transitions are logged instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    _trim_memory_periodically()
    if config.trace_memory:
        _trace_memory()

    if config.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port, addr=config.metrics_address)

    from terrasnap.controller import handlers  # registers the handlers

    handlers.use_config(config)
    kopf.run(
        clusterwide=config.clusterwide,
        namespaces=list(config.watch_namespaces),
        liveness_endpoint=config.liveness,
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=config.priority,
    )
    return 0


def _trim_memory_periodically(interval: float = 30.0) -> None:
    """Give freed heap back to the OS after bursts (glibc keeps it otherwise; RSS would stay at the peak)."""
    import ctypes
    import threading
    import time

    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return

    def loop() -> None:
        while True:
            time.sleep(interval)
            trim(0)

    threading.Thread(target=loop, name="malloc-trim", daemon=True).start()


def _trace_memory() -> None:
    """Debug aid (env TERRASNAP_TRACEMALLOC=1): SIGUSR1 prints the top allocation sites to stderr."""
    import signal
    import tracemalloc

    tracemalloc.start(8)

    def dump(*_: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        for stat in snapshot.statistics("traceback")[:15]:
            print(f"{stat.size / 2**20:8.1f} MB {stat.count:8d} blocks", file=sys.stderr)
            for line in stat.traceback.format()[-8:]:
                print("    " + line, file=sys.stderr)
        sys.stderr.flush()

    signal.signal(signal.SIGUSR1, dump)


if __name__ == "__main__":
    sys.exit(main())
