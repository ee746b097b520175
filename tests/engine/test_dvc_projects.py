"""DVC projects as sources, the documents' own workflow: real git, real DVC, real remotes (a local one and
fake-gcs-server), the team's `dvc add` / `dvc repro` / `dvc push` / commit, then `terrasnap snapshot`."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from terrasnap.engine.fetch import fetch
from terrasnap.engine.manifest import read_manifest
from terrasnap.engine.store import Store
from tests.engine.test_snapshot import snap
from tests.support import dvcproject as dp
from tests.support import sampledata as sd

ANNOTATIONS = {f"raw/raw/annotations/tile_{i}.geojson" for i in range(3)}
OUTPUTS = {"raw/snapshots/latest_snapshot.parquet", "raw/snapshots/metadata.json", "raw/classes.json"}
DVC_INTERNALS = (".dvc/", ".dvc-site", "cache.db", "dvc.lock", "dvc.yaml", ".dvcignore", "/tmp/", ".gitignore",
                 "__pycache__", ".dvc")


@pytest.fixture(params=["local", "gcs"])
def team_remote(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """The team's own DVC remote: a directory, or a bucket on fake-gcs-server."""
    if request.param == "local":
        (tmp_path / "team-remote").mkdir()
        return str(tmp_path / "team-remote"), None
    server = request.getfixturevalue("gcs")
    bucket = request.getfixturevalue("gcs_bucket")
    return f"gs://{bucket}/team-dvc", server.endpoint


def _source(repo: Path, rev: str = "main") -> str:
    return f"git+file://{repo}@{rev}#subdirectory=data"


def _manifest(store_url: str, doc: dict[str, Any]) -> tuple[Store, str, list[dict[str, Any]]]:
    store = Store.from_url(store_url)
    rel = store.rel_from_uri(doc["manifest"])
    rows, _ = read_manifest(store.read_bytes(rel))
    return store, rel.rsplit("/", 1)[0], rows


def _assert_no_dvc_internals(rows: list[dict[str, Any]]) -> None:
    leaked = [r["path"] for r in rows if any(part in r["path"] for part in DVC_INTERNALS)]
    assert not leaked, leaked


def test_the_documents_workflow_snapshots_to_the_same_id_every_run(
        tmp_path: Path, team_remote: tuple[str, str | None], file_store: str) -> None:
    remote, endpoint = team_remote
    commit = dp.make_team_repo(tmp_path / "repo", remote, endpoint)
    code, first, err = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
    assert code == 0, (first, err)
    assert first["source"]["commit"] == commit
    # the committed dvc.lock is honoured: nothing re-runs, the outputs come from the team's remote
    assert first["stats"]["stages"] == {"class_summary": "up-to-date", "validate_and_snapshot": "up-to-date"}
    assert first["stats"]["objectsFetched"] > 0
    store, folder, rows = _manifest(file_store, first)
    paths = {r["path"] for r in rows}
    assert {p for p in paths if p.startswith("raw/")} >= ANNOTATIONS | OUTPUTS
    _assert_no_dvc_internals(rows)
    # the repository's pointers and lock are recorded next to the manifest
    assert b"annotations" in store.read_bytes(f"{folder}/source/data/raw/annotations.dvc")
    assert b"validate_and_snapshot" in store.read_bytes(f"{folder}/source/dvc.lock")
    assert b"classes" in store.read_bytes(f"{folder}/source/params.yaml")
    meta = json.loads(store.read_bytes(f"{folder}/metadata.json"))
    assert meta["pipeline"]["stages"]["validate_and_snapshot"] == "up-to-date"

    # a second run, a fresh workdir, and a persistent one used twice: always the same id
    for extra in ((), ("--workdir", str(tmp_path / "wd")), ("--workdir", str(tmp_path / "wd"))):
        code, again, err = snap(_source(tmp_path / "repo"), file_store, *extra, tmp=tmp_path)
        assert code == 0, (again, err)
        assert again["snapshotID"] == first["snapshotID"]
        assert again["stats"]["objectsPushed"] == 0


def test_a_changed_annotation_gives_a_new_id_and_reruns_only_its_stage(tmp_path: Path, file_store: str) -> None:
    (tmp_path / "remote").mkdir()
    dp.make_team_repo(tmp_path / "repo", str(tmp_path / "remote"))
    code, before, _ = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
    assert code == 0, before
    # the team fixes one annotation, `dvc add` + `dvc push` + commit, without re-running the pipeline
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "data" / "raw" / "annotations" / "tile_1.geojson", sd.buildings(7, seed=99))
    dp.run(repo, "dvc", "add", "-q", "data/raw/annotations")
    dp.run(repo, "dvc", "push", "-q")
    dp.run(repo, "git", "commit", "-qam", "fix one annotation")
    code, after, err = snap(_source(repo), file_store, tmp=tmp_path)
    assert code == 0, (after, err)
    assert after["snapshotID"] != before["snapshotID"]
    assert after["stats"]["stages"] == {"class_summary": "up-to-date", "validate_and_snapshot": "ran"}
    store, folder, rows = _manifest(file_store, after)
    meta = next(r for r in rows if r["path"] == "raw/snapshots/metadata.json")
    assert meta["size"] > 0
    lock = store.read_bytes(f"{folder}/source/dvc.lock").decode()
    assert lock != dp.run(repo, "git", "show", "HEAD:dvc.lock")  # the lock as reproduced, not as committed
    # a stage that ran is deterministic too: the same commit gives the same id again
    code, again, _ = snap(_source(repo), file_store, tmp=tmp_path)
    assert again["snapshotID"] == after["snapshotID"]


def test_a_pointer_committed_without_push_is_exit_1_naming_the_path(tmp_path: Path, file_store: str) -> None:
    (tmp_path / "remote").mkdir()
    dp.make_team_repo(tmp_path / "repo", str(tmp_path / "remote"), pipeline=False)
    dp.change_one_annotation(tmp_path / "repo", push=False)
    code, doc, _ = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
    assert code == 1, doc
    assert doc["error"]["reason"] == "PointerMismatch"
    msg = doc["error"]["message"]
    assert "never pushed" in msg and "raw/annotations" in msg and "data/raw/annotations.dvc" in msg, msg
    assert not Store.from_url(file_store).exists("terrasnap/manifests")


def test_a_corrupted_remote_object_is_exit_1_naming_file_and_pointer(tmp_path: Path, file_store: str) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    dp.make_team_repo(tmp_path / "repo", str(remote), pipeline=False)
    pointer = (tmp_path / "repo" / "data" / "raw" / "annotations.dvc").read_text()
    listing = json.loads((remote / "files" / "md5" / pointer.split("md5: ")[1][:2] /
                          pointer.split("md5: ")[1].split()[0][2:]).read_text())
    victim = next(e for e in listing if e["relpath"] == "tile_2.geojson")
    obj = remote / "files" / "md5" / victim["md5"][:2] / victim["md5"][2:]
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes().replace(b"7.4", b"7.5", 1))  # DVC itself would check this out silently
    code, doc, _ = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
    assert code == 1, doc
    msg = doc["error"]["message"]
    assert "data/raw/annotations/tile_2.geojson" in msg and "data/raw/annotations.dvc" in msg, msg


def test_an_unreachable_remote_is_exit_3(tmp_path: Path, file_store: str) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    dp.make_team_repo(tmp_path / "repo", str(remote), pipeline=False)
    shutil.rmtree(remote)  # an unmounted volume
    code, doc, _ = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
    assert code == 3, doc
    assert doc["error"]["reason"] == "SourceUnavailable" and "storage" in doc["error"]["message"]


def test_dvc_tracked_data_without_a_pipeline_is_pulled_and_stable(tmp_path: Path, gcs: Any, gcs_bucket: str,
                                                                 file_store: str) -> None:
    dp.make_team_repo(tmp_path / "repo", f"gs://{gcs_bucket}/team", gcs.endpoint, pipeline=False)
    ids = set()
    for _ in range(2):
        code, doc, err = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
        assert code == 0, (doc, err)
        ids.add(doc["snapshotID"])
        assert doc["stats"]["stages"] == {}
    _, _, rows = _manifest(file_store, doc)
    assert {r["path"] for r in rows} >= ANNOTATIONS
    _assert_no_dvc_internals(rows)
    assert len(ids) == 1


@pytest.mark.parametrize("dvc_init", [True, False], ids=["dvc-init", "no-dvc-init"])
def test_a_pipeline_on_data_in_git_is_stable_across_runs(tmp_path: Path, file_store: str, dvc_init: bool) -> None:
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "src.geojson", sd.buildings(4))
    (repo / "dvc.yaml").write_text("stages:\n  derive:\n    cmd: cp src.geojson derived.geojson\n"
                                   "    deps: [src.geojson]\n    outs: [derived.geojson]\n")
    (repo / ".gitignore").write_text("/derived.geojson\n")
    dp.run(repo, "git", "init", "-q", "-b", "main")
    if dvc_init:
        dp.run(repo, "dvc", "init", "-q")
    dp.run(repo, "git", "add", "-A")
    dp.run(repo, "git", "commit", "-qm", "pipeline")
    ids = set()
    for extra in ((), (), ("--workdir", str(tmp_path / "wd")), ("--workdir", str(tmp_path / "wd"))):
        code, doc, err = snap(f"git+file://{repo}@main", file_store, *extra, tmp=tmp_path)
        assert code == 0, (doc, err)
        assert doc["stats"]["stages"] == {"derive": "ran"}  # no lock committed: it runs every time
        ids.add(doc["snapshotID"])
    assert len(ids) == 1
    _, _, rows = _manifest(file_store, doc)
    assert "raw/derived.geojson" in {r["path"] for r in rows}
    _assert_no_dvc_internals(rows)


def test_the_store_as_the_teams_remote_is_reused_not_uploaded_again(tmp_path: Path, gcs: Any,
                                                                    gcs_bucket: str) -> None:
    store_url = f"gs://{gcs_bucket}/dvc"
    dp.make_team_repo(tmp_path / "repo", store_url, gcs.endpoint)
    store = Store.from_url(store_url, gcs.endpoint)
    before = {o.md5 for o in store.list_objects()}
    code, doc, err = snap(_source(tmp_path / "repo"), store_url, endpoint=gcs.endpoint, tmp=tmp_path)
    assert code == 0, (doc, err)
    after = {o.md5 for o in store.list_objects()}
    assert doc["stats"]["objectsPushed"] == len(after - before)
    rows = read_manifest(store.read_bytes(store.rel_from_uri(doc["manifest"])))[0]
    raw_md5 = {r["md5"] for r in rows if r["role"] == "raw"}
    assert raw_md5 <= before  # the team's pushed bytes were not uploaded a second time


def test_a_team_on_s3_snapshots_into_an_s3_store_reusing_what_it_pushed(
    tmp_path: Path, s3: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc remote add -d myremote s3://bucket/dvc-cache` — the DVC docs' own example: with the store on the
    same URL nothing is uploaded twice; from another bucket it is fetched with the remote's own credentials
    file (the repository's DVC calls run with every AWS_* variable removed)."""
    store_url = f"s3://{s3_bucket}/dvc"
    dp.make_team_repo(tmp_path / "repo", store_url, s3.endpoint)
    store = Store.from_url(store_url, s3.endpoint)
    before = {o.md5 for o in store.list_objects()}
    creds = tmp_path / "aws.ini"
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    code, doc, err = snap(_source(tmp_path / "repo"), store_url, endpoint=s3.endpoint, tmp=tmp_path)
    assert code == 0, (doc, err)
    rows = read_manifest(store.read_bytes(store.rel_from_uri(doc["manifest"])))[0]
    assert {r["md5"] for r in rows if r["role"] == "raw"} <= before

    other = f"t-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(other)
    remotes = tmp_path / "dvc-remotes"
    (remotes / "storage").mkdir(parents=True)
    (remotes / "storage" / "credentials.json").write_text(creds.read_text())
    monkeypatch.setenv("TERRASNAP_DVC_REMOTE_CREDENTIALS", str(remotes))
    (tmp_path / "second").mkdir()
    code2, doc2, err2 = snap(_source(tmp_path / "repo"), f"s3://{other}/dvc", endpoint=s3.endpoint,
                             tmp=tmp_path / "second")
    assert code2 == 0, (doc2, err2)
    assert doc2["snapshotID"] == doc["snapshotID"]


def test_dvc_pull_with_the_published_pointers_gives_the_bytes_fetch_gives(tmp_path: Path, file_store: str) -> None:
    (tmp_path / "remote").mkdir()
    dp.make_team_repo(tmp_path / "repo", str(tmp_path / "remote"))
    code, doc, _ = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
    assert code == 0, doc
    store, folder, _ = _manifest(file_store, doc)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    for rel, _info in store.list_prefix(f"{folder}/source"):
        target = consumer / rel.removeprefix(f"{folder}/source/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.read_bytes(rel))
    dp.run(consumer, "dvc", "init", "-q", "--no-scm")
    dp.run(consumer, "dvc", "remote", "add", "-d", "store", Store.from_url(file_store).root)
    dp.run(consumer, "dvc", "pull", "-q")
    fetched = tmp_path / "fetched"
    fetch(doc["manifest"], fetched, role="raw")
    for i in range(3):
        rel = f"raw/annotations/tile_{i}.geojson"
        assert (consumer / "data" / rel).read_bytes() == (fetched / "raw" / rel).read_bytes()
    for rel in ("snapshots/latest_snapshot.parquet", "snapshots/metadata.json", "classes.json"):
        assert (consumer / "data" / rel).read_bytes() == (fetched / "raw" / rel).read_bytes()


def test_imports_are_refused_with_a_clear_message(tmp_path: Path, file_store: str) -> None:
    outside = tmp_path / "outside.geojson"
    sd.write_geojson(outside, sd.buildings(2))
    repo = tmp_path / "repo"
    repo.mkdir()
    dp.run(repo, "git", "init", "-q", "-b", "main")
    dp.run(repo, "dvc", "init", "-q")
    (repo / "data").mkdir()
    dp.run(repo, "dvc", "import-url", "-q", str(outside), "data/outside.geojson")
    dp.run(repo, "git", "add", "-A")
    dp.run(repo, "git", "commit", "-qm", "import")
    code, doc, _ = snap(_source(repo), file_store, tmp=tmp_path)
    assert code == 2, doc
    assert "data/outside.geojson.dvc" in doc["error"]["message"] and "dvc add" in doc["error"]["message"]


def test_the_repositorys_stages_and_config_never_see_credentials(tmp_path: Path, file_store: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "store-key.json"))
    monkeypatch.setenv("TERRASNAP_GIT_TOKEN", "s3cret-token")
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "src.geojson", sd.buildings(3))
    probe = ("import os; bad = [k for k in os.environ if 'CREDENTIALS' in k or 'TOKEN' in k]; "
             "open('seen.txt', 'w').write(' '.join(sorted(bad)))")
    (repo / "probe.py").write_text(probe + "\n")
    (repo / "dvc.yaml").write_text("stages:\n  probe:\n    cmd: python probe.py\n    deps: [probe.py]\n"
                                   "    outs: [seen.txt]\n")
    dp.run(repo, "git", "init", "-q", "-b", "main")
    dp.run(repo, "dvc", "init", "-q")
    # a hostile config: the cache and site cache pointed elsewhere, a credential file named
    (repo / ".dvc" / "config").write_text(
        f"[core]\n    remote = x\n    site_cache_dir = {tmp_path / 'evil-site'}\n[cache]\n"
        f"    dir = {tmp_path / 'evil-cache'}\n['remote \"x\"']\n    url = gs://b/p\n"
        f"    credentialpath = {tmp_path / 'store-key.json'}\n")
    dp.run(repo, "git", "add", "-A")
    dp.run(repo, "git", "commit", "-qm", "probe")
    code, doc, err = snap(f"git+file://{repo}@main", file_store, tmp=tmp_path)
    assert code == 0, (doc, err)
    fetched = tmp_path / "fetched"
    fetch(doc["manifest"], fetched, role="raw")
    assert (fetched / "raw" / "seen.txt").read_text() == ""
    assert not (tmp_path / "evil-site").exists() and not (tmp_path / "evil-cache").exists()



def _corrupt(remote: Path, pointer_text: str, relpath: str) -> None:
    """Overwrite one file's object in a local DVC remote with other bytes, as a broken upload would."""
    md5 = pointer_text.split("md5: ")[1].split()[0]
    listing = json.loads((remote / "files" / "md5" / md5[:2] / md5[2:]).read_text())
    victim = next(e for e in listing if e["relpath"] == relpath)
    obj = remote / "files" / "md5" / victim["md5"][:2] / victim["md5"][2:]
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes().replace(b"7.4", b"7.5", 1))


def test_a_path_below_the_pipeline_gets_only_its_outputs_and_its_inputs_are_still_checked(
        tmp_path: Path, file_store: str) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    repo = tmp_path / "repo"
    dp.make_team_repo(repo, str(remote))
    source = f"git+file://{repo}@main#subdirectory=data/snapshots"
    code, doc, err = snap(source, file_store, tmp=tmp_path)
    assert code == 0, (doc, err)
    assert doc["stats"]["stages"] == {"validate_and_snapshot": "up-to-date"}  # class_summary is not needed
    _, _, rows = _manifest(file_store, doc)
    assert {r["path"] for r in rows if r["role"] == "raw"} == {"raw/latest_snapshot.parquet", "raw/metadata.json"}
    # the annotations are outside the path, but the stage's inputs are still checked against their pointer
    _corrupt(remote, (repo / "data" / "raw" / "annotations.dvc").read_text(), "tile_0.geojson")
    code, doc, _ = snap(source, file_store, tmp=tmp_path)
    assert code == 1, doc
    assert "data/raw/annotations/tile_0.geojson" in doc["error"]["message"]


def test_a_working_copy_gives_the_id_of_its_commit_and_is_never_touched(tmp_path: Path, file_store: str) -> None:
    repo = tmp_path / "repo"
    (tmp_path / "team-remote").mkdir()
    dp.make_team_repo(repo, "../team-remote")  # relative, as `dvc remote add` writes it: from repo/.dvc/
    before = {p: p.stat().st_mtime_ns for p in repo.rglob("*") if ".git" not in p.parts}
    code, local, err = snap(repo, file_store, tmp=tmp_path)
    assert code == 0, (local, err)
    assert local["stats"]["stages"] == {"class_summary": "up-to-date", "validate_and_snapshot": "up-to-date"}
    assert {p: p.stat().st_mtime_ns for p in repo.rglob("*") if ".git" not in p.parts} == before
    # a clone elsewhere needs the remote by absolute path (as DVC itself would); the config is not data
    dp.run(repo, "dvc", "remote", "modify", "storage", "url", str(tmp_path / "team-remote"))
    dp.run(repo, "git", "commit", "-qam", "absolute remote")
    code, committed, err = snap(f"git+file://{repo}@main", file_store, tmp=tmp_path)
    assert code == 0, (committed, err)
    assert local["snapshotID"] == committed["snapshotID"]
