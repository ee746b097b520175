"""`make bench`: terrasnap as a user waits for it, against baselines measured in the same run (issue 14).

Every figure is a whole process, timed end to end (start-up, imports, DVC and push included), the median
of --repeat runs (3 by default); baselines and terrasnap runs alternate so machine noise hits both alike.
Peak RSS is the child's own (os.wait4's rusage: the process and every descendant it waited for).

Sections (--only a,b,...):
  naive   40 GeoJSON files, 1,000,000 polygons, 1 % bow-ties: tests/bench/naive_script.py (geopandas
          read_file, is_valid, buffer(0), to_parquet, sha256, Parquet manifest) vs `terrasnap snapshot
          --invalid-geometry repair` into a file:// store. Target <= 0.4x.
  hash    hashlib on all cores vs terrasnap's hash_many over the same set plus its GeoTIFFs (in-process
          throughput on a warm page cache; target >= 85 % of hashlib sha256+md5).
  resnap  first snapshot, unchanged re-snapshot with the kept --workdir, re-snapshot from a fresh workdir
          into the same store: time, bytes hashed, objects pushed (the result's `stats`).
  small   10,000 small files (5,000 GeoJSON with a bow-tie each + 5,000 64x64 GeoTIFFs): naive script over
          the labels + `dvc add` + `dvc push` of the folder (real DVC, `dvc init --no-scm`, file:// remote)
          vs the first snapshot (target <= 0.5x, peak RSS < 400 MB); kept-workdir re-snapshot < 2 s;
          size of report.json and of the result document.
  big     one GeoJSON of --big-gb GB: MB/s and peak RSS of its snapshot (>= 100 MB/s, < 600 MB).
--scale N (off by default) repeats naive and resnap on N times the data (N x 40 files, cached apart).

Data is generated once and cached in ~/.cache/terrasnap/bench-<version>/ (TERRASNAP_CACHE overrides).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import sampledata as sd

DATA_VERSION = "1"
CACHE = Path(os.environ.get("TERRASNAP_CACHE", Path.home() / ".cache" / "terrasnap")) / f"bench-{DATA_VERSION}"
BIN = Path(sys.executable).parent
TERRASNAP = str(BIN / "terrasnap")
DVC = str(BIN / "dvc")
NAIVE = str(Path(__file__).with_name("naive_script.py"))
SECTIONS = ("naive", "hash", "resnap", "small", "big")
PER_FEATURE = 215  # bytes of GeoJSON per polygon as write_polygons writes them


def log(msg: str) -> None:
    print(msg, flush=True)


# -- data ----------------------------------------------------------------------------------------------

def write_polygons(path: Path, n: int, seed: int, bad_every: int = 100) -> None:
    """n squares (every `bad_every`-th a bow-tie) around Bern, written as GeoJSON text directly (fast)."""
    rng = np.random.default_rng(seed)
    xs = sd.LON0 + rng.uniform(0, 0.5, n)
    ys = sd.LAT0 + rng.uniform(0, 0.5, n)
    d = 0.0001
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write('{"type":"FeatureCollection","features":[\n')
        for i in range(n):
            x, y = xs[i], ys[i]
            if bad_every and i % bad_every == 0:
                ring = f"[[{x:.7f},{y:.7f}],[{x + d:.7f},{y + d:.7f}],[{x + d:.7f},{y:.7f}],[{x:.7f},{y + d:.7f}],[{x:.7f},{y:.7f}]]"
            else:
                ring = f"[[{x:.7f},{y:.7f}],[{x + d:.7f},{y:.7f}],[{x + d:.7f},{y + d:.7f}],[{x:.7f},{y + d:.7f}],[{x:.7f},{y:.7f}]]"
            sep = ",\n" if i else ""
            fh.write(f'{sep}{{"type":"Feature","properties":{{"id":{i},"label":"building"}},'
                     f'"geometry":{{"type":"Polygon","coordinates":[{ring}]}}}}')
        fh.write("\n]}\n")
    os.replace(tmp, path)


def _cached(root: Path, want: str) -> bool:
    """True when `root` already holds the data described by `want`; otherwise it is emptied for it."""
    stamp = root / ".complete"
    if stamp.exists() and stamp.read_text() == want:
        return True
    shutil.rmtree(root, ignore_errors=True)
    (root / "labels").mkdir(parents=True)
    return False


def make_dataset(root: Path, files: int, per_file: int, rasters: int, raster_px: int) -> Path:
    want = f"{files}x{per_file}+{rasters}x{raster_px}"
    if _cached(root, want):
        return root
    log(f"generating {files} GeoJSON files x {per_file} polygons and {rasters} GeoTIFFs of {raster_px}² px …")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: write_polygons(root / "labels" / f"part-{i:03d}.geojson", per_file, i), range(files)))
    for i in range(rasters):
        # uncompressed, tiled, on one 10 m grid: real bytes for hashing, cheap headers for validation
        origin = (376000.0 + i * raster_px * 10.0, 5200000.0)
        _raster(root / "imagery" / f"tile-{i}.tif", origin, raster_px, seed=i)
    (root / ".complete").write_text(want)
    return root


def _raster(path: Path, origin: tuple[float, float], px: int, seed: int, bands: int = 4,
            overviews: bool = True) -> None:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    profile: dict[str, Any] = {"driver": "GTiff", "width": px, "height": px, "count": bands, "dtype": "uint8",
                               "crs": "EPSG:32632", "transform": from_origin(origin[0], origin[1], 10.0, 10.0),
                               "nodata": 0}
    if px >= 512:
        profile.update(tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(1, 255, size=(bands, px, px), dtype=np.uint8))
        if overviews:
            dst.build_overviews([2, 4, 8], rasterio.enums.Resampling.nearest)


def make_small_set(root: Path, n: int = 5000) -> Path:
    """n tiny GeoJSON label files (4 polygons, one a bow-tie: every file has a warning) + n 64x64 GeoTIFF chips."""
    want = f"{n}+{n}x64"
    if _cached(root, want):
        return root
    log(f"generating {n} small GeoJSON files and {n} 64x64 GeoTIFFs …")
    for i in range(n):
        write_polygons(root / "labels" / f"chip-{i:05d}.geojson", 4, seed=10_000 + i, bad_every=4)
    # chips side by side on one 10 m UTM grid, 3 bands uint8, uncompressed (~12 kB each)
    for i in range(n):
        origin = (376000.0 + (i % 100) * 640.0, 5200000.0 - (i // 100) * 640.0)
        _raster(root / "imagery" / f"chip-{i:05d}.tif", origin, 64, seed=i, bands=3, overviews=False)
    (root / ".complete").write_text(want)
    return root


def make_big(path: Path, gb: float) -> Path:
    if not path.exists() or path.stat().st_size < gb * 0.9e9 or path.stat().st_size > gb * 1.1e9:
        n = int(gb * 1e9 / PER_FEATURE)
        log(f"generating a single {gb} GB GeoJSON ({n} polygons) …")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_polygons(path, n, seed=99, bad_every=1000)
    return path


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def warm(root: Path) -> int:
    """Read every file once (page cache warm for baseline and terrasnap alike); returns the bytes."""
    total = 0
    for p in all_files(root):
        with open(p, "rb") as fh:
            while chunk := fh.read(8 << 20):
                total += len(chunk)
    return total


# -- processes -----------------------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: str


def run_process(args: Sequence[str], cwd: Path | None = None) -> Run:
    """Run a whole process; wall time and its own peak RSS (wait4: not the max over earlier children)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{stderr[-3000:]}")
    return Run(seconds, usage.ru_maxrss / 1024, stdout)  # ru_maxrss is in kB on Linux


def snapshot(data: Path, store: Path, workdir: Path) -> tuple[Run, dict[str, Any]]:
    run = run_process([TERRASNAP, "snapshot", str(data), "--store", f"file://{store}", "--invalid-geometry",
                       "repair", "--workdir", str(workdir), "--name", "bench"])
    doc = json.loads(run.stdout)
    assert doc["ok"], doc
    return run, doc


def fresh(*dirs: Path) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def runs_of(xs: Sequence[float]) -> str:
    """Every run's figure beside the median: the spread says how noisy the shared machine was."""
    return "" if len(xs) < 2 else f"; runs {', '.join(f'{x:.1f}' for x in xs)} s"


# -- the table -----------------------------------------------------------------------------------------

@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, what: str, value: str, note: str = "", met: bool | None = None) -> None:
        verdict = "" if met is None else ("met" if met else "MISSED")
        self.rows.append((what, value, note, verdict))

    def section(self, title: str) -> None:
        self.rows.append((f"-- {title}", "", "", ""))

    def print(self) -> None:
        w = max(len(r[0]) for r in self.rows)
        v = max(len(r[1]) for r in self.rows)
        log("")
        for what, value, note, verdict in self.rows:
            if what.startswith("-- "):
                log(f"\n{what}")
                continue
            log(f"  {what:<{w}}  {value:>{v}}  {verdict:<6}  {note}")


def secs(x: float) -> str:
    return f"{x:.2f} s"


def mb(x: float) -> str:
    return f"{x:.0f} MB"


# -- sections ------------------------------------------------------------------------------------------

def series(data: Path, state: Path, repeat: int, resnap: bool) -> dict[str, list[Any]]:
    """Per repeat: the naive script, then a first snapshot into an empty store (and, with `resnap`, an
    unchanged re-snapshot with the kept workdir and one from a fresh workdir into the same store)."""
    out: dict[str, list[Any]] = {"naive": [], "first": [], "kept": [], "fresh": []}
    for i in range(repeat):
        log(f"  run {i + 1}/{repeat}: naive script …")
        fresh(state / "naive-out")
        out["naive"].append(run_process([sys.executable, NAIVE, str(data), str(state / "naive-out")]))
        fresh(state / "store", state / "work", state / "work2")
        log(f"  run {i + 1}/{repeat}: terrasnap snapshot …")
        first = snapshot(data, state / "store", state / "work")
        out["first"].append(first)
        if resnap:
            kept = snapshot(data, state / "store", state / "work")
            again = snapshot(data, state / "store", state / "work2")
            assert kept[1]["snapshotID"] == again[1]["snapshotID"] == first[1]["snapshotID"]
            out["kept"].append(kept)
            out["fresh"].append(again)
    fresh(state)
    return out


def report_naive(t: Table, s: dict[str, list[Any]], label: str) -> float:
    naive = med([r.seconds for r in s["naive"]])
    ours = med([r.seconds for r, _ in s["first"]])
    t.add(f"naive script {label} (1 process)", secs(naive), "baseline" + runs_of([r.seconds for r in s["naive"]]))
    t.add(f"terrasnap snapshot {label}, file:// store", secs(ours),
          f"{ours / naive:.2f}x naive (target <= 0.4x); peak RSS {mb(max(r.peak_rss_mb for r, _ in s['first']))}"
          + runs_of([r.seconds for r, _ in s["first"]]),
          ours / naive <= 0.4)
    return ours


def report_resnap(t: Table, s: dict[str, list[Any]], label: str, targets: bool = False) -> None:
    for key, what in (("first", "first snapshot"), ("kept", "unchanged re-snapshot, kept --workdir"),
                      ("fresh", "re-snapshot, fresh workdir, same store")):
        runs = s[key]
        if not runs:
            continue
        stats = runs[len(runs) // 2][1]["stats"]
        t.add(f"{what} {label}", secs(med([r.seconds for r, _ in runs])),
              f"{stats['bytesHashed'] / 1e6:.1f} MB hashed, {stats['objectsPushed']} objects pushed, "
              f"{stats.get('hashCacheHits', 0)} hash-cache hits" + runs_of([r.seconds for r, _ in runs]))


def section_hash(t: Table, root: Path, repeat: int) -> None:
    from terrasnap.engine.hashing import HashCache, hash_many

    files = all_files(root)
    total = warm(root) / 1e6

    def timed(fn: Callable[[], object]) -> float:
        ts = []
        for _ in range(repeat):
            s = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - s)
        return med(ts)

    def hashlib_all_cores(algos: tuple[str, ...]) -> None:
        def one(p: Path) -> None:
            hs = [hashlib.new(a) for a in algos]
            with open(p, "rb") as fh:
                while chunk := fh.read(4 << 20):
                    for h in hs:
                        h.update(chunk)

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            list(pool.map(one, sorted(files, key=lambda p: -p.stat().st_size)))

    t_sum = timed(lambda: subprocess.run(["sha256sum", *map(str, files)], stdout=subprocess.DEVNULL, check=True))
    t_both = timed(lambda: hashlib_all_cores(("sha256", "md5")))
    t_sha = timed(lambda: hashlib_all_cores(("sha256",)))
    t_ours = timed(lambda: hash_many(files, HashCache(None)))
    t.add(f"sha256sum (coreutils, 1 process), {total:.0f} MB", secs(t_sum), f"{total / t_sum:.0f} MB/s")
    t.add("hashlib sha256 + md5, all cores", secs(t_both), f"{total / t_both:.0f} MB/s")
    t.add("hashlib sha256 only, all cores", secs(t_sha), f"{total / t_sha:.0f} MB/s")
    share = t_both / t_ours
    t.add("terrasnap hash_many (sha256 + md5, one read)", secs(t_ours),
          f"{total / t_ours:.0f} MB/s = {share * 100:.0f} % of hashlib sha256+md5 (target >= 85 %)", share >= 0.85)


def section_small(t: Table, root: Path, state: Path, repeat: int) -> None:
    labels = root / "labels"
    nfiles, nbytes = len(all_files(root)), warm(root)
    rows: dict[str, list[float]] = {"naive": [], "add": [], "push": [], "first": [], "rss": [], "kept": []}
    sizes: dict[str, int] = {}
    for i in range(repeat):
        log(f"  run {i + 1}/{repeat}: naive script over the labels …")
        fresh(state)
        state.mkdir(parents=True)
        rows["naive"].append(run_process([sys.executable, NAIVE, str(labels), str(state / "naive-out")]).seconds)
        # dvc add + push of the same folder: a fresh project, the data copied in (untimed: a user has it there)
        proj = state / "dvc"
        proj.mkdir()
        run_process([DVC, "init", "--no-scm", "-q"], cwd=proj)
        run_process([DVC, "remote", "add", "-d", "store", f"file://{state / 'dvc-remote'}"], cwd=proj)
        shutil.copytree(root, proj / "data", ignore=shutil.ignore_patterns(".*"))
        log(f"  run {i + 1}/{repeat}: dvc add + dvc push …")
        rows["add"].append(run_process([DVC, "add", "-q", "data"], cwd=proj).seconds)
        rows["push"].append(run_process([DVC, "push", "-q"], cwd=proj).seconds)
        fresh(proj, state / "dvc-remote")
        log(f"  run {i + 1}/{repeat}: terrasnap snapshot, then unchanged re-snapshot …")
        first, doc = snapshot(root, state / "store", state / "work")
        rows["first"].append(first.seconds)
        rows["rss"].append(first.peak_rss_mb)
        kept, _ = snapshot(root, state / "store", state / "work")
        rows["kept"].append(kept.seconds)
        reports = list((state / "store").rglob("report.json"))
        sizes = {"report": sum(p.stat().st_size for p in reports), "result": len(first.stdout.encode()),
                 "warnings": doc["summary"].get("warnings", 0)}
    fresh(state)
    naive, add, push = med(rows["naive"]), med(rows["add"]), med(rows["push"])
    base = naive + add + push
    ours = med(rows["first"])
    t.add(f"naive script over the labels ({nfiles // 2} GeoJSON)", secs(naive))
    t.add("dvc add of the folder (real DVC)", secs(add))
    t.add("dvc push to a file:// remote", secs(push))
    t.add(f"baseline: script + dvc add + dvc push ({nfiles} files, {nbytes / 1e6:.0f} MB)", secs(base), "baseline")
    t.add("terrasnap first snapshot", secs(ours), f"{ours / base:.2f}x baseline (target <= 0.5x); "
          f"{ours / nfiles * 1000:.1f} ms per file" + runs_of(rows["first"]), ours / base <= 0.5)
    peak = max(rows["rss"])
    t.add("  its peak RSS", mb(peak), "target < 400 MB", peak < 400)
    kept_s = med(rows["kept"])
    t.add("unchanged re-snapshot, kept --workdir", secs(kept_s), "target < 2 s" + runs_of(rows["kept"]), kept_s < 2)
    t.add("report.json in the store", f"{sizes['report'] / 1e3:.0f} kB", f"{sizes['warnings']} warnings reported")
    t.add("result document (stdout JSON)", f"{sizes['result'] / 1e3:.1f} kB")


def section_big(t: Table, path: Path, state: Path, repeat: int) -> None:
    size = path.stat().st_size
    warm(path.parent)
    runs = []
    for i in range(repeat):
        log(f"  run {i + 1}/{repeat}: snapshot of one {size / 1e9:.2f} GB GeoJSON …")
        fresh(state)
        runs.append(snapshot(path.parent, state / "store", state / "work")[0])
    fresh(state)
    s = med([r.seconds for r in runs])
    rate = size / 1e6 / s
    peak = max(r.peak_rss_mb for r in runs)
    t.add(f"snapshot of one {size / 1e9:.2f} GB GeoJSON", secs(s), f"{rate:.1f} MB/s (target >= 100 MB/s)" + runs_of([r.seconds for r in runs]), rate >= 100)
    t.add("  its peak RSS", mb(peak), "target < 600 MB", peak < 600)


# -- main ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed (1: quick)")
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--per-file", type=int, default=25_000)
    ap.add_argument("--rasters", type=int, default=5, help="GeoTIFFs of the hashing set (not snapshotted)")
    ap.add_argument("--raster-px", type=int, default=4096)
    ap.add_argument("--small", type=int, default=5000, help="GeoJSON files (and as many GeoTIFFs) of the small set")
    ap.add_argument("--big-gb", type=float, default=2.0, help="size of the single-file check")
    ap.add_argument("--scale", type=int, default=1, help="also run naive + resnap on N times the data (e.g. 10)")
    ap.add_argument("--generate-only", action="store_true", help="make (and cache) the data, measure nothing")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(SECTIONS):
        ap.error(f"unknown section(s) {sorted(only - set(SECTIONS))}; choose from {','.join(SECTIONS)}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    state = CACHE / "runs"  # stores and workdirs of this run: removed as each section ends
    fresh(state)
    needs_set = only & {"naive", "hash", "resnap"}
    root = make_dataset(CACHE / "dataset", args.files, args.per_file, args.rasters, args.raster_px) \
        if needs_set or args.generate_only else None
    small = make_small_set(CACHE / f"small-{args.small}", args.small) if "small" in only or args.generate_only else None
    big = make_big(CACHE / "big" / "one.geojson", args.big_gb) if "big" in only or args.generate_only else None
    scaled = make_dataset(CACHE / f"dataset-x{args.scale}", args.files * args.scale, args.per_file, 0, 0) \
        if args.scale > 1 and (only & {"naive", "resnap"}) else None
    if args.generate_only:
        return 0
    load0 = os.getloadavg()[0]
    log(f"{os.cpu_count()} cores; median of {args.repeat}; sections {','.join(s for s in SECTIONS if s in only)}")

    t = Table()
    first_1x: float | None = None
    if root is not None and only & {"naive", "resnap"}:
        labels = root / "labels"
        nbytes = warm(labels)
        label = f"({args.files} files, {args.files * args.per_file:,} polygons, {nbytes / 1e6:.0f} MB)"
        log(f"naive/resnap: {label}")
        s = series(labels, state / "set", args.repeat, resnap="resnap" in only)
        if "naive" in only:
            t.section("naive: a full snapshot against the hand-written script (issue 14)")
            first_1x = report_naive(t, s, label)
        if "resnap" in only:
            t.section("resnap: first, unchanged and fresh-workdir snapshots")
            report_resnap(t, s, "(1x)")
    if scaled is not None:
        labels = scaled / "labels"
        nbytes = warm(labels)
        label = f"({args.files * args.scale} files, {args.files * args.scale * args.per_file:,} polygons, " \
                f"{nbytes / 1e6:.0f} MB)"
        log(f"scale x{args.scale}: {label}")
        s = series(labels, state / "scaled", args.repeat, resnap="resnap" in only)
        t.section(f"scale: the same at {args.scale}x the data")
        if "naive" in only:
            ours = report_naive(t, s, label)
            if first_1x:
                t.add(f"  growth of the first snapshot, {args.scale}x data", f"{ours / first_1x:.1f}x",
                      f"linear would be {args.scale}x")
        if "resnap" in only:
            report_resnap(t, s, f"({args.scale}x)")
    if root is not None and "hash" in only:
        log("hash: throughput over the 40-file set and its GeoTIFFs …")
        t.section("hash: in-process hashing throughput, warm page cache")
        section_hash(t, root, args.repeat)
    if small is not None:
        log(f"small: {2 * args.small:,} small files …")
        t.section(f"small: {args.small:,} GeoJSON + {args.small:,} 64x64 GeoTIFFs")
        section_small(t, small, state / "small", args.repeat)
    if big is not None:
        log("big: one large GeoJSON …")
        t.section("big: one large GeoJSON")
        section_big(t, big, state / "big", args.repeat)
    t.print()
    # a shared machine: a load above the core count means other work competed with these figures
    log(f"\nload average (1 min): {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
        f"{os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
