"""Geometry rules on one batch of features, vectorized with shapely 2 (pure: no I/O).

`check_batch` takes the WKB of a batch exactly as the reader produced it and returns which features
survive into the normalized output and their final geometries (repaired, reprojected, promoted).
Expensive per-feature work (`is_valid_reason`, `make_valid`, re-parsing) runs only on the features
that failed a cheap vectorized test, so a clean batch costs a handful of array operations.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from terrasnap.engine.formats import FAMILY, FAMILY_IDS, NAME_TO_ID, SINGLE_OF_MULTI, TYPE_NAMES
from terrasnap.engine.validate.findings import Collector
from terrasnap.engine.validate.policy import Policy

_REASON_RE = re.compile(r"^(.*?)\s*\[([^\]]*)\]\s*$")
LONLAT_TOLERANCE = 1e-9


def fmt(v: float) -> str:
    return f"{v:.10g}"


def fmt_xy(xy: Any) -> str:
    return " ".join(fmt(float(c)) for c in xy)


def split_reason(reason: str) -> tuple[str, str | None]:
    """'Self-intersection[0.5 0.5]' -> ('Self-intersection', '0.5 0.5')."""
    m = _REASON_RE.match(reason)
    return (m.group(1), m.group(2)) if m else (reason, None)


@dataclass
class LayerContext:
    """What is fixed for a whole layer."""

    policy: Policy
    geographic: bool  # source CRS is geographic: lon/lat must be in range
    transformer: Transformer | None  # source -> target (always_xy); None when they are the same CRS
    promote_multi: int | None = None  # family type id to promote singles to (declared Multi* layer)
    footprint: Any = None  # prepared shapely geometry in the target CRS, or None


@dataclass
class LayerStats:
    features: int = 0
    written: int = 0
    null: int = 0
    empty: int = 0
    invalid: int = 0  # features that failed a geometry rule (before repair/skip)
    repaired: int = 0
    skipped: int = 0
    rejected: int = 0  # features with an error
    collapsed: int = 0  # repaired into nothing of their own family: dropped
    outside_footprint: int = 0
    invalid_reasons: Counter[str] = field(default_factory=Counter)
    type_changes: Counter[str] = field(default_factory=Counter)
    types_in: Counter[str] = field(default_factory=Counter)
    types_out: Counter[str] = field(default_factory=Counter)
    area_before: float = 0.0  # summed over repaired features, source CRS units
    area_after: float = 0.0
    bbox: list[float] | None = None  # target CRS, of the written features
    raw_bounds: list[float] | None = None  # source CRS, finite coordinates of all features

    def _grow(self, attr: str, b: list[float]) -> None:
        cur = getattr(self, attr)
        if cur is None:
            setattr(self, attr, list(b))
        else:
            setattr(self, attr, [min(cur[0], b[0]), min(cur[1], b[1]), max(cur[2], b[2]), max(cur[3], b[3])])


def crs_is_same(a: CRS, b: CRS) -> bool:
    # GIS order everywhere (always_xy), so axis order alone is not a difference.
    return a == b or a.equals(b, ignore_axis_order=True)


def make_transformer(src: CRS, dst: CRS) -> Transformer | None:
    return None if crs_is_same(src, dst) else Transformer.from_crs(src, dst, always_xy=True)


def _reproject(geoms: np.ndarray, transformer: Transformer) -> np.ndarray:
    def fn(c: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(c[:, 0], c[:, 1], errcheck=False)
        out = c.copy()
        out[:, 0], out[:, 1] = x, y
        return out

    has_z = bool(shapely.has_z(geoms).any()) if len(geoms) else False
    return shapely.transform(geoms, fn, include_z=has_z)


def _keep_family(geom: Any, family_ids: tuple[int, ...]) -> Any:
    """make_valid may return a GeometryCollection (polygon + stray line): keep the parts of the
    feature's own family, so a polygon layer stays polygonal."""
    if shapely.get_type_id(geom) in family_ids:
        return geom
    parts = [p for p in shapely.get_parts(shapely.get_parts(geom)) if shapely.get_type_id(p) in family_ids
             and not p.is_empty]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    kind = family_ids[0]
    if kind == 3:
        return shapely.multipolygons(parts)
    if kind == 1:
        return shapely.multilinestrings(parts)
    return shapely.multipoints(parts)


def _promote(geoms: np.ndarray, family_type: int) -> tuple[np.ndarray, np.ndarray]:
    """Single -> Multi for a layer declared Multi* (so Polygon+MultiPolygon becomes one type).
    Returns the geometries and the mask of those promoted."""
    single = SINGLE_OF_MULTI[family_type]
    promoted = shapely.get_type_id(geoms) == single
    sel = np.flatnonzero(promoted)
    if len(sel):
        maker = {6: shapely.multipolygons, 5: shapely.multilinestrings, 4: shapely.multipoints}[family_type]
        geoms = geoms.copy()
        geoms[sel] = maker(geoms[sel], indices=np.arange(len(sel)))
    return geoms, promoted


@dataclass
class Batch:
    """One batch on its way through the rules: the input, the geometries, and what happens to each."""

    wkb: np.ndarray  # object array of bytes/None, one per feature
    offset: int  # index of wkb[0] in the layer
    geoms: np.ndarray = field(init=False)
    bad: np.ndarray = field(init=False)  # has an error: the file is rejected
    drop: np.ndarray = field(init=False)  # intentionally left out of the output (null, empty, skipped)
    changed: np.ndarray = field(init=False)  # geoms[i] differs from the input WKB

    def __post_init__(self) -> None:
        n = len(self.wkb)
        self.bad = np.zeros(n, dtype=bool)
        self.drop = np.zeros(n, dtype=bool)
        self.changed = np.zeros(n, dtype=bool)

    @property
    def live(self) -> np.ndarray:
        """Indices of the features still on their way to the output."""
        return np.flatnonzero(~self.drop & ~self.bad)

    def skip(self, i: int, what: str, stats: LayerStats, col: Collector) -> None:
        self.drop[i] = True
        stats.skipped += 1
        col.add("skipped", f"{what}; feature skipped", self.offset + i)

    def judge(self, i: int, rule: str, what: str, col: Collector) -> None:
        """Report a rule's verdict on feature i; an error rejects the feature (and so the file)."""
        if col.add(rule, what, self.offset + i) == "error":
            self.bad[i] = True


def _parse(b: Batch, ctx: LayerContext, stats: LayerStats, col: Collector) -> None:
    """WKB -> geometries. Unclosed rings do not even parse (GEOS refuses them), so those are
    re-parsed one by one for the reason, then closed (repair), dropped (skip) or rejected."""
    wkb = b.wkb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b.geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    present = np.array([w is not None for w in wkb], dtype=bool) if wkb.dtype == object else np.ones(len(wkb), bool)
    failed = np.flatnonzero(present & shapely.is_missing(b.geoms))
    mode = ctx.policy.invalid_geometry
    for ii in failed:
        i = int(ii)
        try:
            shapely.from_wkb(wkb[i])
            reason = "unparseable WKB"
        except Exception as exc:  # GEOSException / ValueError: the message is the point
            reason = str(exc)
        closed = "closed linestring" in reason
        rule = "ring-unclosed" if closed else "wkb"
        what = "polygon ring is not closed (first and last points differ)" if closed else reason
        stats.invalid += 1
        stats.invalid_reasons["Unclosed ring" if closed else "Unparseable geometry"] += 1
        fixed = None
        if mode == "repair":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fixed = shapely.from_wkb(wkb[i], on_invalid="fix")
        if fixed is not None and not shapely.is_missing(fixed):
            b.geoms[i] = fixed
            b.changed[i] = True
            # validity of the closed ring is checked by the is_valid rule below; count it repaired here
            stats.repaired += 1
            col.add(rule, f"{what}; repaired by closing the ring", b.offset + i, hint=True)
        elif mode == "skip":
            b.skip(i, what, stats, col)
        else:
            b.judge(i, rule, what, col)


def _drop_missing(b: Batch, stats: LayerStats, col: Collector) -> None:
    """Null and empty geometries carry no label: dropped from the output, reported at their rules' levels."""
    missing = shapely.is_missing(b.geoms) & ~b.bad & ~b.drop
    for i in np.flatnonzero(missing).tolist():
        col.add("geometry-null", "null geometry; dropped from the normalized output", b.offset + i)
    stats.null += int(missing.sum())
    b.drop |= missing
    empty = np.zeros(len(b.wkb), dtype=bool)
    live = b.live
    empty[live] = shapely.is_empty(b.geoms[live])
    for i in np.flatnonzero(empty).tolist():
        col.add("geometry-empty", "empty geometry; dropped from the normalized output", b.offset + i)
    stats.empty += int(empty.sum())
    b.drop |= empty
    live = b.live
    for t, c in zip(*np.unique(shapely.get_type_id(b.geoms[live]), return_counts=True), strict=True):
        stats.types_in[TYPE_NAMES.get(int(t), str(t))] += int(c)


def _check_coordinates(b: Batch, ctx: LayerContext, stats: LayerStats, col: Collector) -> None:
    """Non-finite (NaN/Inf) coordinates anywhere, and lon/lat out of range in a geographic CRS.
    Neither can be repaired (make_valid cannot invent a coordinate): skip drops, else the rule judges."""
    idx_live = b.live
    coords, cidx = shapely.get_coordinates(b.geoms[idx_live], return_index=True)
    if not len(coords):
        return
    finite = np.isfinite(coords).all(axis=1)
    if finite.any():
        fc = coords[finite]
        stats._grow("raw_bounds", [float(fc[:, 0].min()), float(fc[:, 1].min()),
                                   float(fc[:, 0].max()), float(fc[:, 1].max())])
    coord_bad = ~finite
    masks = {"coord-nonfinite": ~finite}
    if ctx.geographic:
        with np.errstate(invalid="ignore"):
            out = finite & ((np.abs(coords[:, 0]) > 180 + LONLAT_TOLERANCE)
                            | (np.abs(coords[:, 1]) > 90 + LONLAT_TOLERANCE))
        masks["coord-range"] = out
        coord_bad = coord_bad | out
    if not coord_bad.any():
        return
    seen: set[int] = set()
    for rule, mask in masks.items():
        hits = np.flatnonzero(mask)
        # first offending vertex per feature
        feats, first = np.unique(cidx[hits], return_index=True)
        for f, h in zip(feats, hits[first], strict=True):
            i = int(idx_live[f])
            if i in seen:
                continue
            seen.add(i)
            stats.invalid += 1
            xy = fmt_xy(coords[h])
            if rule == "coord-nonfinite":
                what, key = f"non-finite coordinate ({xy})", "Non-finite coordinate"
            else:
                what = f"coordinate ({xy}) outside lon/lat range [-180, 180] x [-90, 90]"
                key = "Coordinate out of range"
            stats.invalid_reasons[key] += 1
            if ctx.policy.invalid_geometry == "skip":
                b.skip(i, what, stats, col)
            else:
                b.judge(i, rule, what, col)


def _check_validity(b: Batch, ctx: LayerContext, stats: LayerStats, col: Collector) -> None:
    """OGC validity: a cheap vectorized test, reasons (and repairs) only for the failures."""
    idx_live = b.live
    valid = shapely.is_valid(b.geoms[idx_live])
    inv = idx_live[~valid]
    if not len(inv):
        return
    mode = ctx.policy.invalid_geometry
    reasons = shapely.is_valid_reason(b.geoms[inv])
    type_ids = shapely.get_type_id(b.geoms[inv])
    repaired = shapely.make_valid(b.geoms[inv]) if mode == "repair" else None
    for k, ii in enumerate(inv):
        i = int(ii)
        reason, loc = split_reason(str(reasons[k]))
        what = f"{reason} at or near point ({loc})" if loc else reason
        tid = int(type_ids[k])
        rule = "ring-too-short" if reason.startswith("Too few points") and FAMILY[tid] == "polygon" \
            else "is_valid"
        # a ring closed while parsing (repair) is already counted invalid and repaired once
        already = bool(b.changed[i])
        if not already:
            stats.invalid += 1
        stats.invalid_reasons[reason] += 1
        if mode == "reject":
            b.judge(i, rule, what, col)  # at warning/off the geometry goes out as it came in
        elif mode == "skip":
            b.skip(i, f"{what}: {rule} failed", stats, col)
        else:
            assert repaired is not None
            _repair_one(b, i, tid, repaired[k], what, already, stats, col)


def _repair_one(b: Batch, i: int, tid: int, repaired: Any, what: str, already: bool, stats: LayerStats,
                col: Collector) -> None:
    """Take make_valid's result for feature i, keeping the parts of its own family (area and type recorded)."""
    before = b.geoms[i]
    fam = FAMILY_IDS.get(FAMILY[tid])
    after = _keep_family(repaired, fam) if fam else repaired
    a0 = float(shapely.area(before))
    t0 = TYPE_NAMES[tid]
    if after is None or shapely.is_empty(after):
        b.drop[i] = True
        stats.collapsed += 1
        if already:
            stats.repaired -= 1
        col.add("repair-collapsed",
                f"{what}: make_valid left no {FAMILY[tid]} geometry ({t0}, area {fmt(a0)}); feature dropped",
                b.offset + i)
        return
    a1 = float(shapely.area(after))
    t1 = TYPE_NAMES[int(shapely.get_type_id(after))]
    b.geoms[i] = after
    b.changed[i] = True
    if not already:
        stats.repaired += 1
    stats.area_before += a0
    stats.area_after += a1
    if t0 != t1:
        stats.type_changes[f"{t0}->{t1}"] += 1
    col.add("repaired", f"{what}: repaired with make_valid: {t0} area {fmt(a0)} -> {t1} area {fmt(a1)}",
            b.offset + i)


def _reproject_batch(b: Batch, ctx: LayerContext, stats: LayerStats, col: Collector) -> np.ndarray:
    """The live geometries in the target CRS; a non-finite result is a reproject finding."""
    idx_live = b.live
    out = b.geoms.copy()
    if ctx.transformer is None or not len(idx_live):
        return out
    moved = _reproject(b.geoms[idx_live], ctx.transformer)
    c2, ci2 = shapely.get_coordinates(moved, return_index=True)
    nonfinite = ~np.isfinite(c2).all(axis=1)
    if nonfinite.any():
        c1 = shapely.get_coordinates(b.geoms[idx_live])
        feats, first = np.unique(ci2[nonfinite], return_index=True)
        hits = np.flatnonzero(nonfinite)[first]
        for f, h in zip(feats, hits, strict=True):
            i = int(idx_live[f])
            stats.invalid_reasons["Reprojection failed"] += 1
            b.judge(i, "reproject",
                    f"reprojecting ({fmt_xy(c1[h])}) to {ctx.policy.target_crs} gives non-finite coordinates", col)
    out[idx_live] = moved
    b.changed[idx_live] = True
    return out


def _finish_batch(b: Batch, out: np.ndarray, ctx: LayerContext, stats: LayerStats) -> np.ndarray:
    """Promote singles in a Multi* layer, count output types, grow the bbox, count labels off the imagery."""
    keep = ~b.drop & ~b.bad
    idx_keep = np.flatnonzero(keep)
    if ctx.promote_multi is not None and len(idx_keep):
        out[idx_keep], promoted = _promote(out[idx_keep], ctx.promote_multi)
        b.changed[idx_keep[promoted]] = True
    if len(idx_keep):
        kept = out[idx_keep]
        for t, c in zip(*np.unique(shapely.get_type_id(kept), return_counts=True), strict=True):
            stats.types_out[TYPE_NAMES.get(int(t), str(t))] += int(c)
        bounds = shapely.total_bounds(kept)
        if np.isfinite(bounds).all():
            stats._grow("bbox", [float(v) for v in bounds])
        if ctx.footprint is not None:
            stats.outside_footprint += int((~shapely.covered_by(kept, ctx.footprint)).sum())
    stats.rejected += int(b.bad.sum())
    stats.written += len(idx_keep)
    return keep


def check_batch(wkb: np.ndarray, offset: int, ctx: LayerContext, stats: LayerStats,
                col: Collector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run every geometry rule on one batch; each finding's severity is the policy's level for its rule
    (`col.policy`; an error rejects the feature and so the file).

    wkb: object array of bytes/None (one per feature); offset: index of wkb[0] in the layer.
    Returns (keep, geoms, changed): keep[i] says feature i goes to the normalized output, geoms are
    the final geometries in the target CRS (only meaningful where keep), changed[i] that geoms[i]
    differs from the input (repaired, reprojected, promoted): the others can reuse their input WKB.
    """
    stats.features += len(wkb)
    b = Batch(wkb, offset)
    _parse(b, ctx, stats, col)
    _drop_missing(b, stats, col)
    _check_coordinates(b, ctx, stats, col)
    _check_validity(b, ctx, stats, col)
    out = _reproject_batch(b, ctx, stats, col)
    keep = _finish_batch(b, out, ctx, stats)
    return keep, out, b.changed


def finish_layer(ctx: LayerContext, stats: LayerStats, col: Collector) -> None:
    """Layer-level rules that need the whole layer: mixed geometry families, footprint."""
    families = sorted({FAMILY[NAME_TO_ID[t]] for t, n in stats.types_in.items() if n})
    if len(families) > 1:
        detail = ", ".join(f"{t} ({n})" for t, n in sorted(stats.types_in.items()))
        col.add("geometry-mixed", f"mixed geometry types: {detail}")
    if ctx.footprint is not None and stats.outside_footprint:
        col.add("footprint",
                f"{stats.outside_footprint} of {stats.written} features lie outside the imagery footprint",
                count=stats.outside_footprint)

