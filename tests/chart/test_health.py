"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua 5.1 interpreter (lupa embeds the C
implementation; Argo CD's gopher-lua implements 5.1), and kstatus — the real one (cli-utils, built from the Go
module proxy by build_kstatus.sh) and its rules written out in tests/chart/kstatus.py — on statuses recorded
from real runs of the operator (tests/chart/fixtures/, captured by test_chart_cluster.py with
TERRASNAP_CAPTURE_FIXTURES=1).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import kstatus

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LUA = REPO / "deploy" / "argocd" / "health.lua"
FIXTURES = sorted((HERE / "fixtures").glob("*.json"))

# fixture label (file name without prefix/index) → (Argo CD health, kstatus)
EXPECTED = {
    "none-noready": ("Progressing", kstatus.CURRENT),  # kstatus's known gap: no status yet reads as Current
    "pending-progressing": ("Progressing", kstatus.IN_PROGRESS),
    "running-progressing": ("Progressing", kstatus.IN_PROGRESS),
    "succeeded-snapshotted": ("Healthy", kstatus.CURRENT),
    "succeeded-snapshotted-outdated": ("Progressing", kstatus.IN_PROGRESS),
    "failed-validationfailed": ("Degraded", kstatus.FAILED),
    "none-configured": ("Healthy", kstatus.CURRENT),  # SnapshotStore: Ready, GC CronJob in place
}


@pytest.fixture(scope="module")
def real_kstatus(tmp_path_factory: pytest.TempPathFactory):
    """obj → (status, message) from cli-utils' kstatus.Compute."""
    binary = subprocess.run(["bash", str(HERE / "build_kstatus.sh")], stdout=subprocess.PIPE, text=True,
                            check=True).stdout.strip().splitlines()[-1]
    tmp = tmp_path_factory.mktemp("kstatus")

    def compute(obj: dict[str, Any]) -> tuple[str, str]:
        path = tmp / "obj.json"
        path.write_text(json.dumps(obj))
        out = json.loads(subprocess.run([binary, str(path)], stdout=subprocess.PIPE, text=True, check=True).stdout)
        return out["status"], out["message"]

    return compute


def label(path: Path) -> str:
    return path.stem.split("-", 2)[2]


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script as Argo CD does: `obj` is a global table made from the JSON object; it returns hs."""
    from lupa import lua51

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    assert lua.eval("_VERSION") == "Lua 5.1"
    hs = lua.execute(LUA.read_text())
    return {"status": hs["status"], "message": hs["message"]}


def lua_literal(value: Any) -> str:
    """A JSON value as a Lua 5.1 table constructor (null → nil, as Argo CD's JSON → Lua conversion does)."""
    if isinstance(value, dict):
        items = (f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else
                         "".join(f"\\{b:03d}" for b in c.encode()) for c in str(value)) + '"'


@pytest.fixture(scope="module")
def lua51_binary() -> str:
    """Debian's lua5.1 (installed by tools.sh when missing)."""
    return subprocess.run(["bash", str(HERE / "tools.sh"), "lua"], stdout=subprocess.PIPE, text=True,
                          check=True).stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_debian_lua_gives_the_same_health(path: Path, lua51_binary: str, tmp_path: Path):
    obj = json.loads(path.read_text())
    program = tmp_path / "check.lua"
    program.write_text(f"obj = {lua_literal(obj)}\nlocal function check()\n{LUA.read_text()}\nend\n"
                       "local hs = check()\nio.write(hs.status, '\\t', hs.message)\n")
    p = subprocess.run([lua51_binary, str(program)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    status, message = p.stdout.split("\t", 1)
    assert {"status": status, "message": message} == health(obj)
    assert status == EXPECTED[label(path)][0]


def test_fixtures_cover_every_state():
    labels = {label(p) for p in FIXTURES}
    assert labels >= set(EXPECTED) - {"none-configured"}, labels
    assert labels <= set(EXPECTED), labels - set(EXPECTED)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_argocd_health_and_kstatus_on_recorded_statuses(path: Path, real_kstatus):
    obj = json.loads(path.read_text())
    want_health, want_kstatus = EXPECTED[label(path)]
    hs = health(obj)
    assert hs["status"] == want_health, hs
    assert hs["message"]
    assert real_kstatus(obj)[0] == want_kstatus
    assert kstatus.compute(obj) == real_kstatus(obj)  # the written-out rules are the real ones


def _ready_snapshot() -> dict[str, Any]:
    return json.loads(next(p for p in FIXTURES if label(p) == "succeeded-snapshotted").read_text())


def test_health_and_kstatus_agree_where_both_decide():
    """Healthy ⇔ Current, Degraded ⇔ Failed, Progressing ⇔ InProgress (except before the first status)."""
    pairs = {"Healthy": kstatus.CURRENT, "Degraded": kstatus.FAILED, "Progressing": kstatus.IN_PROGRESS}
    for path in FIXTURES:
        obj = json.loads(path.read_text())
        if obj.get("status"):
            assert pairs[health(obj)["status"]] == kstatus.compute(obj)[0], path.name


def test_message_of_a_rejected_snapshot_is_the_engines():
    obj = json.loads(next(p for p in FIXTURES if label(p) == "failed-validationfailed").read_text())
    assert "raster has no CRS" in health(obj)["message"]


def test_deletion_and_spec_change_are_progressing(real_kstatus):
    obj = _ready_snapshot()
    deleting = copy.deepcopy(obj)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert health(deleting)["status"] == "Progressing"
    assert real_kstatus(deleting)[0] == kstatus.compute(deleting)[0] == kstatus.TERMINATING
    changed = copy.deepcopy(obj)
    changed["metadata"]["generation"] += 1
    assert health(changed)["status"] == "Progressing"
    assert "generation" in health(changed)["message"]
    assert real_kstatus(changed) == kstatus.compute(changed)
    assert real_kstatus(changed)[0] == kstatus.IN_PROGRESS


def test_argocd_configmap_patch_embeds_the_same_script():
    patch = yaml.safe_load((REPO / "deploy" / "argocd" / "argocd-cm-patch.yaml").read_text())
    script = LUA.read_text()
    for kind in ("DatasetSnapshot", "SnapshotStore"):
        assert patch["data"][f"resource.customizations.health.terrasnap.io_{kind}"] == script
