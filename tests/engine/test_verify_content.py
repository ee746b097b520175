"""Store objects are checked by content, not size: on real stores (file:// and fake-gcs-server), real DVC.

A stored object corrupted in place keeps its name and its size; `dvc push` then skips it as "already there"
(dvc #10498, #7268). The snapshot's verify must notice, re-upload and say so; `terrasnap verify` must find it
in a published snapshot without writing anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from terrasnap.cli import main
from terrasnap.engine import dvc
from terrasnap.engine.errors import VerifyFailed
from terrasnap.engine.manifest import read_manifest
from terrasnap.engine.store import Store
from terrasnap.engine.verify import verify_pushed, verify_snapshot
from tests.engine.test_snapshot import snap
from tests.support import sampledata as sd

POLICY = ("--invalid-geometry", "repair")


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return sd.make_demo(tmp_path / "demo")


def _store(url: str, endpoint: str | None) -> Store:
    return Store.from_url(url, endpoint)


def _rows(store: Store, manifest_uri: str) -> list[dict[str, Any]]:
    rows, _meta = read_manifest(store.read_bytes(store.rel_from_uri(manifest_uri)))
    return rows


def _raw_dir_object(store: Store, manifest_uri: str) -> str:
    folder = store.rel_from_uri(manifest_uri).rsplit("/", 1)[0]
    import yaml

    return str(yaml.safe_load(store.read_bytes(f"{folder}/raw.dvc"))["outs"][0]["md5"])


def corrupt(store: Store, oid: str) -> bytes:
    """Overwrite a stored object with different bytes of the same size (a bit flip); returns the good bytes."""
    rel = Store.object_rel(oid)
    good = store.read_bytes(rel)
    bad = bytes([good[0] ^ 0x20]) + good[1:]
    store.write_bytes(rel, bad)
    assert store.size(rel) == len(good) and store.read_bytes(rel) != good
    return good


def md5_of(store: Store, oid: str) -> str:
    return hashlib.md5(store.read_bytes(Store.object_rel(oid))).hexdigest()


def dvc_pull(store: Store, folder_uri_rel: str, dest: Path) -> Path:
    """A plain DVC project with the store as its remote and the published raw.dvc: `dvc pull`, as a user."""
    dvc.init_project(dest, store, dest / ".cache")
    (dest / "raw.dvc").write_bytes(store.read_bytes(f"{folder_uri_rel}/raw.dvc"))
    res = subprocess.run([sys.executable, "-m", "dvc", "pull"], cwd=dest, env=dvc.dvc_env(dest.parent),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return dest / "raw"


def verify_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["verify", *args])
    return res.exit_code, res.stdout


# -- after a push -------------------------------------------------------------------------------------


def test_a_same_size_corrupt_object_is_repaired_by_the_next_snapshot(
        demo: Path, store_url: tuple[str, str | None], tmp_path: Path) -> None:
    url, endpoint = store_url
    code, doc, _ = snap(demo, url, *POLICY, "--name", "d", endpoint=endpoint, tmp=tmp_path)
    assert code == 0, doc
    store = _store(url, endpoint)
    tif = next(r for r in _rows(store, doc["manifest"]) if r["path"] == "raw/imagery/tile_a.tif")
    listing = _raw_dir_object(store, doc["manifest"])
    corrupt(store, tif["md5"])
    corrupt(store, listing)  # the `.dir` object too: a pull would fetch the wrong file list

    code, again, err = snap(demo, url, *POLICY, "--name", "d", endpoint=endpoint, tmp=tmp_path)
    assert code == 0, again
    assert again["snapshotID"] == doc["snapshotID"]
    assert again["stats"]["objectsRepaired"] == sorted([tif["md5"], listing])
    assert again["stats"]["objectsPushed"] == 0  # dvc push saw both as "already there": verify did the work
    assert "repaired 2 corrupt object(s)" in err
    assert md5_of(store, tif["md5"]) == tif["md5"]
    assert md5_of(store, listing) == listing.removesuffix(".dir")
    # what users then get from the store with plain DVC is the source's bytes
    folder = store.rel_from_uri(doc["manifest"]).rsplit("/", 1)[0]
    pulled = dvc_pull(store, folder, tmp_path / "pull")
    assert (pulled / "imagery" / "tile_a.tif").read_bytes() == (demo / "imagery" / "tile_a.tif").read_bytes()
    assert sorted(p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()) == sorted(
        p.relative_to(demo).as_posix() for p in demo.rglob("*") if p.is_file())
    assert verify_snapshot(doc["manifest"], endpoint)["ok"]


def test_a_corrupt_object_is_not_repaired_from_a_corrupt_local_copy(
        demo: Path, file_store: str, tmp_path: Path) -> None:
    """The repair uploads only bytes whose md5 is the object's name; otherwise the snapshot fails, unpublished."""
    workdir = tmp_path / "work"
    code, doc, _ = snap(demo, file_store, *POLICY, "--name", "d", "--workdir", str(workdir), tmp=tmp_path)
    assert code == 0, doc
    store = _store(file_store, None)
    readme = next(r for r in _rows(store, doc["manifest"]) if r["path"] == "raw/README.txt")
    corrupt(store, readme["md5"])
    local = dvc.cache_object(dvc.cache_dir(workdir), readme["md5"])
    os.chmod(local, 0o644)
    local.write_bytes(b"X" * local.stat().st_size)
    repaired: list[str] = []
    sizes = {readme["md5"]: readme["size"]}
    with pytest.raises(VerifyFailed, match="so is its local copy"):
        verify_pushed(store, sizes, dvc.cache_dir(workdir), repaired)
    assert repaired == [] and md5_of(store, readme["md5"]) != readme["md5"]


# -- a published snapshot: terrasnap verify -------------------------------------------------------------


def test_verify_names_each_damaged_object_and_its_file_and_writes_nothing(
        demo: Path, store_url: tuple[str, str | None], tmp_path: Path) -> None:
    url, endpoint = store_url
    code, doc, _ = snap(demo, url, *POLICY, "--name", "v", endpoint=endpoint, tmp=tmp_path)
    assert code == 0, doc
    store = _store(url, endpoint)
    ep = ["--endpoint", endpoint] if endpoint else []

    code, out = verify_cli(doc["manifest"], *ep, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["damaged"] == []
    n = report["objects"]
    assert n == len(json.loads(store.read_bytes(store.rel_from_uri(doc["metadata"])))["objects"])
    # GCS (md5Hash), S3 (a single-part upload's ETag) and Azure (a Put Blob's Content-MD5) keep an md5 per
    # object, no read needed; a file:// store is read back
    assert report["checked"] == ({"store-md5": n, "read-back": 0} if url.startswith(("gs://", "s3://", "azure://"))
                                 else {"store-md5": 0, "read-back": n})
    code, out = verify_cli(doc["manifest"], *ep)
    assert code == 0 and "intact" in out

    rows = _rows(store, doc["manifest"])
    roads = next(r for r in rows if r["path"] == "raw/labels/roads.geojson")
    tile_b = next(r for r in rows if r["path"] == "raw/imagery/tile_b.tif")
    corrupt(store, roads["md5"])
    store.delete_many([Store.object_rel(tile_b["md5"])])
    before = {rel: store.read_bytes(rel) for rel, _ in store.list_prefix("")}

    code, out = verify_cli(doc["manifest"], *ep)
    assert code == 1
    assert f"corrupt  {roads['md5']}  raw/labels/roads.geojson" in out
    assert f"missing  {tile_b['md5']}  raw/imagery/tile_b.tif" in out
    code, out = verify_cli(doc["manifest"], *ep, "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and report["error"]["reason"] == "SnapshotDamaged"
    assert {(d["object"], d["state"], tuple(d["paths"])) for d in report["damaged"]} == {
        (roads["md5"], "corrupt", ("raw/labels/roads.geojson",)),
        (tile_b["md5"], "missing", ("raw/imagery/tile_b.tif",)),
    }
    assert "raw/labels/roads.geojson" in report["error"]["message"]
    # read-only: the store is byte for byte what it was
    assert {rel: store.read_bytes(rel) for rel, _ in store.list_prefix("")} == before


def test_deep_verify_reads_back_and_checks_sha256(demo: Path, store_url: tuple[str, str | None],
                                                  tmp_path: Path) -> None:
    url, endpoint = store_url
    code, doc, _ = snap(demo, url, *POLICY, "--name", "deep", endpoint=endpoint, tmp=tmp_path)
    assert code == 0, doc
    store = _store(url, endpoint)
    ok = verify_snapshot(doc["manifest"], endpoint, deep=True)
    assert ok["ok"] and ok["checked"] == {"store-md5": 0, "read-back": ok["objects"]}
    # a .dir listing corrupted in place: it belongs to a folder, and the report says which
    listing = _raw_dir_object(store, doc["manifest"])
    corrupt(store, listing)
    code, out = verify_cli(doc["manifest"], *(["--endpoint", endpoint] if endpoint else []), "--deep", "--json")
    report = json.loads(out)
    assert code == 1
    assert [(d["object"], d["paths"]) for d in report["damaged"]] == [(listing, ["raw/"])]
    assert "read-back" in report["damaged"][0]["detail"]


def test_verify_of_a_manifest_that_is_not_there_is_a_usage_error(file_store: str) -> None:
    code, _out = verify_cli(f"{file_store}/terrasnap/manifests/ns/x/{'0' * 64}/manifest.parquet")
    assert code == 2
    assert not Path(file_store.removeprefix("file://")).exists()  # read-only: not even the root was made
