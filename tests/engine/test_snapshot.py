"""The real engine end to end: real DVC, real stores (file:// and fake-gcs-server), real git repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from terrasnap.cli import main
from terrasnap.engine.fetch import fetch
from terrasnap.engine.manifest import read_manifest
from terrasnap.engine.store import Store
from tests.support import sampledata as sd


def snap(source: str | Path, store: str, *extra: str, endpoint: str | None = None,
         tmp: Path | None = None) -> tuple[int, dict[str, Any], str]:
    """Run `terrasnap snapshot` in-process; returns (exit code, result document, stderr)."""
    result_file = (tmp or Path(os.environ.get("TMPDIR", "/tmp"))) / f"result-{os.getpid()}-{id(extra)}.json"
    args = ["snapshot", str(source), "--store", store, "--result-file", str(result_file), *extra]
    if endpoint:
        args += ["--endpoint", endpoint]
    res = CliRunner().invoke(main, args)
    doc = json.loads(result_file.read_text())
    assert len(result_file.read_bytes()) <= 4096
    return res.exit_code, doc, res.stderr if hasattr(res, "stderr") else res.output


def store_is_empty(url: str, endpoint: str | None = None) -> bool:
    store = Store.from_url(url, endpoint)
    try:
        return not list(store.list_prefix(""))
    except Exception:
        return True


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return sd.make_demo(tmp_path / "demo")


# -- the happy path -----------------------------------------------------------------------------------

def test_snapshot_fetch_and_stable_id(demo: Path, store_url: tuple[str, str | None], tmp_path: Path) -> None:
    url, endpoint = store_url
    code, doc, _err = snap(demo, url, "--invalid-geometry", "repair", "--name", "b", "--namespace", "ml",
                          endpoint=endpoint, tmp=tmp_path)
    assert code == 0, doc
    assert doc["ok"] and doc["snapshotID"].startswith("sha256:")
    hexid = doc["snapshotID"].split(":")[1]
    assert doc["manifest"] == f"{url}/terrasnap/manifests/ml/b/{hexid}/manifest.parquet"
    s = doc["summary"]
    assert s["rasters"] == 2 and s["repaired"] == 1 and s["features"] == 52
    # the manifest reads back: one row per raw and normalized file, hashes that match the bytes
    store = Store.from_url(url, endpoint)
    rows, meta = read_manifest(store.read_bytes(store.rel_from_uri(doc["manifest"])))
    assert meta["snapshotID"] == doc["snapshotID"]
    paths = {r["path"] for r in rows}
    assert "raw/labels/buildings.geojson" in paths and "raw/imagery/tile_a.tif" in paths
    assert any(p.startswith("normalized/") and p.endswith(".parquet") for p in paths)
    tif = next(r for r in rows if r["path"] == "raw/imagery/tile_a.tif")
    assert tif["kind"] == "raster" and tif["width"] == 512 and tif["epsg"] == 32632
    metadata = json.loads(store.read_bytes(store.rel_from_uri(doc["metadata"])))
    assert set(metadata["objects"]) >= {r["md5"] for r in rows}
    assert any(o.endswith(".dir") for o in metadata["objects"])
    for obj in metadata["objects"]:
        assert store.exists(Store.object_rel(obj)), obj
    # fetch needs neither git nor DVC, and verifies every sha256
    out = fetch(doc["manifest"], tmp_path / "fetched", endpoint)
    assert out["files"] == len(rows)
    assert (tmp_path / "fetched" / "raw" / "labels" / "buildings.geojson").read_bytes() == \
        (demo / "labels" / "buildings.geojson").read_bytes()
    # same bytes + same policy -> same id, even from a different workdir and a copied source
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(demo), str(copy)], check=True)
    code2, doc2, _ = snap(copy, url, "--invalid-geometry", "repair", "--name", "b", "--namespace", "ml",
                          endpoint=endpoint, tmp=tmp_path)
    assert code2 == 0 and doc2["snapshotID"] == doc["snapshotID"]
    # a different policy -> a different id
    code3, doc3, _ = snap(demo, url, "--invalid-geometry", "skip", "--name", "b", "--namespace", "ml",
                          endpoint=endpoint, tmp=tmp_path)
    assert code3 == 0 and doc3["snapshotID"] != doc["snapshotID"]


def test_the_real_command_prints_only_the_result_on_stdout(demo: Path, tmp_path: Path, file_store: str) -> None:
    """The installed entry point, as a Job pod runs it: stdout is one JSON document, progress on stderr."""
    terrasnap = str(Path(sys.executable).parent / "terrasnap")
    result = tmp_path / "termination-log"
    proc = subprocess.run([terrasnap, "snapshot", str(demo), "--store", file_store, "--invalid-geometry", "repair",
                           "--result-file", str(result)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["snapshotID"] == json.loads(result.read_text())["snapshotID"]
    assert "dvc push" in proc.stderr and "Running stage" in proc.stderr


def test_the_callers_files_are_never_touched(tmp_path: Path, file_store: str) -> None:
    """raw/ hard-links the source; DVC must not chmod, move or relink the caller's files."""
    src = tmp_path / "src"
    sd.write_geojson(src / "a.geojson", sd.buildings(3))
    before = {p: (p.stat().st_mode, p.stat().st_ino, p.read_bytes()) for p in src.rglob("*") if p.is_file()}
    work = tmp_path / "work"
    code, doc, _ = snap(src, file_store, "--workdir", str(work), tmp=tmp_path)
    assert code == 0, doc
    after = {p: (p.stat().st_mode, p.stat().st_ino, p.read_bytes()) for p in src.rglob("*") if p.is_file()}
    assert after == before
    # an edit of the source afterwards never reaches the pushed object (the cache holds a copy)
    (src / "a.geojson").write_text((src / "a.geojson").read_text().replace("building", "house"))
    store = Store.from_url(file_store)
    rows, _ = read_manifest(store.read_bytes(store.rel_from_uri(doc["manifest"])))
    row = next(r for r in rows if r["path"] == "raw/a.geojson")
    import hashlib

    assert hashlib.sha256(store.read_bytes(Store.object_rel(row["md5"]))).hexdigest() == row["sha256"]


def test_one_vertex_changes_the_id(tmp_path: Path, file_store: str) -> None:
    src = tmp_path / "src"
    feats = sd.buildings(5)
    sd.write_geojson(src / "a.geojson", feats)
    c1, d1, _ = snap(src, file_store, tmp=tmp_path)
    feats[3]["geometry"]["coordinates"][0][1][0] += 1e-7
    feats[3]["geometry"]["coordinates"][0][2][0] += 1e-7
    sd.write_geojson(src / "a.geojson", feats)
    c2, d2, _ = snap(src, file_store, tmp=tmp_path)
    assert c1 == c2 == 0 and d1["snapshotID"] != d2["snapshotID"]


def test_vanilla_dvc_pull_reads_the_store(demo: Path, tmp_path: Path, file_store: str) -> None:
    code, doc, _ = snap(demo, file_store, "--invalid-geometry", "repair", tmp=tmp_path)
    assert code == 0
    store = Store.from_url(file_store)
    folder = store.rel_from_uri(doc["manifest"]).rsplit("/", 1)[0]
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    for f in ("dvc.yaml", "dvc.lock", "raw.dvc"):
        (consumer / f).write_bytes(store.read_bytes(f"{folder}/{f}"))
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=consumer, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "s", store.root], cwd=consumer, check=True, env=env)
    subprocess.run([*dvc, "pull", "-q"], cwd=consumer, check=True, env=env, capture_output=True)
    assert (consumer / "raw" / "imagery" / "tile_b.tif").read_bytes() == (demo / "imagery" / "tile_b.tif").read_bytes()
    assert any((consumer / "normalized").rglob("*.parquet"))


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "data" / "labels.geojson", sd.buildings(8))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "labels")
    return repo, _git(repo, "rev-parse", "HEAD")


def test_git_source_records_the_commit(tmp_path: Path, file_store: str) -> None:
    repo, commit = make_repo(tmp_path)
    code, doc, _ = snap(f"git+file://{repo}@main#subdirectory=data", file_store, tmp=tmp_path)
    assert code == 0, doc
    assert doc["source"]["commit"] == commit
    meta = json.loads(Store.from_url(file_store).read_bytes(Store.from_url(file_store).rel_from_uri(doc["metadata"])))
    assert meta["source"]["commit"] == commit and meta["source"]["subdirectory"] == "data"


def test_git_source_with_its_own_dvc_pipeline(tmp_path: Path, file_store: str) -> None:
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "src.geojson", sd.buildings(4))
    (repo / "dvc.yaml").write_text(
        "stages:\n  derive:\n    cmd: cp src.geojson derived.geojson\n    deps: [src.geojson]\n"
        "    outs: [derived.geojson]\n")
    _git(repo, "init", "-q", "-b", "main")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True,
                   env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    (repo / ".gitignore").write_text("/derived.geojson\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "pipeline")
    code, doc, _ = snap(f"git+file://{repo}@main", file_store, tmp=tmp_path)
    assert code == 0, doc
    store = Store.from_url(file_store)
    rows, _ = read_manifest(store.read_bytes(store.rel_from_uri(doc["manifest"])))
    assert "raw/derived.geojson" in {r["path"] for r in rows}  # made by the repository's own stage
    folder = store.rel_from_uri(doc["manifest"]).rsplit("/", 1)[0]
    assert b"derive" in store.read_bytes(f"{folder}/source/dvc.lock")


def test_result_file_is_compact() -> None:
    from terrasnap.cli import compact_result

    doc = {"ok": False, "error": {"reason": "ValidationFailed", "message": "x" * 10000}}
    text = compact_result(doc)
    assert len(text.encode()) <= 4096 and json.loads(text)["error"]["reason"] == "ValidationFailed"


# -- bad inputs: each a clear error, and nothing in the store -----------------------------------------

def _nan_file(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
                 '"geometry":{"type":"Point","coordinates":[NaN, 1.0]}}]}')


def _gpkg(path: Path, crs: str | None, n: int = 3) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    path.parent.mkdir(parents=True, exist_ok=True)
    gdf = gpd.GeoDataFrame({"id": list(range(n))}, geometry=[box(i, i, i + 1, i + 1) for i in range(n)], crs=crs)
    gdf.to_file(path, driver="GPKG")


BAD: dict[str, tuple[Any, list[str], int, str]] = {
    # name: (builder(src), extra args, exit code, message regex)
    "malformed-json": (lambda s: (s / "a.geojson").write_text('{"type": "FeatureCollection", "features": [')
                       , [], 1, r"a\.geojson"),
    "empty-file": (lambda s: (s / "a.geojson").write_text(""), [], 1, r"a\.geojson.*empty"),
    "no-crs": (lambda s: _gpkg(s / "nocrs.gpkg", None), [], 1, r"nocrs\.gpkg.*(CRS|crs)"),
    "nan-coordinates": (lambda s: _nan_file(s / "nan.geojson"), [], 1, r"nan\.geojson"),
    "bowtie-reject": (lambda s: sd.write_geojson(s / "b.geojson", [sd.feature(sd.bowtie_at(7.4, 46.9))]), [], 1,
                      r"b\.geojson: feature 0.*Self-intersection"),
    "out-of-range-lat": (lambda s: sd.write_geojson(s / "r.geojson", [sd.feature(sd.square(7.4, 95.0, 0.1))]),
                         [], 1, r"r\.geojson.*feature 0"),
    "mixed-crs": (lambda s: (_gpkg(s / "a.gpkg", "EPSG:4326"), _gpkg(s / "b.gpkg", "EPSG:3857")), [], 1,
                  r"(CRS|crs)"),
    "misaligned-rasters": (lambda s: (sd.write_raster(s / "a.tif"), sd.write_raster(s / "b.tif", origin=(380005.0, 5196000.0))),
                           [], 1, r"grid"),
    "raster-no-crs": (lambda s: sd.write_raster(s / "n.tif", crs=None), [], 1, r"n\.tif.*(CRS|crs)"),
    "unclosed-ring": (lambda s: (s / "u.geojson").write_text(
        '{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":'
        '{"type":"Polygon","coordinates":[[[7.4,46.9],[7.5,46.9],[7.5,47.0],[7.4,47.0]]]}}]}'), [], 1, r"u\.geojson"),
    "legacy-crs-member-projected": (lambda s: sd.write_geojson(
        s / "p.geojson", [sd.feature(sd.square(600000, 5200000, 100))],
        crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32632"}}), [], 1, r"p\.geojson"),
    "empty-source": (lambda s: None, [], 1, r"no files"),
    "bad-missing-crs-flag": (lambda s: sd.write_geojson(s / "a.geojson", sd.buildings(2)),
                             ["--missing-crs", "guess"], 2, r"missingCRS"),
    "bad-target-crs": (lambda s: sd.write_geojson(s / "a.geojson", sd.buildings(2)),
                       ["--target-crs", "EPSG:99999999"], 2, r"targetCRS"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_and_nothing_is_pushed(case: str, tmp_path: Path, file_store: str) -> None:
    build, extra, want_code, pattern = BAD[case]
    src = tmp_path / "src"
    src.mkdir()
    build(src)
    code, doc, _ = snap(src, file_store, *extra, tmp=tmp_path)
    assert code == want_code, doc
    assert doc["ok"] is False
    import re

    assert re.search(pattern, doc["error"]["message"]), doc["error"]["message"]
    assert store_is_empty(file_store), "a refused snapshot must leave the store untouched"


def test_bowtie_repair_keeps_both_lobes_and_skip_drops_it(tmp_path: Path, file_store: str) -> None:
    import geopandas as gpd

    src = tmp_path / "src"
    sd.write_geojson(src / "b.geojson", [sd.feature(sd.bowtie_at(7.4, 46.9)), *sd.buildings(3)])
    code, doc, _ = snap(src, file_store, "--invalid-geometry", "repair", tmp=tmp_path)
    assert code == 0 and doc["summary"]["repaired"] == 1
    out = fetch(doc["manifest"], tmp_path / "f", role="normalized")
    assert out["files"] == 1
    gdf = gpd.read_parquet(next((tmp_path / "f").rglob("*.parquet")))
    assert len(gdf) == 4
    bow = gdf.geometry.iloc[0]
    assert bow.geom_type == "MultiPolygon" and len(bow.geoms) == 2  # both lobes, not buffer(0)'s one
    code, doc, _ = snap(src, file_store, "--invalid-geometry", "skip", tmp=tmp_path)
    assert code == 0 and doc["summary"]["rejected"] == 1 and doc["summary"]["repaired"] == 0


def test_symlink_escaping_the_source(tmp_path: Path, file_store: str) -> None:
    src = tmp_path / "src"
    sd.write_geojson(src / "a.geojson", sd.buildings(2))
    (tmp_path / "secret").write_text("s3cr3t")
    os.symlink(tmp_path / "secret", src / "leak.txt")
    code, doc, _ = snap(src, file_store, tmp=tmp_path)
    assert code == 1 and "leak.txt" in doc["error"]["message"] and store_is_empty(file_store)


def test_unreachable_store(tmp_path: Path) -> None:
    src = sd.make_demo(tmp_path / "src")
    code, doc, _ = snap(src, "gs://bucket/x", endpoint="http://127.0.0.1:9", tmp=tmp_path)
    assert code == 3 and doc["error"]["reason"] == "StoreUnreachable"
    assert "gs://bucket/x" in doc["error"]["message"]


def test_missing_bucket(tmp_path: Path, gcs: Any) -> None:
    src = sd.make_demo(tmp_path / "src")
    code, doc, _ = snap(src, "gs://no-such-bucket/x", endpoint=gcs.endpoint, tmp=tmp_path)
    assert code == 3 and "does not exist" in doc["error"]["message"]


def test_unsupported_store_scheme(tmp_path: Path) -> None:
    src = sd.make_demo(tmp_path / "src")
    code, doc, _ = snap(src, "ftp://host/x", tmp=tmp_path)
    assert code == 2 and doc["error"]["reason"] == "UsageError"


def test_missing_source_directory(tmp_path: Path, file_store: str) -> None:
    code, doc, _ = snap(tmp_path / "nope", file_store, tmp=tmp_path)
    assert code == 3 and doc["error"]["reason"] == "SourceUnavailable" and store_is_empty(file_store)


def test_git_revision_that_does_not_exist(tmp_path: Path, file_store: str) -> None:
    repo, _ = make_repo(tmp_path)
    code, doc, _ = snap(f"git+file://{repo}@no-such-branch", file_store, tmp=tmp_path)
    assert code == 3 and doc["error"]["reason"] == "GitError"
    assert "no-such-branch" in doc["error"]["message"] and store_is_empty(file_store)


def test_git_subdirectory_that_does_not_exist(tmp_path: Path, file_store: str) -> None:
    repo, _ = make_repo(tmp_path)
    code, doc, _ = snap(f"git+file://{repo}@main#subdirectory=nope", file_store, tmp=tmp_path)
    assert code == 3 and "nope" in doc["error"]["message"] and store_is_empty(file_store)


def test_git_token_never_leaks(tmp_path: Path, file_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRASNAP_GIT_TOKEN", "tok-SECRET-123")
    code, doc, err = snap("git+https://127.0.0.1:9/acme/repo.git@main", file_store, tmp=tmp_path)
    assert code == 3 and doc["error"]["reason"] == "GitError"
    assert "tok-SECRET-123" not in json.dumps(doc) and "tok-SECRET-123" not in err


def test_bucket_source(tmp_path: Path, gcs: Any, gcs_bucket: str) -> None:
    src = sd.make_demo(tmp_path / "src")
    raw = Store.from_url(f"gs://{gcs_bucket}/raw", gcs.endpoint)
    for p in sorted(src.rglob("*")):
        if p.is_file():
            raw.put_file(str(p), p.relative_to(src).as_posix())
    code, doc, _ = snap(f"gs://{gcs_bucket}/raw/", f"gs://{gcs_bucket}/dvc", "--invalid-geometry", "repair",
                        endpoint=gcs.endpoint, tmp=tmp_path)
    assert code == 0, doc
    _code2, doc2, _ = snap(src, f"gs://{gcs_bucket}/dvc", "--invalid-geometry", "repair", endpoint=gcs.endpoint,
                          tmp=tmp_path)
    assert doc2["snapshotID"] == doc["snapshotID"]  # same bytes wherever they came from


def test_s3_bucket_source_with_its_own_credentials_file(
    tmp_path: Path, s3: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An s3:// prefix read with its own AWS shared credentials file (source.bucket.credentialsSecret in a
    Job): the same snapshot id as the same files from a directory; a malformed file is a clear error."""
    src = sd.make_demo(tmp_path / "src")
    raw = Store.from_url(f"s3://{s3_bucket}/raw", s3.endpoint)
    for p in sorted(src.rglob("*")):
        if p.is_file():
            raw.put_file(str(p), p.relative_to(src).as_posix())
    creds = tmp_path / "source-credentials"
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("TERRASNAP_SOURCE_CREDENTIALS", str(creds))
    store = f"s3://{s3_bucket}/dvc"
    code, doc, _ = snap(f"s3://{s3_bucket}/raw/", store, "--invalid-geometry", "repair", endpoint=s3.endpoint,
                        tmp=tmp_path)
    assert code == 0, doc
    _code2, doc2, _ = snap(src, store, "--invalid-geometry", "repair", endpoint=s3.endpoint, tmp=tmp_path)
    assert doc2["snapshotID"] == doc["snapshotID"]
    creds.write_text('{"type": "service_account"}')
    code, doc3, _ = snap(f"s3://{s3_bucket}/raw/", store, endpoint=s3.endpoint, tmp=tmp_path)
    assert code == 3 and "not an AWS shared credentials file" in doc3["error"]["message"], doc3


def test_azure_bucket_source_reads_with_its_own_connection_string_never_the_stores(
    tmp_path: Path, azure: Any, azure_container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An azure:// prefix read with the connection string in its own credentials file: the same id as the same
    files from a directory. Without one it is refused, although the store's login is in the environment."""
    src = sd.make_demo(tmp_path / "src")
    raw = Store.from_url(f"azure://{azure_container}/raw", azure.endpoint)
    for p in sorted(src.rglob("*")):
        if p.is_file():
            raw.put_file(str(p), p.relative_to(src).as_posix())
    store = f"azure://{azure_container}/dvc"
    code, doc0, _ = snap(f"azure://{azure_container}/raw/", store, endpoint=azure.endpoint, tmp=tmp_path)
    assert code == 3 and "needs source.bucket.credentialsSecret" in doc0["error"]["message"], doc0
    creds = tmp_path / "source-credentials"
    creds.write_text(azure.connection_string.replace(azure.endpoint, "https://elsewhere.example") + "\n")
    monkeypatch.setenv("TERRASNAP_SOURCE_CREDENTIALS", str(creds))
    code, doc, _ = snap(f"azure://{azure_container}/raw/", store, "--invalid-geometry", "repair",
                        endpoint=azure.endpoint, tmp=tmp_path)  # the store's endpoint replaces BlobEndpoint
    assert code == 0, doc
    _code2, doc2, _ = snap(src, store, "--invalid-geometry", "repair", endpoint=azure.endpoint, tmp=tmp_path)
    assert doc2["snapshotID"] == doc["snapshotID"]
    assert azure.account_key not in json.dumps([doc0, doc, doc2])


def test_validate_command_is_a_ci_gate(tmp_path: Path) -> None:
    good = sd.make_demo(tmp_path / "good")
    res = CliRunner().invoke(main, ["validate", str(good), "--invalid-geometry", "repair"])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad"
    sd.write_geojson(bad / "b.geojson", [sd.feature(sd.bowtie_at(7.4, 46.9))])
    res = CliRunner().invoke(main, ["validate", str(bad)])
    assert res.exit_code == 1 and "Self-intersection" in res.output


def test_the_in_process_stage_leaves_what_dvc_repro_would(demo: Path, tmp_path: Path, file_store: str) -> None:
    """The built-in stage runs in the engine's process and is recorded with DVC's own Stage: by hand, `dvc
    status` finds everything up to date, and a forced `dvc repro` (the stage's command in its own process)
    writes the very same dvc.lock and raw.dvc."""
    work = tmp_path / "work"
    code, doc, _ = snap(demo, file_store, "--invalid-geometry", "repair", "--workdir", str(work), tmp=tmp_path)
    assert code == 0, doc
    project = work / "project"
    lock, pointer = (project / "dvc.lock").read_bytes(), (project / "raw.dvc").read_bytes()
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    dvc = [sys.executable, "-m", "dvc"]
    status = subprocess.run([*dvc, "status"], cwd=project, env=env, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout, status.stdout
    repro = subprocess.run([*dvc, "repro"], cwd=project, env=env, capture_output=True, text=True, check=True)
    assert "didn't change, skipping" in repro.stdout and "Running stage" not in repro.stdout, repro.stdout
    # the engine agrees: an unchanged re-snapshot reads nothing again and gives the same id
    code2, doc2, err2 = snap(demo, file_store, "--invalid-geometry", "repair", "--workdir", str(work), tmp=tmp_path)
    assert code2 == 0 and doc2["snapshotID"] == doc["snapshotID"]
    assert doc2["stats"]["bytesHashed"] == 0 and "Running stage" not in err2
    assert (project / "dvc.lock").read_bytes() == lock
    subprocess.run([*dvc, "repro", "--force"], cwd=project, env=env, capture_output=True, text=True, check=True)
    assert (project / "dvc.lock").read_bytes() == lock and (project / "raw.dvc").read_bytes() == pointer
