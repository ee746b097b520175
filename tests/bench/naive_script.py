"""The hand-written script terrasnap replaces, as the documents describe it: the baseline of `make bench`.

    python tests/bench/naive_script.py DATA OUT

One process, file by file: every vector file is read with `geopandas.read_file` (default engine), checked
with `is_valid`, its invalid geometries replaced by `buffer(0)`, and written as GeoParquet (`to_parquet`);
every file's raw bytes are hashed (sha256); last, a Parquet manifest of (path, size, sha256).
It is deliberately naive (buffer(0) keeps one lobe of a bow-tie; see PITFALLS): it is what users compare
against, not something to copy. Imports only what such a script would import.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def run(data: Path, out: Path) -> dict[str, int]:
    import geopandas as gpd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, int, str]] = []
    features = repaired = 0
    for path in sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(data).as_posix()
        if path.suffix.lower() in VECTOR_SUFFIXES:
            gdf = gpd.read_file(path)
            invalid = ~gdf.is_valid
            if invalid.any():
                gdf.loc[invalid, "geometry"] = gdf.loc[invalid, "geometry"].buffer(0)
            target = out / (rel + ".parquet")
            target.parent.mkdir(parents=True, exist_ok=True)
            gdf.to_parquet(target)
            features += len(gdf)
            repaired += int(invalid.sum())
        rows.append((rel, path.stat().st_size, sha256_file(path)))
    paths, sizes, digests = zip(*rows, strict=True) if rows else ((), (), ())
    pq.write_table(pa.table({"path": list(paths), "size": list(sizes), "sha256": list(digests)}),
                   out / "manifest.parquet")
    return {"files": len(rows), "features": features, "repaired": repaired}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    t = time.perf_counter()
    stats = run(Path(argv[0]), Path(argv[1]))
    print(f"naive: {stats} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
