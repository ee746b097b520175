"""moto's S3 server (the real `moto[server]` from PyPI, run as its own process) for tests and benchmarks.

Clients reach it with any static keys (`TEST_CREDENTIALS`); the engine reads them the way AWS's own clients
do, from `AWS_*` variables, so the tests exercise the same credential chain a pod with a Secret would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.emulator import free_port, launch, stop, wait_http

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


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
        stop(self.proc)


def wait_ready(endpoint: str, timeout: float = 60) -> None:
    wait_http(f"{endpoint}/moto-api/", timeout, "moto server")


def start(log: Path, port: int | None = None) -> MotoS3:
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = launch([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log,
                  env={**os.environ, **TEST_CREDENTIALS})
    wait_ready(endpoint)
    return MotoS3(endpoint=endpoint, proc=proc)
