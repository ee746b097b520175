"""GC against real stores (file:// and fake-gcs-server): what it keeps, deletes, reports, and when it refuses."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from terrasnap.engine import refs
from terrasnap.engine.errors import GCFailedClosed, StoreUnreachable
from terrasnap.engine.gc.decision import plan_deletions
from terrasnap.engine.gc.report import GCReport
from terrasnap.engine.gc.run import GCRun, run_gc
from terrasnap.engine.store import ObjectInfo, Store
from tests.engine import gcsim
from tests.engine.gcsim import gc_cli, later, objects_in, publish, put, put_dir

H = 3600.0
GRACE = timedelta(hours=24)


# -- the pure decision -------------------------------------------------------------------------------


def _reg(objects: Iterable[str], expires: float) -> refs.RegistrationDoc:
    return refs.RegistrationDoc(
        id="r", rel="terrasnap/inflight/r.json", owner="ns/x", objects=frozenset(objects), manifest=None,
        created=0.0, expires=expires, state="inflight",
    )


def test_plan_deletions_is_the_whole_rule() -> None:
    now = 1_000_000.0
    old, young = now - 48 * H, now - 1 * H
    listing = [
        ObjectInfo("a" * 32, 1, old),  # used
        ObjectInfo("b" * 32, 2, old),  # registered, live
        ObjectInfo("c" * 32, 3, old),  # registered, expired long ago
        ObjectInfo("d" * 32, 4, young),  # unreferenced but young
        ObjectInfo("e" * 32, 5, None),  # age unknown
        ObjectInfo("f" * 32 + ".dir", 6, old),  # garbage
    ]
    regs = [_reg(["b" * 32], now + H), _reg(["c" * 32], now - 2 * H)]
    got = {d.obj.md5[0]: d.action for d in plan_deletions(listing, {"a" * 32}, regs, now, 24 * H, skew=300)}
    assert got == {"a": "keep", "b": "inflight", "c": "delete", "d": "young", "e": "young", "f": "delete"}


def test_registration_counts_until_expiry_plus_skew() -> None:
    listing = [ObjectInfo("c" * 32, 3, 0.0)]
    reg = _reg(["c" * 32], 1000.0)
    assert plan_deletions(listing, set(), [reg], 1200.0, 1.0, skew=300)[0].action == "inflight"
    assert plan_deletions(listing, set(), [reg], 1301.0, 1.0, skew=300)[0].action == "delete"


@pytest.mark.parametrize("grace", ["24", "1h30m", "1.5h", "-1h", "24 h", "h"])
def test_the_grace_takes_only_what_the_crd_accepts(grace: str) -> None:
    # one duration parser (api/durations.py) for the CRD's gracePeriod and the command's --grace
    code, out, err = gc_cli("--store", "file:///nowhere", "--root", "file:///nowhere/x", "--grace", grace)
    assert code == 2 and out is None and "--grace" in err and "invalid duration" in err


# -- a small world in a real store ---------------------------------------------------------------------


@pytest.fixture
def store(store_url: tuple[str, str | None]) -> Store:
    url, endpoint = store_url
    s = Store.from_url(url, endpoint)
    s.check_reachable()
    return s


def _world(store: Store) -> dict[str, Any]:
    """A: two files + a .dir whose entries metadata does NOT list (defence in depth); B: its own + a shared."""
    shared = put(store, b"shared")
    a1 = put(store, b"a1")
    e1, e2 = put(store, b"entry-1"), put(store, b"entry-2")
    adir = put_dir(store, {"x/e1": e1, "x/e2": e2})
    b1 = put(store, b"b1")
    garbage = put(store, b"garbage")
    root_a = publish(store, "ns", "a", [shared, a1, adir])
    root_b = publish(store, "ns", "b", [shared, b1])
    return {"shared": shared, "a1": a1, "e1": e1, "e2": e2, "adir": adir, "b1": b1, "garbage": garbage,
            "A": root_a, "B": root_b}


def _report(store: Store, report: GCReport) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(store.read_bytes(store.rel_from_uri(report.uri)))
    return doc


def test_keeps_roots_and_dir_entries_deletes_the_rest(store: Store) -> None:
    w = _world(store)
    report = run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48))
    assert objects_in(store) == {w["shared"], w["a1"], w["e1"], w["e2"], w["adir"]}
    assert sorted(report.deleted) == sorted([w["b1"], w["garbage"]])
    assert report.freed_bytes == len(b"b1") + len(b"garbage")
    doc = _report(store, report)
    assert doc["deleted"] == 2 and doc["kept"] == 5 and doc["dryRun"] is False and doc["roots"] == [w["A"]]
    assert {"started", "finished", "skippedYoung", "errors", "freedBytes"} <= set(doc)
    # local mode: roots are not claimed complete, so B's manifest folder stays (only its objects went)
    assert store.exists(store.rel_from_uri(w["B"]))
    assert not list(store.list_prefix(refs.MARKER_PREFIX)), "the GC marker is removed at the end"


def test_young_objects_are_skipped(store: Store) -> None:
    w = _world(store)
    report = run_gc(store, [w["A"]], grace=GRACE, dry_run=False)
    # b1 is kept as used: B was published a moment ago (a young manifest counts as a root); garbage is young
    assert report.deleted == [] and report.skipped_young == 1
    assert {w["garbage"], w["b1"]} <= objects_in(store)


def test_dry_run_deletes_nothing_and_reports(store: Store) -> None:
    w = _world(store)
    before = objects_in(store)
    report = run_gc(store, [w["A"]], grace=GRACE, dry_run=True, now=later(48))
    assert objects_in(store) == before
    doc = _report(store, report)
    assert doc["dryRun"] is True and doc["deleted"] == 2 and doc["freedBytes"] == len(b"b1") + len(b"garbage")


def test_complete_roots_also_delete_unrooted_manifest_folders(store: Store) -> None:
    w = _world(store)
    report = run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48), roots_complete=True)
    folder_b = store.rel_from_uri(w["B"]).rsplit("/", 1)[0]
    assert report.manifests_deleted == [folder_b]
    assert not list(store.list_prefix(folder_b))
    assert store.exists(store.rel_from_uri(w["A"]))


def test_live_registration_protects_objects_and_folder(store: Store) -> None:
    w = _world(store)
    t = later(48).timestamp()
    folder_b = store.rel_from_uri(w["B"]).rsplit("/", 1)[0]
    with refs.inflight(store, [w["b1"], w["garbage"]], owner="ns/c", manifest=folder_b, clock=lambda: t,
                       heartbeat=3600):
        report = run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48), roots_complete=True)
    assert report.deleted == [] and report.kept_inflight == 2 and report.manifests_deleted == []
    assert {w["b1"], w["garbage"]} <= objects_in(store)
    # the post-publish lease keeps protecting for 48h; after it, they go
    report = run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48 + 49))
    assert sorted(report.deleted) == sorted([w["b1"], w["garbage"]])
    assert not list(store.list_prefix(refs.INFLIGHT_PREFIX)), "expired registrations are cleaned up"


def test_young_unrooted_manifest_keeps_its_objects(tmp_path: Any) -> None:
    store = Store.from_url(f"file://{tmp_path}/store")
    old = put(store, b"old-object")
    now = time.time()
    path = os.path.join(store.root, Store.object_rel(old))
    os.utime(path, (now - 72 * H, now - 72 * H))
    # published a minute ago, not (yet) among the roots the caller knows
    publish(store, "ns", "new", [old])
    report = run_gc(store, [], grace=GRACE, dry_run=False)
    assert report.deleted == [] and old in objects_in(store)


# -- fail closed ------------------------------------------------------------------------------------


class ListingFails(Store):
    def list_prefix(self, rel_prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if rel_prefix.startswith("files/md5"):
            raise StoreUnreachable(f"store {self.url}: listing {rel_prefix}: 503 Service Unavailable")
        return super().list_prefix(rel_prefix)


def test_listing_error_deletes_nothing(store: Store) -> None:
    w = _world(store)
    before = objects_in(store)
    broken = ListingFails(store.url, store.endpoint)
    with pytest.raises(GCFailedClosed, match="503"):
        run_gc(broken, [w["A"]], grace=GRACE, dry_run=False, now=later(48))
    assert objects_in(store) == before
    assert not list(store.list_prefix(refs.MARKER_PREFIX))


@pytest.mark.parametrize("damage", ["metadata-garbage", "metadata-missing", "objects-not-ids", "dir-corrupt",
                                    "registration-corrupt"])
def test_unreadable_references_delete_nothing(store: Store, damage: str) -> None:
    w = _world(store)
    folder_a = store.rel_from_uri(w["A"]).rsplit("/", 1)[0]
    if damage == "metadata-garbage":
        store.write_bytes(f"{folder_a}/metadata.json", b"{not json")
    elif damage == "metadata-missing":
        store.delete_many([f"{folder_a}/metadata.json"])
    elif damage == "objects-not-ids":
        store.write_bytes(f"{folder_a}/metadata.json", json.dumps({"objects": ["../../etc/passwd"]}).encode())
    elif damage == "dir-corrupt":
        store.write_bytes(Store.object_rel(w["adir"]), b"[{\"relpath\": 3}]")
    else:
        store.write_bytes(f"{refs.INFLIGHT_PREFIX}/bad.json", b"{\"objects\": 7}")
    before = objects_in(store)
    with pytest.raises(GCFailedClosed):
        run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48))
    assert objects_in(store) == before


@pytest.mark.parametrize("root", ["elsewhere", "no-such-manifest", "not-a-manifest"])
def test_unknown_root_deletes_nothing(store: Store, root: str) -> None:
    w = _world(store)
    uri = {
        "elsewhere": "gs://another-bucket/dvc/terrasnap/manifests/ns/a/00/manifest.parquet",
        "no-such-manifest": store.uri("terrasnap/manifests/ns/zz/" + "0" * 64 + "/manifest.parquet"),
        "not-a-manifest": store.uri(Store.object_rel(w["a1"])),
    }[root]
    before = objects_in(store)
    with pytest.raises(GCFailedClosed, match="unknown root"):
        run_gc(store, [w["A"], uri], grace=GRACE, dry_run=False, now=later(48))
    assert objects_in(store) == before


# -- faults -----------------------------------------------------------------------------------------


class SomeDeletesFail(Store):
    """A real store that refuses to delete the objects whose md5 starts with one of `bad`."""

    bad: tuple[str, ...] = ()

    def delete_many(self, rels: Iterable[str]) -> list[tuple[str, str]]:
        rels = list(rels)
        refused = [r for r in rels if r.startswith("files/md5/") and r.replace("/", "")[8:].startswith(self.bad)]
        failures = super().delete_many([r for r in rels if r not in refused])
        return failures + [(r, "OSError: 503 injected") for r in refused]

    def delete_batch(self, rels: Iterable[str]) -> list[tuple[str, str]]:
        return self.delete_many(rels)


def test_failed_deletes_are_reported_and_retried(store: Store) -> None:
    w = _world(store)
    flaky = SomeDeletesFail(store.url, store.endpoint)
    flaky.bad = (w["garbage"][:2],)
    report = run_gc(flaky, [w["A"]], grace=GRACE, dry_run=False, now=later(48))
    assert not report.ok and any("503 injected" in e for e in report.errors)
    assert w["garbage"] in objects_in(store) and w["b1"] not in objects_in(store)
    again = run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48))
    assert again.ok and again.deleted == [w["garbage"]]


def test_gc_killed_between_listing_and_deleting_then_rerun(store: Store) -> None:
    w = _world(store)
    t = later(48).timestamp()
    killed = GCRun(store, [w["A"]], grace=GRACE, dry_run=False, clock=lambda: t)
    for step in killed.steps():
        if step == "plan":
            break  # killed: no deletes, no finish, marker left behind
    assert list(store.list_prefix(refs.MARKER_PREFIX))
    report = run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(49))
    assert sorted(report.deleted) == sorted([w["b1"], w["garbage"]])
    # the dead GC's marker is cleaned once it has expired (plus skew)
    run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(50))
    assert not list(store.list_prefix(refs.MARKER_PREFIX))


def test_the_gc_command_in_local_mode(store: Store, tmp_path: Path) -> None:
    w = _world(store)
    code, out, err = gc_cli("--store", store.url, *_endpoint(store), "--grace", "24h")
    assert code == 2 and out is None and "at least one --root" in err
    result = tmp_path / "result.json"
    code, out, _ = gc_cli("--store", store.url, *_endpoint(store), "--root", w["A"], "--root", w["B"], "--dry-run",
                          "--grace", "0s", "--result-file", str(result))
    assert code == 0 and out is not None
    assert out["dryRun"] is True and out["deleted"] == 1 and out["report"].startswith(store.url)
    assert json.loads(result.read_text()) == out
    code, out, err = gc_cli("--store", store.url, *_endpoint(store), "--root",
                            store.uri("terrasnap/manifests/x/y/z/manifest.parquet"), "--grace", "0s",
                            "--result-file", str(result))
    assert code == 3 and out is None and "GCFailedClosed" in err
    assert json.loads(result.read_text())["error"]["reason"] == "GCFailedClosed"
    code, out, _ = gc_cli("--store", store.url, *_endpoint(store), "--root", w["A"], "--grace", "0s")
    assert code == 0
    assert w["b1"] not in objects_in(store) and w["shared"] in objects_in(store)
    assert gcsim.dir_object({})[0].endswith(".dir")


def test_the_gc_command_exits_3_when_some_deletes_failed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _world(store)
    flaky = SomeDeletesFail(store.url, store.endpoint)
    flaky.bad = (w["garbage"][:2],)
    monkeypatch.setattr(Store, "from_url", classmethod(lambda cls, url, endpoint=None: flaky))
    result = tmp_path / "result.json"
    code, out, _ = gc_cli("--store", store.url, "--root", w["A"], "--grace", "0s", "--result-file", str(result))
    assert code == 3 and out is not None and out["ok"] is False
    assert out["error"]["reason"] == "GCIncomplete" and "503 injected" in out["error"]["message"]
    assert json.loads(result.read_text())["error"]["reason"] == "GCIncomplete"
    assert w["garbage"] in objects_in(store) and w["b1"] not in objects_in(store)


def _endpoint(store: Store) -> list[str]:
    return ["--endpoint", store.endpoint] if store.endpoint else []


def test_store_delete_batch(store: Store) -> None:
    md5s = [put(store, f"batch {i}".encode()) for i in range(7)]
    rels = [Store.object_rel(m) for m in md5s] + [Store.object_rel("f" * 32)]  # one already gone
    assert store.delete_batch(rels) == []
    assert objects_in(store) == set()


def test_a_run_longer_than_half_the_post_publish_lease_stops(store: Store) -> None:
    w = _world(store)
    clock = {"t": later(48).timestamp()}
    run = GCRun(store, [w["A"]], grace=GRACE, dry_run=False, clock=lambda: clock["t"])
    for step in run.steps():
        if step == "plan":
            break
    clock["t"] += refs.POST_PUBLISH_LEASE / 2 + 1
    run.marker_expires = clock["t"] + 3600  # its marker lease is fine; the run is simply too old
    with pytest.raises(GCFailedClosed, match="longer than"):
        run.delete_batch()
    run.close()
    assert {w["b1"], w["garbage"]} <= objects_in(store)


def test_recheck_expands_dir_objects_of_new_registrations(store: Store) -> None:
    w = _world(store)
    t = later(48).timestamp()
    run = GCRun(store, [w["A"]], grace=GRACE, dry_run=False, clock=lambda: t)
    for step in run.steps():
        if step == "plan":
            break
    assert w["b1"] in {o.md5 for o in run.queue}
    # a snapshot registers after planning, naming only a .dir whose entry is b1 (entries should be listed
    # too; GC does not rely on it)
    bdir = put_dir(store, {"x": w["b1"]})
    refs.Registration(store=store, owner="ns/late", objects=[bdir], clock=lambda: t).write()
    while run.delete_batch():
        pass
    run.finish()
    assert w["b1"] in objects_in(store) and w["garbage"] not in objects_in(store)


# -- fail closed on file:// listings, re-read before cleanup, SIGTERM (issue 10) ----------------------------


def _file_store(tmp_path: Path) -> Store:
    s = Store.from_url(f"file://{tmp_path / 'store'}")
    s.check_reachable()
    return s


def test_an_unreadable_registrations_folder_fails_closed(tmp_path: Path) -> None:
    """fsspec's walk leaves out a folder it cannot read: GC then read 0 registrations, said ok and deleted a
    registered object. Run as a real `terrasnap gc`; as root (who reads any folder) without the capabilities
    that bypass permissions, so the folder is unreadable to it as it would be to any other user."""
    import shutil
    import subprocess
    import sys

    store = _file_store(tmp_path)
    w = _world(store)
    for oid in objects_in(store):  # old enough to be garbage
        os.utime(store.abs(Store.object_rel(oid)), (time.time() - 48 * H,) * 2)
    refs.Registration(store=store, owner="ns/running", objects=[w["b1"]]).write()
    cmd = [sys.executable, "-m", "terrasnap.cli", "gc", "--store", store.url, "--root", w["A"], "--grace", "24h"]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: permissions cannot make a folder unreadable")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    inflight = store.abs(refs.INFLIGHT_PREFIX)
    os.chmod(inflight, 0)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(inflight, 0o755)
    assert res.returncode == 3, res.stderr
    assert "GCFailedClosed" in res.stderr and "listing terrasnap/inflight" in res.stderr
    assert "Permission denied" in res.stderr and "Traceback" not in res.stderr
    assert {w["b1"], w["garbage"]} <= objects_in(store)  # nothing deleted, the registered object least of all


def test_a_registrations_folder_on_a_missing_volume_fails_closed(tmp_path: Path) -> None:
    """terrasnap/inflight a symlink to another volume: unmounted (a dangling link) it is not "no
    registrations" but an unreadable listing. Works as root too."""
    store = _file_store(tmp_path)
    w = _world(store)
    volume = tmp_path / "volume"
    volume.mkdir()
    os.makedirs(os.path.dirname(store.abs(refs.INFLIGHT_PREFIX)), exist_ok=True)
    os.symlink(volume, store.abs(refs.INFLIGHT_PREFIX))
    t = later(48).timestamp()
    refs.Registration(store=store, owner="ns/running", objects=[w["b1"]], clock=lambda: t).write()
    mounted = run_gc(store, [w["A"]], grace=GRACE, dry_run=True, now=later(48))
    assert mounted.registrations == 1 and w["b1"] not in mounted.deleted
    volume.rename(tmp_path / "unmounted")
    with pytest.raises(GCFailedClosed, match="listing terrasnap/inflight"):
        run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48))
    assert {w["b1"], w["garbage"]} <= objects_in(store)


def test_an_expired_registration_renewed_during_a_run_is_not_cleaned_up(store: Store) -> None:
    """GC reads a registration as expired; its snapshot then renews it (a stalled heartbeat that came back,
    the post-publish lease). The cleanup at the end re-reads it and keeps it; so did the batch re-check."""
    w = _world(store)
    t0 = time.time()
    reg = refs.Registration(store=store, owner="ns/slow", objects=[w["b1"]], clock=lambda: t0)
    reg.write()
    t = later(48).timestamp()
    run = GCRun(store, [w["A"]], grace=GRACE, dry_run=False, clock=lambda: t)
    steps = run.steps()
    for step in steps:
        if step == "read_registrations":
            break
    assert run.report.registrations == 0  # expired as far as this run knows
    reg.clock = lambda: t
    reg.published()  # renewed: 48 h from the GC's now
    for _ in steps:
        pass
    run.finish()
    assert store.exists(reg.rel)
    assert w["b1"] in objects_in(store) and w["garbage"] not in objects_in(store)
    # once it has really expired, the next run removes it
    run_gc(store, [w["A"]], grace=GRACE, dry_run=False, now=later(48 + 49))
    assert not store.exists(reg.rel)


def test_sigterm_during_a_snapshot_releases_its_registration(tmp_path: Path) -> None:
    """A real `terrasnap snapshot` process, stopped with SIGTERM while it holds its registration (a GC batch
    in progress makes it wait in confirm): the registration is released, nothing is published, the result
    says Interrupted (exit 3, retryable), no traceback."""
    import signal
    import subprocess
    import sys

    from tests.support import sampledata as sd

    demo = sd.make_demo(tmp_path / "demo")
    store = _file_store(tmp_path)
    now = time.time()
    refs.write_marker(store, refs.MarkerDoc(gc="busy", seq=0, started=now, expires=now + refs.MARKER_TTL))
    result = tmp_path / "result.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "terrasnap.cli", "snapshot", str(demo), "--store", store.url, "--name", "sig",
         "--invalid-geometry", "repair", "--result-file", str(result)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(store.list_prefix(refs.INFLIGHT_PREFIX)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the snapshot never registered"
            time.sleep(0.05)
        time.sleep(1.0)  # mid-push or waiting in confirm
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "Interrupted" in err
    assert json.loads(result.read_text())["error"]["reason"] == "Interrupted"
    assert not list(store.list_prefix(refs.INFLIGHT_PREFIX))
    assert not [rel for rel, _ in store.list_prefix("terrasnap/manifests") if rel.endswith("manifest.parquet")]


@pytest.mark.parametrize("root", ["elsewhere", "no-such-manifest", "not-a-manifest"])
def test_cluster_mode_reports_a_root_that_names_no_snapshot_and_collects_as_without_it(
    tmp_path: Path, root: str
) -> None:
    """A status a tenant forged must not stop the store's GC: the same deletions as without that root."""
    results = []
    for run, with_bad in (("plain", False), ("forged", True)):
        store = Store(f"file://{tmp_path / run}")
        w = _world(store)
        uri = {
            "elsewhere": "gs://another-bucket/dvc/terrasnap/manifests/ns/a/00/manifest.parquet",
            "no-such-manifest": store.uri("terrasnap/manifests/ns/zz/" + "0" * 64 + "/manifest.parquet"),
            "not-a-manifest": store.uri(Store.object_rel(w["a1"])),
        }[root]
        roots = [w["A"], uri] if with_bad else [w["A"]]
        report = run_gc(store, roots, grace=GRACE, dry_run=False, now=later(48), roots_complete=True,
                        skip_missing_roots=True)
        assert report.missing_roots == ([uri] if with_bad else [])
        results.append((sorted(report.deleted), sorted(objects_in(store)), w["a1"]))
    (deleted_plain, left_plain, a1), (deleted_forged, left_forged, _) = results
    assert deleted_plain and deleted_forged == deleted_plain and left_forged == left_plain
    assert a1 in left_forged  # the real root's objects stay
