"""The documents' DVC workflow through a DatasetSnapshot on the real control plane: the team's repository
(annotations on its own DVC remote on fake-gcs-server, a dvc.yaml, the committed dvc.lock) snapshotted by a
Job whose pod fetches from that remote, honours the lock and publishes the same id the engine gives locally."""

from __future__ import annotations

import io
import shutil
import subprocess
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
