"""`python -m tests.controlplane.node --kubeconfig ... --state ...`: run the test node (cluster.py starts it)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

from . import __doc__ as description
from .agent import Agent
from .kube import Kube

log = logging.getLogger("node-agent")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.controlplane.node", description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node-name", default="terrasnap-node")
    ap.add_argument("--state", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--client-ca", required=True)
    ap.add_argument("--apiserver-port", type=int, required=True)
    ap.add_argument("--kubernetes-version", default="v0.0.0")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if os.geteuid() != 0:
        log.warning("not root: mount namespaces and runAsUser will not work")
    agent = Agent(Kube(a.kubeconfig), a.node_name, Path(a.state), a.port, a.apiserver_port,
                  a.kubernetes_version, (a.tls_cert, a.tls_key, a.client_ca))

    def stop(*_: Any) -> None:
        agent.stopping.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    socket.setdefaulttimeout(60)
    agent.run()


if __name__ == "__main__":
    main()
