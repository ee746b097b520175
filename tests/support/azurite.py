"""Azurite's blob service (Microsoft's Azure Storage emulator, the npm package, installed by
tests/support/install_azurite.sh) for tests and benchmarks.

It serves the well-known development account; clients reach it with its connection string, which the engine
reads the way Azure's own tools do (`AZURE_STORAGE_CONNECTION_STRING`, or a mounted Secret in a pod).
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.emulator import free_port, launch, stop, wait_http

INSTALL = Path(__file__).with_name("install_azurite.sh")
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every installation; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def binary() -> str:
    """azurite-blob, installed (once, cached by version) if it is not yet."""
    res = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"installing Azurite failed (run `make azurite-bin`):\n{res.stderr[-2000:]}")
    return res.stdout.strip().splitlines()[-1]


@dataclass
class Azurite:
    endpoint: str  # the blob endpoint, http://127.0.0.1:PORT/devstoreaccount1
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def account_name(self) -> str:
        return ACCOUNT

    @property
    def account_key(self) -> str:
        return KEY

    @property
    def connection_string(self) -> str:
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={self.endpoint};"

    def client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.client().create_container(name)

    def stop(self) -> None:
        # On SIGTERM Azurite closes its server at once ("successfully closed" in its log) but its process does
        # not exit (3.37.0), so a full grace would only add 10 s to every session's teardown.
        stop(self.proc, grace=2)


def start(root: Path, port: int | None = None, log: Path | None = None) -> Azurite:
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    proc = launch([binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(root),
                   "--silent", "--skipApiVersionCheck", "--loose"], log or root.parent / f"azurite-{port}.log")
    endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
    # An unauthenticated request is refused (an HTTP error), which is all readiness needs.
    wait_http(f"{endpoint}?comp=list", 60, "Azurite", any_status=True)
    return Azurite(endpoint=endpoint, root=root, proc=proc)
