"""The images `make images` builds into the local podman store (images/build.sh), as the tests name them."""

from __future__ import annotations

import subprocess
import tomllib
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PODMAN = ["bash", str(REPO / "images" / "podman.sh")]
COMPONENTS = ("operator", "worker")


@cache
def version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def ref(component: str) -> str:
    """`localhost/terrasnap/<component>:<version>`: what `make images` tags in the local store. The node agent
    runs a pod whose image is a `localhost/` reference present in that store as a real container."""
    return f"localhost/terrasnap/{component}:{version()}"


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """images/podman.sh ARGS; with `check`, a failure raises with what podman said."""
    p = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def available(image: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", image], capture_output=True).returncode == 0
