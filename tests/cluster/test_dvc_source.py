"""The documents' DVC workflow through a DatasetSnapshot on the real control plane: the team's repository
(annotations on its own DVC remote on fake-gcs-server, a dvc.yaml, the committed dvc.lock) snapshotted by a
Job whose pod fetches from that remote, honours the lock and publishes the same id the engine gives locally."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.test_operator import (  # noqa: F401 - fixtures used by name
    DATA_ROOT,
    ENGINE_RUN,
    WORKER_UID,
    _chown_tree,
    cluster_bucket,
    crds,
    dsnap,
    ns,
    operator,
    ready,
    snapshot_manifest,
    store,
)
from tests.controlplane.testing import Cluster
from tests.support import dvcproject as dp
from tests.support import fakegcs

pytestmark = [pytest.mark.cluster, pytest.mark.gcs]


@pytest.fixture
def team_repo(gcs: fakegcs.FakeGCS) -> Iterator[Path]:
    """The team's repository, its annotations pushed to the team's own bucket (not the store's)."""
    root = DATA_ROOT / f"dvc-repo-{uuid.uuid4().hex[:8]}"
    bucket = f"team-{uuid.uuid4().hex[:10]}"
    gcs.create_bucket(bucket)
    dp.make_team_repo(root / "repo", f"gs://{bucket}/dvc", gcs.endpoint)
    _chown_tree(root, WORKER_UID)
    yield root / "repo"
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_a_dvc_project_snapshots_through_a_datasetsnapshot(
    cluster: Cluster, ns: str, store: Callable[..., str], team_repo: Path, gcs: fakegcs.FakeGCS,  # noqa: F811
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    from terrasnap.engine.snapshot import SnapshotRequest, run_snapshot
    from terrasnap.engine.store import Store
    from terrasnap.engine.validate.policy import Policy

    store_name = store()
    manifest = snapshot_manifest("annotations", store_name, team_repo, revision="main", backoffLimit=0)
    cluster.apply(manifest, namespace=ns)
    cluster.kubectl("wait", "--for=condition=Ready", "dsnap/annotations", f"--timeout={ENGINE_RUN}s",
                    namespace=ns, timeout=ENGINE_RUN + 30)  # fmt: skip
    obj = dsnap(cluster, ns, "annotations")
    status = obj["status"]
    assert status["phase"] == "Succeeded" and ready(obj)["reason"] == "Snapshotted"
    url = f"gs://{cluster_bucket(cluster, store_name)}/dvc"
    st = Store.from_url(url, gcs.endpoint)
    rows = pq.read_table(io.BytesIO(st.read_bytes(st.rel_from_uri(status["manifest"]["uri"])))).to_pylist()
    paths = {r["path"] for r in rows}
    assert {"raw/raw/annotations/tile_0.geojson", "raw/snapshots/latest_snapshot.parquet",
            "raw/snapshots/metadata.json"} <= paths
    assert not [p for p in paths if ".dvc" in p or "cache.db" in p]

    # The pod's id is the one the engine gives on this machine for the same commit and policy (from a copy of
    # the repository: the original belongs to the worker uid, and git refuses other users' repositories).
    copy = tmp_path / "repo"
    shutil.copytree(team_repo, copy, symlinks=True)
    local = run_snapshot(SnapshotRequest(
        source=f"git+file://{copy}@main#subdirectory=data", store=url, endpoint=gcs.endpoint,
        name="annotations", namespace=ns, policy=Policy(invalid_geometry="repair")), progress=lambda _m: None)
    assert local["snapshotID"] == status["snapshotID"]
    assert local["stats"]["stages"] == {"class_summary": "up-to-date", "validate_and_snapshot": "up-to-date"}


# A stage a hostile repository could ship: it records every credential it can find, leaves a daemon (its own
# session, double-forked) that keeps forging the termination message and the shared workspace, and exits 0.
HOSTILE_STAGE = r'''import json, os, pathlib, sys, time
seen = {
    "env": sorted(k for k in os.environ if any(w in k.upper() for w in ("TOKEN", "KEY", "SECRET", "CRED", "PASS"))),
    "files": sorted(str(p) for root in ("/var/run/secrets", "/run/secrets") if os.path.isdir(root)
                    for p in pathlib.Path(root).rglob("*") if p.is_file()),
}
pathlib.Path("data/classes.json").write_text(json.dumps(seen, sort_keys=True) + "\n")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        lie = json.dumps({"ok": True, "snapshotID": "sha256:" + "e" * 64, "manifest": "gs://evil/manifest.parquet"})
        time.sleep(6)  # past the end of its container (dvc's own bookkeeping after a stage takes ~1 s)
        for _ in range(600):
            for target in ("/dev/termination-log", "data/forged-after-exit.json"):
                try:
                    pathlib.Path(target).write_text(lie)
                except OSError:
                    pass
            time.sleep(0.1)
    os._exit(0)
sys.exit(0)
'''


@pytest.mark.timeout(2 * ENGINE_RUN)
def test_a_hostile_stage_finds_no_credentials_and_cannot_forge_the_result(
    cluster: Cluster, ns: str, store: Callable[..., str], team_repo: Path, gcs: fakegcs.FakeGCS,  # noqa: F811
    tmp_path: Path,
) -> None:
    import json

    from terrasnap.engine.fetch import fetch as do_fetch

    _chown_tree(team_repo, os.getuid())  # the fixture gave it to the worker; git refuses others' repositories
    (team_repo / "scripts" / "class_summary.py").write_text(HOSTILE_STAGE)  # the lock is now stale: it runs
    dp.run(team_repo, "git", "add", "-A")
    dp.run(team_repo, "git", "commit", "-qm", "a stage of our own")
    _chown_tree(team_repo, WORKER_UID)
    store_name = store()
    cluster.apply(snapshot_manifest("hostile", store_name, team_repo, revision="main", backoffLimit=0),
                  namespace=ns)
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "dsnap/hostile",
                    f"--timeout={ENGINE_RUN}s", namespace=ns, timeout=ENGINE_RUN + 30)  # fmt: skip
    time.sleep(3)  # a daemon that survived would have forged by now
    status = dsnap(cluster, ns, "hostile")["status"]
    url = f"gs://{cluster_bucket(cluster, store_name)}/dvc"
    hex_ = status["snapshotID"].removeprefix("sha256:")
    assert status["phase"] == "Succeeded"
    assert status["manifest"]["uri"] == f"{url}/terrasnap/manifests/{ns}/hostile/{hex_}/manifest.parquet"
    import pyarrow.parquet as pq

    from terrasnap.engine.store import Store

    st = Store.from_url(url, gcs.endpoint)
    rows = pq.read_table(io.BytesIO(st.read_bytes(st.rel_from_uri(status["manifest"]["uri"])))).to_pylist()
    assert not [r["path"] for r in rows if "forged" in r["path"]], "a daemon outlived the pipeline container"
    dest = tmp_path / "out"
    do_fetch(status["manifest"]["uri"], dest, gcs.endpoint)
    seen = json.loads(next(dest.rglob("classes.json")).read_text())
    assert seen == {"env": [], "files": []}, seen  # no store or git key, no service-account token
