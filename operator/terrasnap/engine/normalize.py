"""Normalized output: one GeoParquet 1.1 file per vector layer, written batch by batch.

The file must be byte-identical for the same input and policy (it is content-addressed), so every
writer setting is fixed, nothing time-dependent is written, and the `geo` metadata is canonical JSON.
Geometry is WKB in the target CRS (x = easting/longitude, as GeoParquet requires), plus a `bbox`
struct column declared as the covering, so readers can filter row groups without parsing WKB.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from terrasnap.engine.formats import GEOPARQUET_TYPE_NAMES, MULTI_OF

GEOPARQUET_VERSION = "1.1.0"
GEOMETRY_COLUMN = "geometry"
BBOX_COLUMN = "bbox"
# Fixed writer settings: changing any of them changes every snapshot's bytes (and ids).
WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,  # measured: level 3 costs ~40% more CPU for the same size on WKB
    # use_dictionary: attribute columns only (set per file): WKB and bbox values are nearly all
    # distinct, so trying a dictionary on them only burns CPU
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "write_page_index": False,
    # The `geo` metadata is only known at the end (bbox, types) and is added to the footer then. A stored
    # ARROW:schema would shadow it (pyarrow takes schema metadata from ARROW:schema, so readers would
    # see no `geo`), so the Arrow schema is not stored; Parquet's logical types carry what we write.
    "store_schema": False,
}
BBOX_TYPE = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])


def normalized_relpath(rel_path: str, layer: str | None = None, layers: int = 1) -> str:
    """Where a layer's GeoParquet goes, relative to the normalized root: 'labels/a.geojson' ->
    'labels/a.geojson.parquet'; a multi-layer file gets one file per layer:
    'x/b.gpkg' layer 'roads' -> 'x/b.gpkg.roads.parquet'. Keeping the source extension keeps
    'a.geojson' and 'a.gpkg' apart."""
    if layers > 1 and layer is not None:
        return f"{rel_path}.{safe_layer_name(layer)}.parquet"
    return f"{rel_path}.parquet"


def safe_layer_name(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer) or "_"


def _projjson(crs: CRS) -> dict[str, Any]:
    return json.loads(_projjson_text(crs.srs)) if crs.srs else crs.to_json_dict()


@functools.lru_cache(maxsize=32)
def _projjson_text(srs: str) -> str:
    # the target CRS's PROJJSON, once per process rather than once per layer
    return json.dumps(CRS.from_user_input(srs).to_json_dict())


def geo_metadata(crs: CRS, geometry_types: list[str], bbox: list[float] | None) -> dict[str, Any]:
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted(geometry_types),
        "crs": _projjson(crs),
        "covering": {"bbox": {k: [BBOX_COLUMN, k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}


# Fixed WKB flavour for geometries we encode: ISO, little-endian, Z kept.
WKB_OPTIONS: dict[str, Any] = {"byte_order": 1, "flavor": "iso", "output_dimension": 3}


def encode_wkb(geoms: np.ndarray) -> pa.Array:
    return pa.array(shapely.to_wkb(geoms, **WKB_OPTIONS), pa.binary())


_MULTI_OF = MULTI_OF


def _promotion(types: set[str]) -> tuple[int, int, str] | None:
    """(single WKB code, multi WKB code, multi name) when a layer has exactly a type and its multi."""
    for single, (multi, scode, mcode) in _MULTI_OF.items():
        for suffix, offset in (("", 0), (" Z", 1000)):  # ISO WKB: Z types are 1000 higher
            if types == {single + suffix, multi + suffix}:
                return scode + offset, mcode + offset, multi + suffix
    return None


def _attribute_name(name: str) -> str:
    # Our own two columns win; a source attribute with the same name gets a trailing underscore.
    while name in (GEOMETRY_COLUMN, BBOX_COLUMN):
        name += "_"
    return name


# A layer's first row groups are held in memory up to this size, so a layer that turns out to mix a type
# and its multi (repaired bow-ties) is promoted before it is written instead of rewritten after.
HOLD_BYTES = 32 << 20


class GeoParquetWriter:
    """Streams batches into `<path>.partial`; `commit()` renames it into place, `abort()` removes it,
    so a reader never sees a half-written or rejected layer."""

    def __init__(self, path: str | os.PathLike[str], attributes: pa.Schema, crs: CRS) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.crs = crs
        self._names = [f.name for f in attributes]
        fields = [pa.field(_attribute_name(f.name), f.type, f.nullable) for f in attributes]
        self.schema = pa.schema([*fields, pa.field(GEOMETRY_COLUMN, pa.binary()),
                                 pa.field(BBOX_COLUMN, BBOX_TYPE)])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dictionary = [f.name for f in fields if not pa.types.is_nested(f.type)] or False
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.partial, self.schema, **WRITER_OPTIONS,
                                                                 use_dictionary=self._dictionary)
        self.promoted = 0  # singles rewritten as multis at commit (see _promote_mixed)
        self._held: list[pa.Table] | None = []  # row groups not written yet (None: streaming)
        self._held_bytes = 0
        self._types: set[str] = set()
        self._bbox: list[float] | None = None
        self.rows = 0

    def write(self, attributes: pa.Table | pa.RecordBatch, geoms: np.ndarray, wkb: Any = None) -> None:
        """attributes: the kept rows' attribute columns (in the schema's order); geoms: their
        shapely geometries in the target CRS, none missing or empty. wkb (optional): their WKB when
        already at hand (an Arrow binary array or an object array of bytes), which saves encoding."""
        if len(geoms) == 0:
            return
        assert self._writer is not None, "writer already closed"
        type_ids = shapely.get_type_id(geoms)
        has_z = shapely.has_z(geoms)
        for t, z in set(zip(type_ids.tolist(), has_z.tolist(), strict=True)):
            self._types.add(GEOPARQUET_TYPE_NAMES[t] + (" Z" if z else ""))
        bounds = shapely.bounds(geoms)
        b = [float(bounds[:, 0].min()), float(bounds[:, 1].min()), float(bounds[:, 2].max()),
             float(bounds[:, 3].max())]
        self._bbox = b if self._bbox is None else [min(self._bbox[0], b[0]), min(self._bbox[1], b[1]),
                                                   max(self._bbox[2], b[2]), max(self._bbox[3], b[3])]
        if wkb is None:
            wkb = encode_wkb(geoms)
        elif not isinstance(wkb, pa.Array | pa.ChunkedArray):
            wkb = pa.array(wkb, pa.binary())
        bbox = pa.StructArray.from_arrays([pa.array(bounds[:, k], pa.float64()) for k in range(4)],
                                          fields=list(BBOX_TYPE))
        columns = [attributes.column(name) for name in self._names]
        if wkb.type != pa.binary():
            wkb = wkb.cast(pa.binary())
        table = pa.Table.from_arrays([*columns, wkb, bbox], schema=self.schema)
        self.rows += len(table)
        if self._held is not None:
            self._held.append(table)
            self._held_bytes += table.nbytes
            if self._held_bytes > HOLD_BYTES:
                self._release()  # this table included
            return
        self._writer.write_table(table, row_group_size=max(len(table), 1))

    def _release(self) -> None:
        """Write the held row groups and stream from now on."""
        assert self._writer is not None and self._held is not None
        for table in self._held:
            self._writer.write_table(table, row_group_size=max(len(table), 1))
        self._held, self._held_bytes = None, 0

    @property
    def geometry_types(self) -> list[str]:
        return sorted(self._types)

    @property
    def bbox(self) -> list[float] | None:
        return self._bbox

    def commit(self) -> Path:
        assert self._writer is not None, "writer already closed"
        promotion = _promotion(self._types)
        if promotion is not None and self._held is not None:
            # Polygon and MultiPolygon in one layer (typically: repaired bow-ties): one type is what a
            # consumer wants; the layer is still in memory, so promote it before writing.
            self._held = [self._promote_table(t, *promotion[:2]) for t in self._held]
            self._types = {promotion[2]}
        elif promotion is not None:
            # ... or rewrite what was streamed
            self._writer.close()
            self._writer = None
            self._promote_mixed(*promotion)
        assert self._writer is not None
        if self._held is not None:
            self._release()
        meta = geo_metadata(self.crs, self.geometry_types, self._bbox)
        self._writer.add_key_value_metadata({"geo": json.dumps(meta, sort_keys=True, separators=(",", ":"))})
        self._writer.close()
        self._writer = None
        os.replace(self.partial, self.path)
        return self.path

    def _promote_mixed(self, single_code: int, multi_code: int, multi_name: str) -> None:
        """Rewrite `partial` row group by row group with every single geometry as a one-part multi.
        In little-endian WKB that is a 9-byte header in front of the geometry's own WKB, so this runs
        in Arrow compute without parsing geometries; bboxes do not change."""
        first = self.partial.with_name(self.partial.name + ".1")
        os.replace(self.partial, first)
        src = pq.ParquetFile(first)
        self._writer = pq.ParquetWriter(self.partial, src.schema_arrow, **WRITER_OPTIONS,
                                        use_dictionary=self._dictionary)
        try:
            for i in range(src.num_row_groups):
                table = self._promote_table(src.read_row_group(i), single_code, multi_code)
                self._writer.write_table(table, row_group_size=max(len(table), 1))
        finally:
            first.unlink(missing_ok=True)
        self._types = {multi_name}

    def _promote_table(self, table: pa.Table, single_code: int, multi_code: int) -> pa.Table:
        """In little-endian WKB a one-part multi is a 9-byte header in front of the single's own WKB."""
        prefix = pa.scalar(b"\x01" + int(multi_code).to_bytes(4, "little") + (1).to_bytes(4, "little"), pa.binary())
        single = pa.scalar(int(single_code).to_bytes(4, "little"), pa.binary())
        k = table.schema.get_field_index(GEOMETRY_COLUMN)
        col = table.column(k).combine_chunks()
        if pc.all(pc.equal(pc.binary_slice(col, 0, 1), pa.scalar(b"\x01", pa.binary()))).as_py():
            mask = pc.equal(pc.binary_slice(col, 1, 5), single)
            self.promoted += pc.sum(mask).as_py() or 0
            col = pc.if_else(mask, pc.binary_join_element_wise(prefix, col, pa.scalar(b"", pa.binary())), col)
        else:  # big-endian WKB passed through from the input: re-encode with shapely
            col = self._promote_with_shapely(col, single_code)
        return table.set_column(k, table.schema.field(k), col)

    def _promote_with_shapely(self, col: pa.Array, single_code: int) -> pa.Array:
        geoms = shapely.from_wkb(col.to_numpy(zero_copy_only=False))
        single_id = {1: 0, 2: 1, 3: 3}[single_code % 1000]
        maker = {0: shapely.multipoints, 1: shapely.multilinestrings, 3: shapely.multipolygons}[single_id]
        sel = np.flatnonzero(shapely.get_type_id(geoms) == single_id)
        if len(sel):
            geoms[sel] = maker(geoms[sel], indices=np.arange(len(sel)))
        self.promoted += len(sel)
        return encode_wkb(geoms)

    def abort(self) -> None:
        self._held = None
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> GeoParquetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self.abort()
