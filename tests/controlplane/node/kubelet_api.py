"""The kubelet endpoints the API server proxies to: /containerLogs/{ns}/{pod}/{container}, /pods, /healthz.

TLS with a client certificate required (the apiserver's kubelet client cert), so `kubectl logs` works with
`-f`, `--tail`, `--limit-bytes` and `-p`, also after the pod finished.
"""

from __future__ import annotations

import http.server
import json
import logging
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

from .kube import Obj
from .pod import PodWorker

log = logging.getLogger("node-agent")


class Pods(Protocol):
    """What the endpoints read from the agent."""

    def running_pods(self) -> list[Obj]: ...

    def find_logs(self, ns: str, name: str, cname: str, previous: bool) -> tuple[Path, PodWorker | None] | None:
        """The log file of a container (and its worker while the pod runs), or None."""
        ...


class LogHandler(http.server.BaseHTTPRequestHandler):
    pods: Pods
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("kubelet-api: " + format, *args)

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/") if p]
        if parts == ["healthz"]:
            return self._send(200, b"ok")
        if parts == ["pods"]:
            items = self.pods.running_pods()
            return self._send(200, json.dumps({"kind": "PodList", "apiVersion": "v1", "items": items}).encode(),
                              "application/json")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._send(404, b"not found")
        _, ns, name, cname = parts
        found = self.pods.find_logs(ns, name, cname, previous=q.get("previous", ["false"])[0] == "true")
        if found is None:
            return self._send(404, f'container "{cname}" in pod "{name}" not found'.encode())
        path, worker = found
        follow = q.get("follow", ["false"])[0] == "true"
        tail = int(q["tailLines"][0]) if "tailLines" in q else None
        limit = int(q["limitBytes"][0]) if "limitBytes" in q else None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        offset = len(data)
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        if limit is not None:
            data = data[:limit]
        if not follow:
            return self._send(200, data)
        self._follow(path, worker, cname, data, offset, limit)

    def _follow(self, path: Path, worker: PodWorker | None, cname: str, data: bytes, offset: int,
                limit: int | None) -> None:
        """`kubectl logs -f`: what there is, then what the container writes until it stops (chunked)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = len(data)

        def chunk(b: bytes) -> None:
            self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
            self.wfile.flush()

        try:
            if data:
                chunk(data)
            with open(path, "rb") as f:
                f.seek(offset)
                while True:
                    b = f.read(65536)
                    if b:
                        if limit is not None:
                            b = b[: max(0, limit - sent)]
                        if b:
                            chunk(b)
                            sent += len(b)
                        if limit is not None and sent >= limit:
                            break
                        continue
                    if worker is None or not worker.container_running(cname):
                        b = f.read()
                        if b:
                            chunk(b)
                        break
                    time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass


def make_server(pods: Pods, port: int, cert: str, key: str, client_ca: str) -> http.server.ThreadingHTTPServer:
    LogHandler.pods = pods
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), LogHandler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    return srv
