"""GC benchmark (`make bench-gc`): terrasnap's GC against `dvc gc -c` on the same store.

file://  100,000 objects in 1,000 snapshots (one `.dir` of 100 files each); half the snapshots are roots.
gs://    (fake-gcs-server) the same shape, smaller (default 10,000 objects / 100 snapshots).
Both GCs get identical copies of the store (hard links for file://, two buckets for gs://). For `dvc gc -c`
the roots are expressed the only way DVC can: a DVC project whose workspace has one `.dvc` file per root
(`dvc gc -w -c -f`), with the roots' `.dir` objects in its local cache; it has no grace period, no in-flight
registrations and no notion of manifests. Store calls: for terrasnap, every Store method call (and each path
deleted); on gs://, the HTTP requests of both (gcsfs `_call`, counted in-process).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from terrasnap.engine.gc import run_gc  # noqa: E402
from terrasnap.engine.store import Store  # noqa: E402

GRACE = timedelta(hours=24)


class CountingStore(Store):
    """A real store that counts its calls (the 'API calls' of file://)."""

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        super().__init__(url, endpoint)
        self.calls: Counter[str] = Counter()

    def list_prefix(self, rel_prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        self.calls["list"] += 1
        return super().list_prefix(rel_prefix)

    def read_bytes(self, rel: str) -> bytes:
        self.calls["read"] += 1
        return super().read_bytes(rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.calls["write"] += 1
        super().write_bytes(rel, data)

    def exists(self, rel: str) -> bool:
        self.calls["exists"] += 1
        return super().exists(rel)

    def delete_many(self, rels: Iterable[str]) -> list[tuple[str, str]]:
        rels = list(rels)
        self.calls["delete"] += len(rels)
        return super().delete_many(rels)

    def delete_batch(self, rels: Iterable[str]) -> list[tuple[str, str]]:
        rels = list(rels)
        self.calls["delete_batch"] += 1
        self.calls["delete"] += len(rels)
        return super().delete_batch(rels) if self.scheme == "gs" else Store.delete_many(self, rels)


# -- the data set ------------------------------------------------------------------------------------


def make_world(n_objects: int, n_snapshots: int) -> dict[str, Any]:
    """{rel: bytes} of the store, and the snapshots: (folder, dir id, entry md5s)."""
    files: dict[str, bytes] = {}
    snaps = []
    per = n_objects // n_snapshots
    for s in range(n_snapshots):
        entries = []
        for j in range(per):
            data = f"snapshot {s} file {j}\n".encode()
            md5 = hashlib.md5(data).hexdigest()
            files[Store.object_rel(md5)] = data
            entries.append({"md5": md5, "relpath": f"tiles/{j:05d}.tif"})
        body = json.dumps(entries, sort_keys=True).encode()
        dir_id = hashlib.md5(body).hexdigest() + ".dir"
        files[Store.object_rel(dir_id)] = body
        folder = Store.manifest_rel("bench", f"ds{s:04d}", hashlib.sha256(body).hexdigest())
        objects = sorted([dir_id] + [e["md5"] for e in entries])
        files[f"{folder}/metadata.json"] = json.dumps({"objects": objects}).encode()
        files[f"{folder}/dvc.lock"] = b"schema: '2.0'\n"
        files[f"{folder}/manifest.parquet"] = b"PAR1"
        snaps.append({"folder": folder, "dir": dir_id, "entries": [e["md5"] for e in entries],
                      "size": sum(len(f"snapshot {s} file {j}\n") for j in range(per)), "nfiles": per})
    return {"files": files, "snaps": snaps}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def dvc_project(proj: Path, remote_url: str, roots: list[dict[str, Any]], dir_bodies: dict[str, bytes],
                remote_opts: dict[str, str]) -> None:
    proj.mkdir(parents=True)
    run(["dvc", "init", "--no-scm", "-q"], proj)
    run(["dvc", "remote", "add", "-d", "r", remote_url], proj)
    for k, v in remote_opts.items():
        run(["dvc", "remote", "modify", "r", k, v], proj)
    run(["dvc", "config", "core.analytics", "false"], proj)
    cache = proj / ".dvc" / "cache" / "files" / "md5"
    for i, snap in enumerate(roots):
        (proj / f"d{i:04d}.dvc").write_text(
            f"outs:\n- md5: {snap['dir']}\n  size: {snap['size']}\n  nfiles: {snap['nfiles']}\n"
            f"  hash: md5\n  path: d{i:04d}\n"
        )
        p = cache / snap["dir"][:2] / snap["dir"][2:]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(dir_bodies[snap["dir"]])


def run(cmd: list[str], cwd: Path) -> None:
    dvc = str(Path(sys.executable).parent / cmd[0]) if cmd[0] == "dvc" else cmd[0]
    subprocess.run([dvc, *cmd[1:]], cwd=cwd, check=True, capture_output=True)


def objects_left(root: Path) -> set[str]:
    base = root / "files" / "md5"
    return {p.parent.name + p.name for p in base.glob("*/*")}


# -- gcsfs request counting ---------------------------------------------------------------------------


class HTTPCounter:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.active = False

    def install(self) -> None:
        import gcsfs

        original = gcsfs.GCSFileSystem._call
        counter = self

        async def counting(fs: Any, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            if counter.active:
                counter.counts[method] += 1
            return await original(fs, method, path, *args, **kwargs)

        gcsfs.GCSFileSystem._call = counting  # type: ignore[method-assign]

    def measure(self) -> Counter[str]:
        self.counts = Counter()
        self.active = True
        return self.counts


def bench_file(n_objects: int, n_snapshots: int, work: Path, with_dvc: bool) -> dict[str, Any]:
    print(f"file://: building {n_objects} objects in {n_snapshots} snapshots ...", flush=True)
    world = make_world(n_objects, n_snapshots)
    src = work / "src"
    write_tree(src, world["files"])
    roots = world["snaps"][: n_snapshots // 2]
    keep = {e for s in roots for e in s["entries"]} | {s["dir"] for s in roots}
    total = sum(1 for r in world["files"] if r.startswith("files/"))
    out: dict[str, Any] = {"objects": total, "snapshots": n_snapshots, "roots": len(roots)}

    ours = work / "ours"
    subprocess.run(["cp", "-al", str(src), str(ours)], check=True)
    store = CountingStore(f"file://{ours}")
    t = time.monotonic()
    report = run_gc(store, [store.uri(f"{s['folder']}/manifest.parquet") for s in roots], grace=GRACE,
                    dry_run=False, now=datetime.now(UTC) + timedelta(hours=48))
    out["terrasnap"] = {"seconds": round(time.monotonic() - t, 2), "deleted": len(report.deleted),
                        "kept": report.kept, "calls": dict(store.calls),
                        "callsTotal": sum(v for k, v in store.calls.items() if k != "delete_batch")}
    left = objects_left(ours)
    assert keep <= left and len(left) == len(keep), "terrasnap GC kept the wrong set"

    if with_dvc:
        theirs = work / "dvcstore"
        subprocess.run(["cp", "-al", str(src), str(theirs)], check=True)
        bodies = {s["dir"]: world["files"][Store.object_rel(s["dir"])] for s in roots}
        proj = work / "proj"
        dvc_project(proj, str(theirs), roots, bodies, {})
        t = time.monotonic()
        run(["dvc", "gc", "-w", "-c", "-f"], proj)
        secs = time.monotonic() - t
        left = objects_left(theirs)
        out["dvc"] = {"seconds": round(secs, 2), "deleted": total - len(left), "kept": len(left),
                      "keptExactlyRoots": keep == left,
                      "manifestsKept": (theirs / roots[0]["folder"] / "manifest.parquet").exists()}
    shutil.rmtree(work, ignore_errors=True)
    return out


def bench_gcs(n_objects: int, n_snapshots: int, work: Path, with_dvc: bool) -> dict[str, Any]:
    from tests.support import fakegcs

    print(f"gs:// (fake-gcs-server): building {n_objects} objects in {n_snapshots} snapshots ...", flush=True)
    server = fakegcs.start(work / "fakegcs")
    try:
        counter = HTTPCounter()
        counter.install()
        world = make_world(n_objects, n_snapshots)
        roots = world["snaps"][: n_snapshots // 2]
        keep = {e for s in roots for e in s["entries"]} | {s["dir"] for s in roots}
        total = sum(1 for r in world["files"] if r.startswith("files/"))
        out: dict[str, Any] = {"objects": total, "snapshots": n_snapshots, "roots": len(roots)}
        for bucket in ("ours", "theirs"):
            server.create_bucket(bucket)
            s = Store.from_url(f"gs://{bucket}/dvc", server.endpoint)
            items = list(world["files"].items())
            for i in range(0, len(items), 2000):
                s.fs.pipe({s.abs(rel): data for rel, data in items[i : i + 2000]})

        store = Store.from_url("gs://ours/dvc", server.endpoint)
        counts = counter.measure()
        t = time.monotonic()
        report = run_gc(store, [store.uri(f"{s['folder']}/manifest.parquet") for s in roots], grace=GRACE,
                        dry_run=False, now=datetime.now(UTC) + timedelta(hours=48))
        out["terrasnap"] = {"seconds": round(time.monotonic() - t, 2), "deleted": len(report.deleted),
                            "requests": dict(counts), "requestsTotal": sum(counts.values())}
        counter.active = False
        left = {o.md5 for o in store.list_objects()}
        assert keep == left, "terrasnap GC kept the wrong set (gs)"

        if with_dvc:
            bodies = {s["dir"]: world["files"][Store.object_rel(s["dir"])] for s in roots}
            proj = work / "proj"
            dvc_project(proj, "gs://theirs/dvc", roots, bodies,
                        {"endpointurl": server.endpoint, "allow_anonymous_login": "true"})
            from dvc.cli import main as dvc_main

            cwd = os.getcwd()
            os.chdir(proj)
            counts = counter.measure()
            t = time.monotonic()
            try:
                rc = dvc_main(["gc", "-w", "-c", "-f"])
            finally:
                os.chdir(cwd)
                counter.active = False
            secs = time.monotonic() - t
            theirs = Store.from_url("gs://theirs/dvc", server.endpoint)
            left = {o.md5 for o in theirs.list_objects()}
            out["dvc"] = {"seconds": round(secs, 2), "rc": rc, "deleted": total - len(left),
                          "requests": dict(counts), "requestsTotal": sum(counts.values()),
                          "keptExactlyRoots": keep == left}
        return out
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def ratios(res: dict[str, Any], key: str) -> None:
    ours, theirs = res.get("terrasnap", {}), res.get("dvc")
    line = f"  terrasnap gc: {ours['seconds']:.2f}s, deleted {ours['deleted']}, {key} {ours.get(key + 'Total')}"
    print(line)
    if theirs:
        print(f"  dvc gc -c   : {theirs['seconds']:.2f}s, deleted {theirs['deleted']}, "
              f"{key} {theirs.get(key + 'Total', 'n/a')}, kept exactly the roots: {theirs['keptExactlyRoots']}")
        print(f"  ratio wall time terrasnap/dvc = {ours['seconds'] / max(theirs['seconds'], 1e-9):.2f}")
        if theirs.get(key + "Total"):
            print(f"  ratio {key} terrasnap/dvc = {ours[key + 'Total'] / theirs[key + 'Total']:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=1_000)
    ap.add_argument("--gcs-objects", type=int, default=10_000)
    ap.add_argument("--gcs-snapshots", type=int, default=100)
    ap.add_argument("--no-gcs", action="store_true")
    ap.add_argument("--no-dvc", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        results["file"] = bench_file(args.objects, args.snapshots, Path(tmp) / "file", not args.no_dvc)
        print("file://", json.dumps(results["file"]))
        ratios(results["file"], "calls")
        if not args.no_gcs:
            results["gs"] = bench_gcs(args.gcs_objects, args.gcs_snapshots, Path(tmp) / "gs", not args.no_dvc)
            print("gs://", json.dumps(results["gs"]))
            ratios(results["gs"], "requests")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
