"""source.git.dvcRemotes: the spec, the CRD and the Job agree; each remote gets its own Secret, read-only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from terrasnap.api.models import DVC_REMOTE_NAME, Source, SpecError
from terrasnap.engine import dvcsource
from terrasnap.planner import job as jobplan
from terrasnap.planner.job import plan_job
from tests.unit.test_planner_job import CONFIG, STORE, snapshot

REPO = Path(__file__).resolve().parents[2]


def _git(**extra: object) -> dict[str, object]:
    return {"git": {"url": "https://git.example/r.git", "revision": "main", **extra}}


def test_each_remote_gets_only_its_own_secret_mounted_read_only() -> None:
    remotes = [{"name": "storage", "credentialsSecret": {"name": "team-gcs"}},
               {"name": "raw.v2", "credentialsSecret": {"name": "raw-key", "key": "sa.json"}}]
    pod = plan_job(snapshot(source=_git(dvcRemotes=remotes)), "main", STORE, CONFIG).manifest["spec"]["template"]["spec"]
    container = pod["initContainers"][0]  # the fetch step
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    storage = mounts[f"{jobplan.DVC_REMOTES_DIR}/storage"]
    assert storage["readOnly"] and vols[storage["name"]]["secret"] == {
        "secretName": "team-gcs", "defaultMode": 0o440, "items": [{"key": "key.json", "path": "credentials.json"}]}
    raw = vols[mounts[f"{jobplan.DVC_REMOTES_DIR}/raw.v2"]["name"]]["secret"]
    assert raw["secretName"] == "raw-key" and raw["items"] == [{"key": "sa.json", "path": "credentials.json"}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[jobplan.DVC_REMOTES_ENV] == jobplan.DVC_REMOTES_DIR
    assert jobplan.DVC_REMOTES_ENV == dvcsource.CREDENTIALS_ENV  # the engine reads what the planner writes


def test_no_remotes_means_no_mounts_and_no_env() -> None:
    container = plan_job(snapshot(), "main", STORE, CONFIG).manifest["spec"]["template"]["spec"]["containers"][0]
    assert jobplan.DVC_REMOTES_ENV not in {e["name"] for e in container["env"]}


@pytest.mark.parametrize("remotes, message", [
    ("storage", "must be a list"),
    ([{"name": "../x", "credentialsSecret": {"name": "s"}}], "DVC remote name"),
    ([{"name": "a", "credentialsSecret": {"name": "s"}}, {"name": "a", "credentialsSecret": {"name": "t"}}],
     "listed twice"),
    ([{"name": "a"}], "credentialsSecret"),
])
def test_bad_remote_lists_are_refused(remotes: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Source.from_dict(_git(dvcRemotes=remotes))


def test_the_crd_the_model_and_the_engine_use_one_remote_name_pattern() -> None:
    crd = yaml.safe_load((REPO / "crds" / "terrasnap.io_datasetsnapshots.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    item = spec["properties"]["source"]["properties"]["git"]["properties"]["dvcRemotes"]["items"]
    assert item["properties"]["name"]["pattern"] == DVC_REMOTE_NAME.pattern == dvcsource.REMOTE_NAME.pattern
