"""Vector validation + normalization of one file, in one streaming pass.

Every layer is read in Arrow batches (GDAL via pyogrio; GeoParquet via pyarrow, which this GDAL
build cannot read), each batch goes through the geometry rules (rules.py) and straight into the
layer's GeoParquet writer, so memory stays at a few batches whatever the file size.
The normalized file is committed only if the whole file passed (no errors).
"""

from __future__ import annotations

import functools
import json
import os
import queue
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from terrasnap.engine import gdal_env
from terrasnap.engine.formats import declared_multi, vector_format
from terrasnap.engine.normalize import WKB_OPTIONS, GeoParquetWriter, normalized_relpath
from terrasnap.engine.validate import geojson_arrow
from terrasnap.engine.validate.content import Refused, safe_open_path
from terrasnap.engine.validate.findings import Collector, Finding, count_map, sort_key
from terrasnap.engine.validate.geojson import feature_runs, features_start
from terrasnap.engine.validate.policy import Policy
from terrasnap.engine.validate.rules import (
    LayerContext,
    LayerStats,
    check_batch,
    crs_is_same,
    finish_layer,
    fmt,
    make_transformer,
)

BATCH_SIZE = 65_536
_HEAD_BYTES = 1 << 20
_TAIL_BYTES = 1 << 16
_WGS84 = CRS.from_epsg(4326)


def is_vector_path(path: str | os.PathLike[str]) -> bool:
    return vector_format(os.fspath(path)) is not None


def crs_fields(crs: CRS | None) -> dict[str, Any]:
    """WKT2, PROJJSON (compact text) and EPSG (None when the CRS has no EPSG code)."""
    if crs is None:
        return {"crs_wkt": None, "crs_projjson": None, "epsg": None}
    return dict(_crs_fields_of(crs.srs)) if crs.srs else _crs_fields_now(crs)


@functools.lru_cache(maxsize=64)
def _crs_fields_of(srs: str) -> tuple[tuple[str, Any], ...]:
    # the same few CRSs (EPSG:4326, the target) come up for every file: ~1 ms each to describe
    return tuple(_crs_fields_now(CRS.from_user_input(srs)).items())


def _crs_fields_now(crs: CRS) -> dict[str, Any]:
    return {"crs_wkt": crs.to_wkt("WKT2_2019"),
            "crs_projjson": json.dumps(crs.to_json_dict(), sort_keys=True, separators=(",", ":")),
            "epsg": crs.to_epsg()}


@dataclass
class LayerResult:
    name: str | None
    crs_wkt: str | None = None  # source CRS (declared or assumed)
    crs_projjson: str | None = None
    epsg: int | None = None
    crs_origin: str | None = None  # "declared" | "assumed" | None (missing)
    features: int = 0
    written: int = 0
    null: int = 0
    empty: int = 0
    invalid: int = 0
    repaired: int = 0
    skipped: int = 0
    rejected: int = 0
    collapsed: int = 0
    outside_footprint: int = 0
    geometry_types: list[str] = field(default_factory=list)  # of the normalized output
    source_geometry_types: dict[str, int] = field(default_factory=dict)
    bbox: list[float] | None = None  # target CRS
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    type_changes: dict[str, int] = field(default_factory=dict)
    area_before: float = 0.0
    area_after: float = 0.0
    reader: str | None = None  # "arrow" (the fast GeoJSON reader) or "gdal"
    reader_note: str | None = None  # why GDAL read a GeoJSON
    target_crs_wkt: str | None = None  # CRS of the normalized output (the policy's target)
    target_crs_projjson: str | None = None
    target_epsg: int | None = None
    output: str | None = None  # absolute path of the committed GeoParquet
    output_relpath: str | None = None  # its path relative to the normalized root

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in sorted(self.__dataclass_fields__)}


@dataclass
class VectorResult:
    path: str  # relative path (as reported)
    format: str | None = None
    layers: list[LayerResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    kind: str = "vector"

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> int:
        return sum(f.count for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(f.count for f in self.findings if f.severity == "warning")

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return count_map(self.findings)

    def _sum(self, attr: str) -> int:
        return sum(getattr(layer, attr) for layer in self.layers)

    def summary(self) -> dict[str, Any]:
        """File-level figures for the manifest row (contracts.md): CRS of the first layer that has one
        (layers in different CRSs are reported by check_vector_set), sums and unions over layers."""
        crs_layer = next((la for la in self.layers if la.crs_wkt), None)
        boxes = [la.bbox for la in self.layers if la.bbox]
        reasons: Counter[str] = Counter()
        for la in self.layers:
            reasons.update(la.invalid_reasons)
        return {
            "crs_wkt": crs_layer.crs_wkt if crs_layer else None,
            "crs_projjson": crs_layer.crs_projjson if crs_layer else None,
            "epsg": crs_layer.epsg if crs_layer else None,
            "features": self._sum("features"),
            "written": self._sum("written"),
            "geometry_types": sorted({t for la in self.layers for t in la.geometry_types}),
            "bbox": [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                     max(b[3] for b in boxes)] if boxes else None,
            "invalid": self._sum("invalid"),
            "repaired": self._sum("repaired"),
            "skipped": self._sum("skipped"),
            "invalid_reasons": json.dumps(dict(sorted(reasons.items())), sort_keys=True),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "kind": self.kind, "format": self.format, "ok": self.ok,
            "counts": self.counts, "summary": self.summary(),
            "layers": [la.to_dict() for la in self.layers],
            "findings": [f.to_dict() for f in sorted(self.findings, key=sort_key)],
        }


# --- reading ----------------------------------------------------------------------------------------

@dataclass
class _Layer:
    name: str | None
    crs: CRS | None
    geometry_type: str | None  # declared, e.g. "MultiPolygon", "Unknown", None (no geometry)
    attributes: pa.Schema
    batches: Iterator[tuple[pa.RecordBatch, np.ndarray]]
    reader: str = "gdal"
    reader_note: str | None = None
    in_memory: bool = False  # parsed whole at open: no reader thread to overlap with


def _ogr_layers(path: str) -> list[str]:
    return [str(name) for name, _ in gdal_env.ogr().list_layers(path)]


# GeoJSON: keep dates and arrays as the text they are. Type guesses differ between a whole file and
# a run of it (chunked reading), and a normalization must not rewrite "2020/01/02" as 2020-01-02.
GEOJSON_OPEN_OPTIONS = {"DATE_AS_STRING": "YES", "ARRAY_AS_STRING": "YES"}
# Above this size a GeoJSON is read in runs of whole features (see geojson.py: bounded memory), by
# either reader, so both cut the same batches.
GEOJSON_CHUNKED_MIN_BYTES = geojson_arrow.MAX_BYTES
GEOJSON_RUN_BYTES = 16 << 20


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A run's attribute columns in the whole file's schema: same order, cast, missing ones null."""
    cols = []
    for fld in schema:
        i = batch.schema.get_field_index(fld.name)
        if i < 0:
            cols.append(pa.nulls(len(batch), fld.type))
        else:
            c = batch.column(i)
            cols.append(c if c.type == fld.type else c.cast(fld.type))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def _open_fast_geojson(path: str, batch_size: int, crs_member: tuple[bool, Any], reading: _Reading) -> _Layer | str:
    """The file through the fast reader (geojson_arrow), or why not (then GDAL reads it)."""
    if os.environ.get("TERRASNAP_GEOJSON_READER", "auto") == "gdal":
        return "TERRASNAP_GEOJSON_READER=gdal"
    if crs_member[0]:
        return "legacy crs member"
    whole = os.path.getsize(path) < geojson_arrow.MAX_BYTES
    try:
        if whole:
            fast = geojson_arrow.read(path)
            gtype, attrs, batches = fast.geometry_type, fast.attributes, fast.batches(batch_size)
        else:
            start = features_start(path)
            if start is None:
                return "not a FeatureCollection whose features array starts in the first MiB"
            runs = geojson_arrow.read_runs(path, start, GEOJSON_RUN_BYTES, reading.floor)
            gtype, attrs, batches = runs.geometry_type, runs.attributes, runs.batches(batch_size)
    except geojson_arrow.NotSimple as exc:
        return str(exc)
    # GDAL's CRS for a GeoJSON without a crs member (2D: the fast reader takes no Z)
    return _Layer(None, CRS.from_user_input("EPSG:4326"), gtype, attrs, batches, reader="arrow", in_memory=whole)


def _open_ogr(stack: ExitStack, path: str, layer: str | None, batch_size: int, geojson: bool = False,
              crs_member: tuple[bool, Any] = (False, None), reading: _Reading | None = None) -> _Layer:
    reading = reading or _Reading()
    note = reading.note
    if geojson and not reading.gdal:
        fast = _open_fast_geojson(path, batch_size, crs_member, reading)
        if isinstance(fast, _Layer):
            return fast
        note = fast
    opened = _open_gdal(stack, path, layer, batch_size, geojson, crs_member)
    opened.reader_note = note
    return opened


def _open_gdal(stack: ExitStack, path: str, layer: str | None, batch_size: int, geojson: bool,
               crs_member: tuple[bool, Any]) -> _Layer:
    open_arrow = gdal_env.ogr().raw.open_arrow  # locked down on first use (gdal_env)
    opts = GEOJSON_OPEN_OPTIONS if geojson else {}
    meta, reader = stack.enter_context(open_arrow(path, layer=layer, batch_size=batch_size, use_pyarrow=True,
                                                  **opts))
    geom_col = meta.get("geometry_name") or "wkb_geometry"
    schema = reader.schema
    has_geom = geom_col in schema.names and meta.get("geometry_type") is not None
    attrs = pa.schema([f for f in schema if f.name != geom_col])
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    start = features_start(path) if geojson and os.path.getsize(path) >= GEOJSON_CHUNKED_MIN_BYTES else None

    def batches() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        for batch in reader:
            wkb = batch.column(geom_col).to_numpy(zero_copy_only=False) if has_geom else np.array([], object)
            yield batch.drop_columns([geom_col]) if has_geom else batch, wkb

    def chunked(start: int) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        member = crs_member[1] if crs_member[0] else None
        for run in feature_runs(path, start, GEOJSON_RUN_BYTES, member):
            with open_arrow(run, batch_size=batch_size, use_pyarrow=True,
                            **GEOJSON_OPEN_OPTIONS) as (rmeta, rreader):
                rcol = rmeta.get("geometry_name") or "wkb_geometry"
                for batch in rreader:
                    wkb = batch.column(rcol).to_numpy(zero_copy_only=False)
                    yield _conform(batch.drop_columns([rcol]), attrs), wkb

    if start is not None and has_geom:
        # the whole-file reader gave the schema and CRS; its features are read run by run instead
        return _Layer(layer, crs, meta.get("geometry_type"), attrs, chunked(start))
    return _Layer(layer, crs, meta.get("geometry_type") if has_geom else None, attrs, batches())


class NotGeoParquet(ValueError):
    """A Parquet file without `geo` metadata: a table, not a layer."""


_NATIVE_ENCODINGS = ("point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon")


def _native_to_wkb(arr: pa.Array, encoding: str) -> np.ndarray:
    # GeoParquet 1.1 "native" (GeoArrow) encodings: geopandas knows the layouts; go through shapely.
    from geopandas.io._geoarrow import construct_shapely_array

    geoms = construct_shapely_array(arr, f"geoarrow.{encoding}")
    out: np.ndarray = shapely.to_wkb(geoms, byte_order=1, flavor="iso")
    return out


def _open_geoparquet(path: str, batch_size: int) -> _Layer:
    pf = pq.ParquetFile(path)
    raw = (pf.schema_arrow.metadata or {}).get(b"geo")
    if raw is None:
        raise NotGeoParquet("no 'geo' metadata: a plain Parquet table, not a GeoParquet layer")
    geo = json.loads(raw)
    col = geo["primary_column"]
    colmeta = geo["columns"][col]
    encoding = str(colmeta.get("encoding", "WKB")).lower()
    if encoding != "wkb" and encoding not in _NATIVE_ENCODINGS:
        raise ValueError(f"GeoParquet encoding {colmeta.get('encoding')!r} is not supported")
    # GeoParquet: an absent crs means OGC:CRS84; an explicit null means "unknown".
    if "crs" not in colmeta:
        crs: CRS | None = CRS.from_user_input("OGC:CRS84")
    elif colmeta["crs"] is None:
        crs = None
    else:
        crs = CRS.from_user_input(colmeta["crs"])
    drop = {col}
    covering = colmeta.get("covering", {}).get("bbox", {})
    drop |= {v[0] for v in covering.values() if isinstance(v, list) and v}
    attrs = pa.schema([f for f in pf.schema_arrow if f.name not in drop]).remove_metadata()
    types = colmeta.get("geometry_types") or []
    declared = types[0] if len(types) == 1 else "Unknown"

    def batches() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        for batch in pf.iter_batches(batch_size=batch_size):
            gcol = batch.column(col)
            wkb = gcol.to_numpy(zero_copy_only=False) if encoding == "wkb" else _native_to_wkb(gcol, encoding)
            yield batch.select([n for n in attrs.names]), wkb

    return _Layer(None, crs, declared, attrs, batches())


_END = object()


class ReadError(Exception):
    """The reader failed (GDAL, Arrow, the file): a parse finding, unlike a bug in the rules."""


def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Produce `items` on a thread, `depth` ahead: GDAL parses the next batch while this thread runs
    the rules on the current one (both release the GIL), so one big file uses two cores.
    Exceptions from the producer are re-raised here; stopping early stops the producer."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except geojson_arrow.NotSimple as exc:  # the fast reader declines: the layer is read again
            put(exc)
        except Exception as exc:  # handed to the consumer, which raises it where it is read
            put(ReadError(str(exc)))
        except BaseException as exc:
            put(exc)

    t = threading.Thread(target=run, name="terrasnap-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


# --- GeoJSON specifics: the legacy `crs` member, read cheaply --------------------------------------

def geojson_crs_member(path: str) -> tuple[bool, Any]:
    """(present, value) of a top-level `crs` member, without parsing the whole file.

    The head (1 MiB) is scanned member by member at the top level; a file that fits in it is
    decided exactly. In a bigger file the scan stops at "features" (its array is the bulk of the
    file) and the tail is searched for a crs object after the features array (heuristic: writers put
    `crs` first, a few put it last)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES).decode("utf-8", errors="replace")
        tail = ""
        if size > _HEAD_BYTES:
            f.seek(max(size - _TAIL_BYTES, _HEAD_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    i = ws.match(head, 0).end()  # type: ignore[union-attr]
    if head[i:i + 1] == "\ufeff":
        i = ws.match(head, i + 1).end()  # type: ignore[union-attr]
    if head[i:i + 1] != "{":
        return False, None
    i += 1
    try:
        while True:
            i = ws.match(head, i).end()  # type: ignore[union-attr]
            if head[i:i + 1] in ("}", ""):
                return False, None
            key, i = json.decoder.scanstring(head, i + 1)  # type: ignore[attr-defined]
            i = ws.match(head, i).end()  # type: ignore[union-attr]
            i = ws.match(head, i + 1).end()  # type: ignore[union-attr]  # skip ':'
            if key == "features" and size > _HEAD_BYTES:
                break
            value, i = dec.raw_decode(head, i)
            if key == "crs":
                return True, value
            i = ws.match(head, i).end()  # type: ignore[union-attr]
            if head[i:i + 1] == ",":
                i += 1
    except (ValueError, IndexError, RecursionError):
        pass  # truncated head, not JSON, or nested too deep: GDAL reports parse errors; look at the tail
    for m in re.finditer(r'"crs"\s*:\s*(?=\{)', tail):
        try:
            value, _ = dec.raw_decode(tail, m.end())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict) and "type" in value and "properties" in value:
            return True, value
    return False, None


def _crs_link(member: tuple[bool, Any]) -> str | None:
    """The URL of a legacy `crs` member of type link/url (GDAL's reader fetches it), else None."""
    present, value = member
    if not present or not isinstance(value, dict) or str(value.get("type", "")).lower() not in ("link", "url"):
        return None
    props = value.get("properties")
    if not isinstance(props, dict):
        props = {}
    return str(props.get("href") or props.get("url") or "")[:200]


def _crs_member_name(value: Any) -> str:
    try:
        return str(value["properties"].get("name") or value["properties"].get("href") or value)
    except (TypeError, KeyError, AttributeError):
        return json.dumps(value)[:200]


_NONFINITE_RE = re.compile(rb"[\[,:]\s*[-+]?(?:NaN|Infinity)\b")


def json_nonfinite_literals(path: str, chunk: int = 1 << 24) -> tuple[int, int] | None:
    """(count, byte offset of the first) of NaN/Infinity literals used as JSON values, streaming the file."""
    count, first, pos, tail = 0, -1, 0, b""
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            buf = tail + block
            if b"NaN" not in buf and b"Infinity" not in buf:  # the common case, at memchr speed
                tail, pos = buf[-32:], pos + len(block)
                continue
            for m in _NONFINITE_RE.finditer(buf):
                if m.end() <= len(tail):
                    continue  # seen in the previous block
                count += 1
                if first < 0:
                    first = pos - len(tail) + m.start()
            tail = buf[-32:]
            pos += len(block)
    return (count, first) if count else None


def _json_error(path: str) -> str | None:
    """Python's JSON error (line/column) for a small file GDAL could not open: clearer than GDAL's."""
    if os.path.getsize(path) > 16 * _HEAD_BYTES:
        return None
    try:
        with open(path, "rb") as f:
            json.loads(f.read())
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc}"
    except (UnicodeDecodeError, ValueError) as exc:
        return f"malformed JSON: {exc}"
    except RecursionError:
        return "JSON nested too deeply to parse (thousands of levels of arrays/objects)"
    return None


# --- the pass ---------------------------------------------------------------------------------------

@dataclass
class _FileRun:
    """What one validate_vector call shares between its steps."""

    path: str
    rel: str
    policy: Policy
    fmt_name: str | None
    layer_names: list[str | None]
    out_path: str | os.PathLike[str] | None
    batch_size: int
    footprint: Any  # prepared shapely geometry in the target CRS, or None
    crs_member: tuple[bool, Any] = (False, None)

    @property
    def geojson(self) -> bool:
        return self.fmt_name == "GeoJSON"

    def read_error(self, fallback: str) -> str:
        """Python's JSON message for a GeoJSON GDAL could not read (clearer), else `fallback`."""
        if self.geojson and "too complex/large" in fallback:
            # GDAL's message suggests a config option the user cannot set here: say what it means instead
            return (f"{fallback.split('. You may define')[0]}: one feature is bigger than GDAL reads in one piece "
                    "(OGR_GEOJSON_MAX_OBJ_SIZE, 200 MB of parsed JSON; a ~50 MB feature of 2M vertices reaches "
                    "it); split the feature into several")
        return (_json_error(self.path) if self.geojson else None) or fallback


def validate_vector(path: str | os.PathLike[str], policy: Policy | None = None, rel_path: str | None = None,
                    out_path: str | os.PathLike[str] | None = None, *, batch_size: int = BATCH_SIZE,
                    footprint: bytes | None = None) -> VectorResult:
    """Validate one vector file and (if out_path) write its normalized GeoParquet in the same pass.

    path: the file; rel_path: how it is named in findings (default: its name);
    out_path: GeoParquet destination for a single-layer file. For a multi-layer file (GeoPackage) each
    layer goes to `<out_path minus .parquet>.<layer>.parquet` (see normalize.normalized_relpath).
    Nothing is written if the file has errors. footprint: WKB of the imagery footprint in the target
    CRS, to count labels outside it. Never raises for bad data: everything becomes a Finding, at the
    policy's level for its rule.
    """
    policy = policy or Policy()
    path = os.fspath(path)
    rel = rel_path or os.path.basename(path)
    result = VectorResult(rel, format=vector_format(path))
    col = Collector(rel, policy=policy)
    try:
        if result.format is not None:
            path = safe_open_path(path, result.format)  # the extension's format, a plain file, or nothing
        layer_names, crs_member = _open_file(path, result.format)
    except (_FileFailed, Refused) as exc:
        col.add(exc.rule, exc.what)
        result.findings = col.finish()
        return result
    fp = None
    if footprint is not None:
        fp = shapely.from_wkb(footprint)
        shapely.prepare(fp)
    run = _FileRun(path, rel, policy, result.format, layer_names, out_path, batch_size, fp, crs_member)
    writers: list[tuple[GeoParquetWriter, LayerResult]] = []
    with ExitStack() as stack:
        for lname in layer_names:
            _validate_layer(run, lname, stack, result, writers)
        if result.ok:
            _commit(run, writers)
    return result


class _FileFailed(Exception):
    def __init__(self, what: str, rule: str = "parse") -> None:
        super().__init__(what)
        self.what, self.rule = what, rule


def _open_file(path: str, fmt_name: str | None) -> tuple[list[str | None], tuple[bool, Any]]:
    """The whole-file checks before any layer is read: (layer names, GeoJSON crs member);
    _FileFailed says why the file cannot be read at all."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise _FileFailed(f"unreadable: {exc.strerror or exc}") from None
    if size == 0:
        raise _FileFailed("empty file (0 bytes)")
    try:
        # Only a GeoPackage has several layers; listing a GeoJSON's layers costs GDAL a full parse.
        layer_names: list[str | None] = list(_ogr_layers(path)) if fmt_name == "GPKG" else [None]
    except Exception as exc:  # pyogrio DataSourceError etc.: GDAL's message is what the user needs
        raise _FileFailed((_json_error(path) if fmt_name == "GeoJSON" else None) or f"cannot open: {exc}") from None
    if not layer_names:
        raise _FileFailed("no layers in file")
    crs_member: tuple[bool, Any] = (False, None)
    if fmt_name == "GeoJSON":
        crs_member = geojson_crs_member(path)
        link = _crs_link(crs_member)
        if link is not None:
            # GDAL fetches a `crs` of type link/url over HTTP while opening the file
            raise _FileFailed(f"the legacy 'crs' member links to {link!r}, which GDAL would fetch; "
                              "a source file is read only from itself (declare the CRS by name, e.g. "
                              "EPSG:4326, or drop the member)", "external-reference")
        nonfinite = json_nonfinite_literals(path)
        if nonfinite:
            count, first = nonfinite
            raise _FileFailed(f"{count} NaN/Infinity number literal(s), first at byte {first}: not JSON (RFC 8259), "
                              "and GDAL reads such a point as an empty geometry, silently losing it",
                              "coord-nonfinite")
    return layer_names, crs_member


@dataclass
class _Reading:
    """How a layer is read: the fast GeoJSON reader (with a type floor after a restart) or GDAL."""

    floor: dict[str, pa.DataType] | None = None
    gdal: bool = False
    note: str | None = None  # why GDAL


def _validate_layer(run: _FileRun, lname: str | None, stack: ExitStack, result: VectorResult,
                    writers: list[tuple[GeoParquetWriter, LayerResult]]) -> None:
    """Open one layer, settle its CRS, stream it through the rules into its writer, record the results.
    A big GeoJSON the fast reader declines partway (a type that widens, something only GDAL reads its
    way) is read again from the start: with the wider types, or after three restarts by GDAL."""
    reading = _Reading()
    for attempt in range(4):
        reading.gdal = reading.gdal or attempt == 3
        try:
            _validate_layer_once(run, lname, stack, result, writers, reading)
            return
        except geojson_arrow.SchemaGrew as grew:
            reading.floor = grew.floor
        except geojson_arrow.NotSimple as exc:
            reading.gdal, reading.note = True, str(exc)


def _validate_layer_once(run: _FileRun, lname: str | None, stack: ExitStack, result: VectorResult,
                         writers: list[tuple[GeoParquetWriter, LayerResult]], reading: _Reading) -> None:
    lcol = Collector(run.rel, layer=lname if len(run.layer_names) > 1 else None, policy=run.policy)
    lres = LayerResult(lname)
    result.layers.append(lres)
    try:
        layer = (_open_geoparquet(run.path, run.batch_size) if run.fmt_name == "GeoParquet"
                 else _open_ogr(stack, run.path, lname, run.batch_size, run.geojson, run.crs_member, reading))
    except NotGeoParquet as exc:
        # a data table next to the labels is legitimate: kept as a raw file, not normalized
        result.layers.pop()
        lcol.add("not-geoparquet", f"{exc}; kept as a raw file, not normalized")
        result.findings.extend(lcol.finish())
        return
    except Exception as exc:
        lcol.add("parse", run.read_error(f"cannot read: {exc}"))
        result.findings.extend(lcol.finish())
        return
    lres.reader, lres.reader_note = layer.reader, layer.reader_note
    if layer.geometry_type is None:
        lcol.add("no-geometry", "layer has no geometry column; not normalized")
        result.findings.extend(lcol.finish())
        return
    crs, transformer = _layer_crs(layer.crs, run.policy, lres, lcol)
    ctx = LayerContext(policy=run.policy, geographic=bool(crs is not None and crs.is_geographic),
                       transformer=transformer, promote_multi=declared_multi(layer.geometry_type),
                       footprint=run.footprint)
    stats = LayerStats()
    writer = _layer_writer(run, lname, layer, stack, writers, lres) if crs is not None else None
    try:
        _stream(run, layer, ctx, stats, lcol, writer)
    except geojson_arrow.NotSimple:  # undo this attempt; the caller reads the layer again
        result.layers.remove(lres)
        if writer is not None:
            writer.abort()
            writers.remove((writer, lres))
        raise
    finish_layer(ctx, stats, lcol)
    if run.geojson:
        _rfc7946(run.crs_member, crs, stats, lcol)
    _fill(lres, stats)
    if writer is not None:
        lres.geometry_types = writer.geometry_types  # with " Z" where 3D, as in the file
    result.findings.extend(lcol.finish())


def _layer_crs(crs: CRS | None, policy: Policy, lres: LayerResult,
               lcol: Collector) -> tuple[CRS | None, Any]:
    """The layer's CRS (declared, or assumed under missingCRS) and its transformer to the target;
    (None, None) when there is no usable CRS (the layer is then validated but not normalized)."""
    assumed = policy.assumed_crs
    if crs is None:
        if assumed is None:
            lcol.add("crs-missing", "no CRS (e.g. a Shapefile without .prj); policy missingCRS=reject "
                                    "(use assume:EPSG:XXXX to accept it)")
        else:
            crs = CRS.from_user_input(assumed)
            lres.crs_origin = "assumed"
            lcol.add("crs-missing", f"no CRS; assuming {assumed} (policy missingCRS)", hint=True)
    else:
        lres.crs_origin = "declared"
    info = crs_fields(crs)
    lres.crs_wkt, lres.crs_projjson, lres.epsg = info["crs_wkt"], info["crs_projjson"], info["epsg"]
    if crs is None:
        return None, None
    try:
        return crs, make_transformer(crs, policy.target)
    except Exception as exc:
        lcol.add("reproject", f"no transformation from {crs.name} to {policy.target_crs}: {exc}")
        return None, None


def _layer_writer(run: _FileRun, lname: str | None, layer: _Layer, stack: ExitStack,
                  writers: list[tuple[GeoParquetWriter, LayerResult]], lres: LayerResult) -> GeoParquetWriter | None:
    if run.out_path is None:
        return None
    target_path = Path(run.out_path)
    if len(run.layer_names) > 1:
        target_path = target_path.with_name(
            normalized_relpath(target_path.name.removesuffix(".parquet"), str(lname), 2))
    writer = GeoParquetWriter(target_path, layer.attributes, run.policy.target)
    stack.callback(writer.abort)  # no-op after commit
    writers.append((writer, lres))
    return writer


def _stream(run: _FileRun, layer: _Layer, ctx: LayerContext, stats: LayerStats, lcol: Collector,
            writer: GeoParquetWriter | None) -> None:
    """Every batch of the layer through the rules and into the writer (GDAL reads ahead on a thread)."""
    offset = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # GDAL's "Non closed ring" etc.
            id_col = layer.attributes.get_field_index("id")
            # a reader thread costs ~1 ms to start: worth it only when it has parsing left to do
            for attrs, wkb in (layer.batches if layer.in_memory else prefetch(layer.batches)):
                lcol.set_ids(offset, attrs.column(id_col) if id_col >= 0 else None)
                keep, geoms, changed = check_batch(wkb, offset, ctx, stats, lcol)
                if writer is not None and keep.any():
                    # unchanged geometries keep their input WKB: no re-encoding
                    out_wkb = wkb[keep]
                    redo = np.flatnonzero(changed[keep])
                    if len(redo):
                        out_wkb[redo] = shapely.to_wkb(geoms[keep][redo], **WKB_OPTIONS)
                    writer.write(attrs.filter(pa.array(keep)), geoms[keep], out_wkb)
                offset += len(wkb)
    except ReadError as exc:  # a parse error in the middle of a stream: report, where
        lcol.add("parse", f"read failed after {offset} features: {run.read_error(str(exc))}")


def _commit(run: _FileRun, writers: list[tuple[GeoParquetWriter, LayerResult]]) -> None:
    """The file passed: commit every layer's GeoParquet and record the output's CRS and types."""
    tinfo = crs_fields(run.policy.target)
    for w, la in writers:
        la.target_crs_wkt, la.target_crs_projjson = tinfo["crs_wkt"], tinfo["crs_projjson"]
        la.target_epsg = tinfo["epsg"]
        la.output = str(w.commit())
        la.geometry_types = w.geometry_types  # after commit: mixed single/multi became multi
        if w.promoted:
            la.type_changes = dict(sorted({**la.type_changes, "promoted to multi": w.promoted}.items()))
        la.output_relpath = normalized_relpath(run.rel, la.name, len(run.layer_names))


def _rfc7946(member: tuple[bool, Any], crs: CRS | None, stats: LayerStats, col: Collector) -> None:
    """RFC 7946: GeoJSON is WGS84 lon/lat. The rule's verdict is on a projected CRS declared through the
    legacy `crs` member; the other cases are notes (hints) beside it."""
    present, value = member
    b = stats.raw_bounds
    # beyond any reading as degrees (a latitude of 91 is a wrong coordinate, not a projected one)
    looks_projected = b is not None and (max(abs(b[0]), abs(b[2])) > 360 or max(abs(b[1]), abs(b[3])) > 180)
    if not present:
        if looks_projected and b is not None:
            # the per-feature coord-range errors say where; this says why
            col.add("rfc7946-crs",
                    f"coordinates look projected (x {fmt(b[0])}..{fmt(b[2])}, y {fmt(b[1])}..{fmt(b[3])}) but "
                    "RFC 7946 GeoJSON is always WGS84 lon/lat: reproject the file to EPSG:4326", hint=True)
        return
    name = _crs_member_name(value)
    declared_wgs84 = crs is not None and crs_is_same(crs, _WGS84)
    if declared_wgs84:
        col.add("rfc7946-crs",
                f"legacy 'crs' member ({name}) is not part of RFC 7946 GeoJSON (always WGS84); ignored", hint=True)
    elif looks_projected and b is not None:
        col.add("rfc7946-crs",
                f"declares {name} through the legacy 'crs' member and its coordinates look projected "
                f"(x {fmt(b[0])}..{fmt(b[2])}, y {fmt(b[1])}..{fmt(b[3])}); RFC 7946 GeoJSON must be WGS84 lon/lat")
    else:
        col.add("rfc7946-crs",
                f"declares {name} through the legacy 'crs' member (not RFC 7946); using that CRS as GDAL does",
                hint=True)


def _fill(lres: LayerResult, stats: LayerStats) -> None:
    for name in ("features", "written", "null", "empty", "invalid", "repaired", "skipped", "rejected",
                 "collapsed", "outside_footprint", "area_before", "area_after"):
        setattr(lres, name, getattr(stats, name))
    lres.geometry_types = sorted(stats.types_out)
    lres.source_geometry_types = dict(sorted(stats.types_in.items()))
    lres.bbox = stats.bbox
    lres.invalid_reasons = dict(sorted(stats.invalid_reasons.items()))
    lres.type_changes = dict(sorted(stats.type_changes.items()))


def check_vector_set(results: list[VectorResult], policy: Policy | None = None) -> list[Finding]:
    """Across files: every layer should be in one CRS. Everything is reprojected to the target CRS
    anyway, but labels in mixed CRSs usually mean a mistake upstream, so the crs-mixed rule decides
    (default: error). The reference is the CRS most layers use (ties: the first path)."""
    policy = policy or Policy()
    severity = policy.severity("crs-mixed")
    if severity is None:
        return []
    groups: list[tuple[CRS, list[tuple[str, LayerResult]]]] = []
    for res in sorted(results, key=lambda r: r.path):
        for la in res.layers:
            if la.crs_wkt is None:
                continue
            crs = CRS.from_wkt(la.crs_wkt)
            for gcrs, members in groups:
                if crs_is_same(gcrs, crs):
                    members.append((res.path, la))
                    break
            else:
                groups.append((crs, [(res.path, la)]))
    if len(groups) < 2:
        return []
    ref_crs, ref_members = max(groups, key=lambda g: len(g[1]))  # max keeps the first on ties
    ref_path = ref_members[0][0]
    out = []
    for crs, members in groups:
        if crs is ref_crs:
            continue
        for p, la in members:
            where = p if la.name is None or la.name == Path(p).stem else f"{p} (layer {la.name})"
            out.append(Finding("crs-mixed", severity, p,
                               f"{where}: CRS {_crs_label(la)} differs from {ref_path}'s {_crs_label(ref_members[0][1])} "
                               f"({len(ref_members)} of the layers use that); mixed CRSs across files (crs-mixed)",
                               1, None, la.name))
    return out


def _crs_label(la: LayerResult) -> str:
    if la.epsg is not None:
        return f"EPSG:{la.epsg}"
    return CRS.from_wkt(la.crs_wkt).name if la.crs_wkt else "none"
