"""A fast GeoJSON reader for the common case, giving exactly what GDAL's reader gives.

GDAL parses GeoJSON at ~35-40 MB/s per core and that was most of a snapshot's CPU. Arrow's JSON
reader, given the geometry's nesting as an explicit schema, parses a FeatureCollection at 2-3x that.
It is used only where its result provably equals GDAL's (attribute names, order and types, WKB bytes,
null geometries, the layer's declared type and CRS); anything else — a legacy `crs` member, mixed
geometry types or dimensions, string feature ids, nested or mixed-type properties, sparse properties,
duplicate keys, numbers a double cannot hold, a GeometryCollection — raises NotSimple and the caller
reads the file with GDAL as before. Which reader ran is recorded per file in the report.

GDAL's rules reproduced here (measured against GDAL 3.x through pyogrio, see tests/unit/test_geojson_arrow.py):
integers are int32 when every value fits, else int64; integers mixed with reals are doubles; a property
that is always null is a string; booleans are booleans; an integer feature `id` is the FID (not an
attribute); fields are in the order of the first feature; WKB is ISO little-endian, 2D.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from terrasnap.engine.validate.geojson import feature_runs, features_start_in

# From this size on a file is read in runs of whole features (read_runs; bounded memory): the Arrow
# table of a whole file costs about 1.5x its size.
MAX_BYTES = 96 << 20

_INT32 = (-(1 << 31), (1 << 31) - 1)
# geometry type -> (ISO WKB code, list nesting of `coordinates` above the positions, parts are full WKB)
_TYPES: dict[str, tuple[int, int]] = {
    "Point": (1, 0), "LineString": (2, 1), "Polygon": (3, 2),
    "MultiPoint": (4, 1), "MultiLineString": (5, 2), "MultiPolygon": (6, 3),
}
_RESERVED = {"wkb_geometry", "geometry", "fid", "ogc_fid"}  # GDAL's own column names


class NotSimple(Exception):
    """The file is outside what this reader reproduces exactly: GDAL reads it (the message says why)."""


@dataclass
class ArrowLayer:
    geometry_type: str  # as GDAL declares it, e.g. "Polygon"
    attributes: pa.Schema
    table: pa.Table  # attribute columns
    wkb: pa.Array  # binary, null where the feature has no geometry

    def batches(self, batch_size: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """Batches of `batch_size` rows, as GDAL's Arrow stream cuts them."""
        n = self.table.num_rows
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            if self.table.num_columns:
                (attrs,) = self.table.slice(start, size).combine_chunks().to_batches()
            else:  # a slice of a table without columns keeps the requested length, whatever is left
                attrs = pa.RecordBatch.from_struct_array(pa.nulls(size, pa.struct([])))
            yield attrs, self.wkb.slice(start, batch_size).to_numpy(zero_copy_only=False)


def read(path: str) -> ArrowLayer:
    """The file's single layer, or NotSimple."""
    size = os.path.getsize(path)
    if size >= MAX_BYTES:
        raise NotSimple("bigger than the fast reader takes at once (read_runs reads it)")
    data = bytearray(size)
    with open(path, "rb") as f:
        if f.readinto(data) != size:
            raise NotSimple("the file changed while it was read")
    start = features_start_in(data)  # the file is in memory already
    if start is None:
        raise NotSimple("not a FeatureCollection whose features array starts in the first MiB")
    first, gtype = _first_feature(data, start)
    layer, _ = _read_features(data, start, gtype, _keys(first), None)
    return layer


class SchemaGrew(NotSimple):
    """A later run of a big file needs wider attribute types than the runs before it (e.g. an integer
    beyond int32): read the file again with these as the floor."""

    def __init__(self, floor: dict[str, pa.DataType]) -> None:
        super().__init__("attribute types widen later in the file")
        self.floor = floor


@dataclass
class Runs:
    """A big file read run by run (geojson.feature_runs), every run's attributes in one schema."""

    geometry_type: str
    attributes: pa.Schema
    floor: dict[str, pa.DataType]
    keys: list[str]  # the first feature's properties: the fields, in GDAL's order
    first: ArrowLayer | None  # the first run, read by read_runs
    rest: Iterator[bytes]

    def batches(self, batch_size: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """Each run cut into batches of `batch_size`, as GDAL cuts each run. Raises SchemaGrew."""
        layer, self.first = self.first, None  # each run is let go once it is read
        while layer is not None:
            yield from layer.batches(batch_size)
            run = next(self.rest, None)
            if run is None:
                return
            data = bytearray(run)
            layer, _ = _read_features(data, data.index(b"[") + 1, self.geometry_type, self.keys, self.floor)


def read_runs(path: str, start: int, run_bytes: int, floor: dict[str, pa.DataType] | None = None) -> Runs:
    """A big FeatureCollection (no `crs` member) as Runs; the first run is read here (it sets the schema)."""
    with open(path, "rb") as f:
        head = bytearray(f.read(start + (8 << 20)))
    first_feature, gtype = _first_feature(head, start)
    keys = _keys(first_feature)
    runs = feature_runs(path, start, run_bytes)
    first = bytearray(next(runs, b'{"type":"FeatureCollection","features":[]}'))
    layer, floor = _read_features(first, first.index(b"[") + 1, gtype, keys, floor)
    return Runs(gtype, layer.attributes, floor, keys, layer, runs)


def _keys(first: dict[str, object]) -> list[str]:
    props = first.get("properties")
    return list(props) if isinstance(props, dict) else []


def _read_features(data: bytearray, start: int, gtype: str, keys: list[str],
                   floor: dict[str, pa.DataType] | None) -> tuple[ArrowLayer, dict[str, pa.DataType]]:
    props_schema = None
    for _ in range(2):
        table = _parse(data, start, gtype, props_schema)
        props_schema = _timestamps_as_strings(table)
        if props_schema is None:
            break
    else:  # pragma: no cover - a re-read with explicit string types cannot infer timestamps again
        raise NotSimple("date-like strings")
    return _convert(table, gtype, keys, floor)


def _first_feature(data: bytearray, start: int, look: int = 64) -> tuple[dict[str, object], str]:
    """The first feature (its properties give GDAL's field order) and the first geometry's type among
    the first `look` features (it sets the nesting the parser expects)."""
    window = 1 << 16
    while True:
        text = data[start:start + window].decode("utf-8", errors="replace")
        try:
            return _first_of(text, look)
        except (ValueError, RecursionError):
            if start + window >= len(data) or window >= 64 << 20:
                raise NotSimple("the first features do not decode on their own") from None
            window *= 8  # a feature runs past the window


def _first_of(text: str, look: int) -> tuple[dict[str, object], str]:
    decoder = json.JSONDecoder()
    i, first, gtype = 0, None, None
    for _ in range(look):
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if text[i:i + 1] != "{":
            break
        obj, i = decoder.raw_decode(text, i)
        first = obj if first is None else first
        geom = obj.get("geometry") if isinstance(obj, dict) else None
        if isinstance(geom, dict):
            gtype = geom.get("type")
            break
    if not isinstance(first, dict) or gtype not in _TYPES:
        raise NotSimple(f"first geometry type {gtype!r}")
    return first, str(gtype)


def _coords_type(depth: int) -> pa.DataType:
    t: pa.DataType = pa.list_(pa.float64())
    for _ in range(depth):
        t = pa.list_(t)
    return t


def _parse(data: bytearray, start: int, gtype: str, props: pa.DataType | None) -> pa.Table:
    geometry = pa.struct([("type", pa.string()), ("coordinates", _coords_type(_TYPES[gtype][1]))])
    fields = [("type", pa.string()), ("geometry", geometry)]
    if props is not None:
        fields.append(("properties", props))
    schema = pa.schema(fields)
    ropts = pj.ReadOptions(use_threads=False, block_size=len(data) + 1)
    popts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    # One feature per line (what GDAL, geopandas and most writers produce): the features array as
    # NDJSON. A `,\n` anywhere else leaves a line with unbalanced brackets, which cannot parse.
    end = data.rfind(b"]")
    if end > start:
        lines = _one_per_line(data, start, end)
        try:
            return pj.read_json(pa.BufferReader(lines), read_options=ropts, parse_options=popts)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    # Any layout: the whole document as one JSON value.
    whole = pa.schema([("type", pa.string()), ("features", pa.list_(pa.struct(fields)))])
    popts = pj.ParseOptions(explicit_schema=whole, unexpected_field_behavior="infer", newlines_in_values=True)
    try:
        doc = pj.read_json(pa.BufferReader(bytes(data)), read_options=ropts, parse_options=popts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise NotSimple(f"Arrow's JSON reader: {str(exc).splitlines()[0][:120]}") from None
    if doc.num_rows != 1 or doc.column("type").to_pylist() != ["FeatureCollection"]:
        raise NotSimple("not one FeatureCollection")
    feats = doc.column("features").combine_chunks()
    if feats.null_count:
        raise NotSimple("features is null")
    return pa.Table.from_struct_array(pc.list_flatten(feats))


def _one_per_line(data: bytearray, start: int, end: int) -> pa.Buffer:
    """data[start:end] with every `,` that ends a line blanked (in a copy): `{...},\n{...}` → NDJSON."""
    buf = np.frombuffer(data, np.uint8)[start:end].copy()
    if len(buf) > 1:
        commas = np.flatnonzero((buf[:-1] == 0x2C) & (buf[1:] == 0x0A))
        buf[commas] = 0x20
    return pa.py_buffer(buf)


def _timestamps_as_strings(table: pa.Table) -> pa.DataType | None:
    """Arrow infers timestamps from date-like strings; GDAL (DATE_AS_STRING) keeps the text. The
    properties' type with those fields as strings, for a second read; None when there are none."""
    if "properties" not in table.column_names:
        return None
    ptype = table.schema.field("properties").type
    if not pa.types.is_struct(ptype):
        return None
    fields = list(ptype)
    if not any(pa.types.is_timestamp(f.type) or pa.types.is_date(f.type) for f in fields):
        return None
    return pa.struct([pa.field(f.name, pa.string()) if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)
                      else f for f in fields])


def _convert(table: pa.Table, gtype: str, keys: list[str],
             floor: dict[str, pa.DataType] | None) -> tuple[ArrowLayer, dict[str, pa.DataType]]:
    names = set(table.column_names)
    extra = names - {"type", "geometry", "properties", "id"}
    if extra:
        raise NotSimple(f"feature member(s) {sorted(extra)}")
    ftype = table.column("type")
    if ftype.null_count or not pc.all(pc.equal(ftype, "Feature")).as_py():
        raise NotSimple("a member of features is not a Feature")
    if "id" in names and not pa.types.is_integer(table.schema.field("id").type):
        raise NotSimple("feature ids that are not integers (GDAL makes them an attribute)")
    attrs, seen = _attributes(table.column("properties") if "properties" in names else None, keys,
                              table.num_rows, floor)
    wkb = _wkb(table.column("geometry").combine_chunks(), gtype)
    return ArrowLayer(gtype, attrs.schema, attrs, wkb), seen


def _kind(col: pa.Array) -> pa.DataType:
    """The GDAL field type one run's values call for (null: no value yet)."""
    t = col.type
    if pa.types.is_null(t) or col.null_count == len(col):
        return pa.null()
    if pa.types.is_int64(t):
        mm = pc.min_max(col)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        return pa.int32() if lo >= _INT32[0] and hi <= _INT32[1] else pa.int64()
    if pa.types.is_float64(t) or pa.types.is_boolean(t) or pa.types.is_string(t):
        return t
    raise NotSimple(f"a property of type {t} (GDAL writes JSON text)")


_NUMERIC = [pa.int32(), pa.int64(), pa.float64()]


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """GDAL's type over the whole file from two parts' types: int32 < int64 < double; null is no value."""
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if a in _NUMERIC and b in _NUMERIC:
        return max(a, b, key=_NUMERIC.index)
    raise NotSimple("a property of different JSON types (GDAL makes it a string or JSON text)")


def _attributes(props: pa.ChunkedArray | None, keys: list[str], n: int,
                floor: dict[str, pa.DataType] | None) -> tuple[pa.Table, dict[str, pa.DataType]]:
    """The attribute columns in GDAL's types (`floor`: at least these, from earlier runs), and the types
    seen so far. Fields are the first feature's properties, in its order."""
    lowered = [k.lower() for k in keys]
    if len(set(lowered)) != len(keys) or any(not k or k in _RESERVED for k in lowered):
        raise NotSimple("property names GDAL would rename")
    cols: dict[str, pa.Array] = {}
    if props is not None and not pa.types.is_null(props.type):
        if not pa.types.is_struct(props.type):
            raise NotSimple("properties is not an object")
        arr = props.combine_chunks()
        names = [f.name for f in props.type]
        # GDAL orders a field first seen in a later feature its own way
        if (floor is None and names != keys[:len(names)]) or not set(names) <= set(keys):
            raise NotSimple("properties differ between features (GDAL orders sparse fields its own way)")
        parent_nulls = arr.is_null() if arr.null_count else None
        for i, name in enumerate(names):
            col = arr.field(i)
            if parent_nulls is not None:  # properties: null -> every attribute null
                col = pc.if_else(parent_nulls, pa.nulls(len(col), col.type), col)
            cols[name] = col
    seen = {k: _merge(floor.get(k, pa.null()) if floor else pa.null(),
                      _kind(cols[k]) if k in cols else pa.null()) for k in keys}
    if floor is not None and seen != floor:
        raise SchemaGrew(seen)
    out_cols, fields = [], []
    for k in keys:
        t = pa.string() if pa.types.is_null(seen[k]) else seen[k]  # GDAL: a field never set is a string
        col = cols.get(k)
        out_cols.append(pa.nulls(n, t) if col is None or pa.types.is_null(col.type) else
                        col if col.type == t else col.cast(t))
        fields.append(pa.field(k, t))
    if not keys:
        return pa.Table.from_struct_array(pa.nulls(n, pa.struct([]))), seen  # n rows, no columns
    return pa.Table.from_arrays(out_cols, schema=pa.schema(fields)), seen


def _wkb(geom: pa.StructArray, gtype: str) -> pa.Array:
    """ISO little-endian 2D WKB of every geometry, null where there is none, laid out in numpy."""
    n = len(geom)
    if pa.types.is_null(geom.type) or {f.name for f in geom.type} != {"type", "coordinates"}:
        raise NotSimple("geometry members other than type and coordinates")
    coords = geom.field("coordinates")
    valid = np.ones(n, bool)
    for arr in (geom, coords):
        if arr.null_count:
            valid &= ~np.asarray(arr.is_null())
    if not valid.any():
        raise NotSimple("no geometries")
    types = geom.field("type").filter(pa.array(valid))
    if types.null_count or not pc.all(pc.equal(types, gtype)).as_py():
        raise NotSimple("mixed geometry types")
    code, depth = _TYPES[gtype]
    offsets: list[np.ndarray] = []  # per list level, shifted to start at 0
    level: pa.Array = coords
    lo, hi = 0, n
    for k in range(depth + 1):
        if k and level.slice(lo, hi - lo).null_count:  # e.g. [null] or [[1, 2], null]
            raise NotSimple("null coordinate lists")
        o = np.asarray(level.offsets, np.int64)[lo:hi + 1]
        if k and k < depth and np.any(np.diff(o) == 0):  # GDAL declares e.g. a MultiPolygon with an empty part 3D
            raise NotSimple("empty parts or rings")
        offsets.append(o - o[0])
        lo, hi = int(o[0]), int(o[-1])
        level = level.values
    pos = np.diff(offsets.pop())  # the numbers in each position (depth 0: in each geometry)
    if depth == 0:
        pos = pos[valid]
    if level.slice(lo, hi - lo).null_count or not np.all(pos == 2):
        raise NotSimple("positions that are not 2D")
    flat = np.ascontiguousarray(level.to_numpy(zero_copy_only=False)[lo:hi], np.float64)
    if depth == 0:
        return _points(n, valid, flat)
    return _layout(n, valid, code, offsets, flat)


def _points(n: int, valid: np.ndarray, flat: np.ndarray) -> pa.Array:
    rec = np.zeros(int(valid.sum()), dtype=np.dtype([("o", "u1"), ("t", "<u4"), ("xy", "<f8", 2)]))
    rec["o"], rec["t"], rec["xy"] = 1, 1, flat.reshape(-1, 2)
    sizes = np.where(valid, 21, 0)
    return _binary(n, valid, sizes, rec.view(np.uint8))


# bytes each list level writes before its children (9: byte order + type + count; 4: count), per type
_PREFIX = {2: [9], 3: [9, 4], 4: [9], 5: [9, 9], 6: [9, 9, 4]}
_PART = {4: 1, 5: 2, 6: 3}  # a multi's part type


def _layout(n: int, valid: np.ndarray, code: int, offsets: list[np.ndarray], flat: np.ndarray) -> pa.Array:
    """Every node's size bottom-up, every node's start top-down, then the headers at their starts and the
    coordinates, in order, in every byte left over."""
    prefix = _PREFIX[code]
    item = 21 if code == 4 else 16  # a MultiPoint's points are whole WKB points
    npos = int(offsets[-1][-1])
    sizes: list[np.ndarray] = [np.empty(0, np.int64)] * (len(offsets) + 1)
    sizes[-1] = np.full(npos, item, np.int64)
    for k in range(len(offsets) - 1, -1, -1):
        cs = np.concatenate(([0], np.cumsum(sizes[k + 1])))
        sizes[k] = prefix[k] + cs[offsets[k][1:]] - cs[offsets[k][:-1]]
    sizes[0] = np.where(valid, sizes[0], 0)
    starts = [np.concatenate(([0], np.cumsum(sizes[0])))[:-1]]
    for k, o in enumerate(offsets):
        cs = np.concatenate(([0], np.cumsum(sizes[k + 1])))
        parent = np.repeat(np.arange(len(o) - 1), np.diff(o))
        starts.append(starts[k][parent] + prefix[k] + cs[:-1] - cs[o[:-1]][parent])
    total = int(sizes[0].sum())
    out = np.zeros(total, np.uint8)
    header = np.zeros(total, bool)
    for k, o in enumerate(offsets):
        st, count = starts[k], np.diff(o)
        if k == 0:
            st, count = st[valid], count[valid]
        if prefix[k] == 9:
            _put(out, header, st, np.uint8(1), 1)
            _put(out, header, st + 1, np.uint32(code if k == 0 else _PART[code]), 4)
            _put(out, header, st + 5, count.astype(np.uint32), 4)
        else:
            _put(out, header, st, count.astype(np.uint32), 4)
    if code == 4:
        _put(out, header, starts[-1], np.uint8(1), 1)
        _put(out, header, starts[-1] + 1, np.uint32(1), 4)
    out[~header] = flat.view(np.uint8)
    return _binary(n, valid, sizes[0], out)


def _put(out: np.ndarray, mask: np.ndarray, at: np.ndarray, values: np.ndarray | np.generic, width: int) -> None:
    """Little-endian values of `width` bytes at the byte offsets `at`, marked as header bytes."""
    if width == 1:
        out[at] = values
        mask[at] = True
        return
    lanes = np.broadcast_to(np.asarray(values, "<u4"), at.shape).astype("<u4").view(np.uint8).reshape(-1, 4)
    for k in range(4):  # one scatter per byte: no (n, 4) index array
        out[at + k] = lanes[:, k]
        mask[at + k] = True


def _binary(n: int, valid: np.ndarray, sizes: np.ndarray, data: np.ndarray) -> pa.Array:
    offs = np.concatenate(([0], np.cumsum(sizes)))
    large = offs[-1] >= (1 << 31)
    nulls = int((~valid).sum())
    vbuf = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(pa.large_binary() if large else pa.binary(), n,
                                 [vbuf, pa.py_buffer(offs.astype(np.int64 if large else np.int32)),
                                  pa.py_buffer(data)], null_count=nulls)
