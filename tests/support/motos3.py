"""moto's S3 server (the real `moto[server]` from PyPI, run as its own process) for tests and benchmarks.

Clients reach it with any static keys (`TEST_CREDENTIALS`); the engine reads them the way AWS's own clients
do, from `AWS_*` variables, so the tests exercise the same credential chain a pod with a Secret would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoS3:
    endpoint: str
    proc: subprocess.Popen[bytes] | None = None

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_ready(endpoint: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"moto server at {endpoint} did not become ready in {timeout}s")


def start(log: Path, port: int | None = None) -> MotoS3:
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    out = open(log, "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **TEST_CREDENTIALS})  # fmt: skip
    wait_ready(endpoint)
    return MotoS3(endpoint=endpoint, proc=proc)
