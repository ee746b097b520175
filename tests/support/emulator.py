"""What every storage emulator the tests run needs: a free port, a process in its own session with its log,
a readiness wait, and a clean stop (fake-gcs-server, moto's S3 server, Azurite)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start an emulator in its own session (a test's Ctrl-C does not reach it), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(env) if env is not None else None)  # fmt: skip


def wait_http(url: str, timeout: float, name: str, any_status: bool = False) -> None:
    """Until `url` answers (with `any_status`, an HTTP error such as Azurite's 400 counts as up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            if any_status:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} at {url} did not become ready in {timeout}s")


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
