"""Helpers for the chart tier: the helm binary (built from the Go module proxy and cached) and rendering."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "charts" / "terrasnap"
BUILD = HERE / "build_helm.sh"

Obj = dict[str, Any]


@cache
def binary() -> str:
    """Path of the cached helm binary (builds it on first use: minutes cold, instant after)."""
    p = subprocess.run(["bash", str(BUILD)], stdout=subprocess.PIPE, text=True, check=True)
    return p.stdout.strip().splitlines()[-1]


def env(home: Path | None = None) -> dict[str, str]:
    """helm keeps config/cache/data out of the user's home (tests must not depend on repositories set up there)."""
    base = home or (REPO / ".pytest_cache" / "helm-home")
    return {
        **os.environ,
        "HELM_CONFIG_HOME": str(base / "config"),
        "HELM_CACHE_HOME": str(base / "cache"),
        "HELM_DATA_HOME": str(base / "data"),
    }


def run(*args: str, check: bool = True, timeout: float = 300, extra_env: Mapping[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout,
                       env={**env(), **(extra_env or {})}, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def values_args(values: Mapping[str, Any] | None) -> list[str]:
    """A values document passed as a file on stdin would need a temp file; --set-json keeps it in argv."""
    if not values:
        return []
    return ["--set-json", ",".join(f"{k}={json.dumps(v)}" for k, v in values.items())]


def template(values: Mapping[str, Any] | None = None, *, release: str = "terrasnap",
             namespace: str = "terrasnap-system", include_crds: bool = False,
             extra: Iterable[str] = ()) -> list[Obj]:
    """`helm template` → the rendered objects (YAML documents, empty ones dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace, *values_args(values), *extra]
    if include_crds:
        args.append("--include-crds")
    out = run(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objs: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]
