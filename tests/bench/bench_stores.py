"""Store benchmark (`make bench-stores`): push and GC of the same snapshot set on each emulator — fake-gcs-server
(gs://), moto (s3://), Azurite (azure://) — terrasnap beside `dvc push` / `dvc gc -c` on the same store.

The snapshot set: the demo data plus FILES small files (v1), then v2 (a tenth of them changed) and v3 (a
tenth more added). terrasnap: `terrasnap snapshot` of each version (validate, hash, push, verify, publish),
one process each, as a user runs it. DVC: `dvc add data && dvc push` of each version in a plain DVC project
with the same store as its remote (another prefix). Then GC keeps v3 only: terrasnap's GC with v3's
manifest as the one root, 72 h later (past the grace and the registrations' 48 h leases), against
`dvc gc -w -c -f` with the v3 workspace. Every HTTP request of both reaches the emulator through a counting
proxy (tests/bench/proxy.py), so the figures count the same thing whichever client library sent it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from terrasnap.engine.gc import run_gc  # noqa: E402
from terrasnap.engine.store import Store  # noqa: E402
from tests.bench.proxy import CountingProxy  # noqa: E402
from tests.support import azurite, fakegcs, motos3  # noqa: E402
from tests.support import sampledata as sd  # noqa: E402

BIN = Path(sys.executable).parent


@dataclass
class Target:
    kind: str
    url: str  # the bucket/container root, e.g. s3://bench
    endpoint: str  # through the proxy
    env: dict[str, str]  # what both tools' processes get
    dvc_remote: list[tuple[str, ...]]  # `dvc remote modify` settings


@contextmanager
def emulator(kind: str, work: Path) -> Iterator[tuple[Target, CountingProxy]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "STORAGE_EMULATOR"))}
    server: Any
    if kind == "gs":
        server = fakegcs.start(work / "fakegcs")
        server.create_bucket("bench")
        proxy = CountingProxy(server.endpoint)
        target = Target(kind, "gs://bench", proxy.url, env,
                        [("endpointurl", proxy.url), ("allow_anonymous_login", "true")])
    elif kind == "s3":
        server = motos3.start(work / "moto.log")
        server.create_bucket("bench")
        proxy = CountingProxy(server.endpoint)
        target = Target(kind, "s3://bench", proxy.url, {**env, **motos3.TEST_CREDENTIALS},
                        [("endpointurl", proxy.url)])
    else:
        server = azurite.start(work / "azurite")
        server.create_container("bench")
        proxy = CountingProxy(server.endpoint)
        endpoint = f"{proxy.url}/{azurite.ACCOUNT}"
        conn = server.connection_string.replace(server.endpoint, endpoint)
        target = Target(kind, "azure://bench", endpoint, {**env, "AZURE_STORAGE_CONNECTION_STRING": conn}, [])
    try:
        yield target, proxy
    finally:
        proxy.close()
        server.stop()


def make_versions(base: Path, files: int) -> list[Path]:
    """v1: the demo data and `files` small files; v2: a tenth changed; v3: v2 and a tenth more."""
    versions = []
    for v in (1, 2, 3):
        root = base / f"v{v}" / "data"
        sd.make_demo(root)
        extra = root / "tiles"
        extra.mkdir()
        for i in range(files + (files // 10 if v == 3 else 0)):
            changed = v >= 2 and i < files // 10
            (extra / f"{i:05d}.bin").write_bytes(f"tile {i} {'changed' if changed else ''}\n".encode() * 64)
        versions.append(root)
    return versions


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.monotonic()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({res.returncode}):\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}")
    return time.monotonic() - t, res


def total(counts: Counter[str]) -> int:
    return sum(counts.values())


def bench_kind(kind: str, versions: list[Path], work: Path) -> dict[str, Any]:
    with emulator(kind, work) as (target, proxy):
        env = {**target.env, "DVC_NO_ANALYTICS": "1", "TERRASNAP_STORE_ENDPOINT": target.endpoint}
        ours_url, theirs_url = f"{target.url}/terrasnap", f"{target.url}/dvc"
        out: dict[str, Any] = {"push": {"terrasnap": [], "dvc": []}}
        manifests = []
        for i, data in enumerate(versions, 1):
            proxy.take()
            secs, res = timed([str(BIN / "terrasnap"), "snapshot", str(data), "--store", ours_url, "--name", "bench",
                               "--invalid-geometry", "repair", "--endpoint", target.endpoint], data.parent, env)
            manifests.append(json.loads(res.stdout)["manifest"])
            out["push"]["terrasnap"].append({"version": i, "seconds": round(secs, 2), "requests": total(proxy.take())})
        proj = work / "dvcproj"
        proj.mkdir()
        dvc = str(BIN / "dvc")
        for args in (("init", "--no-scm", "-q"), ("remote", "add", "-d", "r", theirs_url),
                     *(("remote", "modify", "r", *kv) for kv in target.dvc_remote)):  # fmt: skip
            timed([dvc, *args], proj, env)
        for i, data in enumerate(versions, 1):
            if (proj / "data").exists():
                shutil.rmtree(proj / "data")
            shutil.copytree(data, proj / "data")
            proxy.take()
            add, _ = timed([dvc, "add", "data"], proj, env)
            push, _ = timed([dvc, "push"], proj, env)
            out["push"]["dvc"].append({"version": i, "seconds": round(add + push, 2), "requests": total(proxy.take())})

        old = os.environ.copy()
        os.environ.update(target.env)
        try:
            store = Store.from_url(ours_url, target.endpoint)
            before = sum(1 for _ in store.list_objects())
            proxy.take()
            t = time.monotonic()
            report = run_gc(store, [manifests[-1]], grace=timedelta(hours=24), dry_run=False,
                            now=datetime.now(UTC) + timedelta(hours=72))
            out["gc"] = {"terrasnap": {"seconds": round(time.monotonic() - t, 2), "requests": total(proxy.take()),
                                       "deleted": len(report.deleted), "objectsBefore": before}}
            theirs = Store.from_url(theirs_url, target.endpoint)
            before = sum(1 for _ in theirs.list_objects())
            proxy.take()
            secs, _ = timed([dvc, "gc", "-w", "-c", "-f"], proj, env)
            requests = total(proxy.take())
            after = sum(1 for _ in theirs.list_objects())
            out["gc"]["dvc"] = {"seconds": round(secs, 2), "requests": requests, "deleted": before - after,
                                "objectsBefore": before}
        finally:
            os.environ.clear()
            os.environ.update(old)
        return out


def summary(kind: str, res: dict[str, Any]) -> list[str]:
    def push(tool: str) -> tuple[float, int]:
        runs = res["push"][tool]
        return sum(r["seconds"] for r in runs), sum(r["requests"] for r in runs)

    (ts, tr), (ds, dr) = push("terrasnap"), push("dvc")
    g = res["gc"]
    return [
        f"{kind}: push x3  terrasnap {ts:.1f}s {tr} requests | dvc add+push {ds:.1f}s {dr} requests | "
        f"ratio time {ts / ds:.2f}, requests {tr / max(dr, 1):.2f}",
        f"{kind}: gc       terrasnap {g['terrasnap']['seconds']:.1f}s {g['terrasnap']['requests']} requests, "
        f"deleted {g['terrasnap']['deleted']}/{g['terrasnap']['objectsBefore']} | dvc gc -c "
        f"{g['dvc']['seconds']:.1f}s {g['dvc']['requests']} requests, deleted {g['dvc']['deleted']}/"
        f"{g['dvc']['objectsBefore']} | ratio time {g['terrasnap']['seconds'] / max(g['dvc']['seconds'], 1e-9):.2f}, "
        f"requests {g['terrasnap']['requests'] / max(g['dvc']['requests'], 1):.2f}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=500, help="small files in v1 (besides the demo data)")
    ap.add_argument("--kinds", default="gs,s3,azure")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as tmp:
        versions = make_versions(Path(tmp) / "data", args.files)
        for kind in args.kinds.split(","):
            print(f"{kind}: 3 snapshots of {args.files}+ files, terrasnap and dvc ...", flush=True)
            results[kind] = bench_kind(kind, versions, Path(tmp) / kind)
            lines += summary(kind, results[kind])
            print("\n".join(lines[-2:]), flush=True)
    print("\n".join(["", "summary (ratio < 1: terrasnap is faster / sends fewer requests)", *lines]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
