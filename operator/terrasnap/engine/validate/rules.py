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

from terrasnap.engine.validate.findings import Collector
from terrasnap.engine.validate.policy import Policy

# shapely type ids -> names and families (a layer mixing families gets a warning).
TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint",
              5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}
FAMILY = {0: "point", 4: "point", 1: "line", 2: "line", 5: "line", 3: "polygon", 6: "polygon",
          7: "collection"}
NAME_TO_ID = {v: k for k, v in TYPE_NAMES.items()}
_FAMILY_IDS = {"point": (0, 4), "line": (1, 2, 5), "polygon": (3, 6)}
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
    single = {6: 3, 5: 1, 4: 0}[family_type]
    promoted = shapely.get_type_id(geoms) == single
    sel = np.flatnonzero(promoted)
    if len(sel):
        maker = {6: shapely.multipolygons, 5: shapely.multilinestrings, 4: shapely.multipoints}[family_type]
        geoms = geoms.copy()
        geoms[sel] = maker(geoms[sel], indices=np.arange(len(sel)))
    return geoms, promoted


def _parse(wkb: np.ndarray, offset: int, ctx: LayerContext, stats: LayerStats, col: Collector,
           bad: np.ndarray, drop: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """WKB -> geometries. Unclosed rings do not even parse (GEOS refuses them), so those are
    re-parsed one by one for the reason, then closed (repair), dropped (skip) or rejected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    present = np.array([w is not None for w in wkb], dtype=bool) if wkb.dtype == object else np.ones(len(wkb), bool)
    failed = np.flatnonzero(present & shapely.is_missing(geoms))
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
        key = "Unclosed ring" if closed else "Unparseable geometry"
        stats.invalid += 1
        stats.invalid_reasons[key] += 1
        fixed = None
        if mode == "repair":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fixed = shapely.from_wkb(wkb[i], on_invalid="fix")
        if fixed is not None and not shapely.is_missing(fixed):
            geoms[i] = fixed
            changed[i] = True
            # validity of the closed ring is checked by the is_valid rule below; count it repaired here
            stats.repaired += 1
            col.add(rule, "warning", f"{what}; repaired by closing the ring", offset + i)
        elif mode == "skip":
            drop[i] = True
            stats.skipped += 1
            col.add("skipped", "warning", f"{what}; feature skipped", offset + i)
        else:
            bad[i] = True
            col.add(rule, "error", what, offset + i)
    return geoms


def check_batch(wkb: np.ndarray, offset: int, ctx: LayerContext, stats: LayerStats,
                col: Collector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run every geometry rule on one batch.

    wkb: object array of bytes/None (one per feature); offset: index of wkb[0] in the layer.
    Returns (keep, geoms, changed): keep[i] says feature i goes to the normalized output, geoms are
    the final geometries in the target CRS (only meaningful where keep), changed[i] that geoms[i]
    differs from the input (repaired, reprojected, promoted): the others can reuse their input WKB.
    """
    n = len(wkb)
    stats.features += n
    policy = ctx.policy
    mode = policy.invalid_geometry
    bad = np.zeros(n, dtype=bool)  # has an error: file is rejected
    drop = np.zeros(n, dtype=bool)  # intentionally left out of the output (null, empty, skipped)
    changed = np.zeros(n, dtype=bool)

    geoms = _parse(wkb, offset, ctx, stats, col, bad, drop, changed)

    # null / empty geometries: a warning, never an error; they carry no label.
    missing = shapely.is_missing(geoms) & ~bad & ~drop
    for i in np.flatnonzero(missing).tolist():
        col.add("geometry-null", "warning", "null geometry; dropped from the normalized output", offset + i)
    stats.null += int(missing.sum())
    drop |= missing
    live = ~drop & ~bad
    empty = np.zeros(n, dtype=bool)
    empty[live] = shapely.is_empty(geoms[live])
    for i in np.flatnonzero(empty).tolist():
        col.add("geometry-empty", "warning", "empty geometry; dropped from the normalized output", offset + i)
    stats.empty += int(empty.sum())
    drop |= empty
    live = ~drop & ~bad

    idx_live = np.flatnonzero(live)
    for t, c in zip(*np.unique(shapely.get_type_id(geoms[idx_live]), return_counts=True), strict=True):
        stats.types_in[TYPE_NAMES.get(int(t), str(t))] += int(c)

    # coordinates: non-finite (NaN/Inf) anywhere, and lon/lat out of range for geographic CRSs.
    coords, cidx = shapely.get_coordinates(geoms[idx_live], return_index=True)
    if len(coords):
        finite = np.isfinite(coords).all(axis=1)
        if finite.any():
            fc = coords[finite]
            stats._grow("raw_bounds", [float(fc[:, 0].min()), float(fc[:, 1].min()),
                                       float(fc[:, 0].max()), float(fc[:, 1].max())])
        coord_bad = ~finite
        rules = {"coord-nonfinite": ~finite}
        if ctx.geographic:
            with np.errstate(invalid="ignore"):
                out = finite & ((np.abs(coords[:, 0]) > 180 + LONLAT_TOLERANCE)
                                | (np.abs(coords[:, 1]) > 90 + LONLAT_TOLERANCE))
            rules["coord-range"] = out
            coord_bad = coord_bad | out
        if coord_bad.any():
            seen: set[int] = set()
            for rule, mask in rules.items():
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
                    if mode == "skip":
                        drop[i] = True
                        stats.skipped += 1
                        col.add("skipped", "warning", f"{what}; feature skipped", offset + i)
                    else:  # not repairable: make_valid cannot invent a coordinate
                        bad[i] = True
                        col.add(rule, "error", what, offset + i)
    live = ~drop & ~bad

    # validity (OGC): cheap vectorized test, reasons only for the failures.
    idx_live = np.flatnonzero(live)
    valid = shapely.is_valid(geoms[idx_live])
    inv = idx_live[~valid]
    if len(inv):
        reasons = shapely.is_valid_reason(geoms[inv])
        type_ids = shapely.get_type_id(geoms[inv])
        repaired = shapely.make_valid(geoms[inv]) if mode == "repair" else None
        for k, ii in enumerate(inv):
            i = int(ii)
            reason, loc = split_reason(str(reasons[k]))
            what = f"{reason} at or near point ({loc})" if loc else reason
            tid = int(type_ids[k])
            rule = "ring-too-short" if reason.startswith("Too few points") and FAMILY[tid] == "polygon" \
                else "is_valid"
            # a ring closed while parsing (repair) is already counted invalid and repaired once
            already = bool(changed[i])
            if not already:
                stats.invalid += 1
            stats.invalid_reasons[reason] += 1
            if mode == "reject":
                bad[i] = True
                col.add(rule, "error", what, offset + i)
            elif mode == "skip":
                drop[i] = True
                stats.skipped += 1
                col.add("skipped", "warning", f"{what}: {rule} failed; feature skipped", offset + i)
            else:
                assert repaired is not None
                before = geoms[i]
                fam = _FAMILY_IDS.get(FAMILY[tid])
                after = _keep_family(repaired[k], fam) if fam else repaired[k]
                a0 = float(shapely.area(before))
                t0 = TYPE_NAMES[tid]
                if after is None or shapely.is_empty(after):
                    drop[i] = True
                    stats.collapsed += 1
                    if already:
                        stats.repaired -= 1
                    col.add("repair-collapsed", "warning",
                            f"{what}: make_valid left no {FAMILY[tid]} geometry ({t0}, area {fmt(a0)}); "
                            f"feature dropped", offset + i)
                    continue
                a1 = float(shapely.area(after))
                t1 = TYPE_NAMES[int(shapely.get_type_id(after))]
                geoms[i] = after
                changed[i] = True
                if not already:
                    stats.repaired += 1
                stats.area_before += a0
                stats.area_after += a1
                if t0 != t1:
                    stats.type_changes[f"{t0}->{t1}"] += 1
                col.add("repaired", "warning",
                        f"{what}: repaired with make_valid: {t0} area {fmt(a0)} -> {t1} area {fmt(a1)}",
                        offset + i)
    live = ~drop & ~bad

    # reprojection to the target CRS: must succeed and stay finite.
    idx_live = np.flatnonzero(live)
    out = geoms.copy()
    if ctx.transformer is not None and len(idx_live):
        moved = _reproject(geoms[idx_live], ctx.transformer)
        c2, ci2 = shapely.get_coordinates(moved, return_index=True)
        nonfinite = ~np.isfinite(c2).all(axis=1)
        if nonfinite.any():
            c1 = shapely.get_coordinates(geoms[idx_live])
            feats, first = np.unique(ci2[nonfinite], return_index=True)
            hits = np.flatnonzero(nonfinite)[first]
            for f, h in zip(feats, hits, strict=True):
                i = int(idx_live[f])
                bad[i] = True
                stats.invalid_reasons["Reprojection failed"] += 1
                col.add("reproject", "error",
                        f"reprojecting ({fmt_xy(c1[h])}) to {policy.target_crs} gives non-finite coordinates",
                        offset + i)
        out[idx_live] = moved
        changed[idx_live] = True
    keep = ~drop & ~bad
    idx_keep = np.flatnonzero(keep)
    if ctx.promote_multi is not None and len(idx_keep):
        out[idx_keep], promoted = _promote(out[idx_keep], ctx.promote_multi)
        changed[idx_keep[promoted]] = True
    if len(idx_keep):
        kept = out[idx_keep]
        for t, c in zip(*np.unique(shapely.get_type_id(kept), return_counts=True), strict=True):
            stats.types_out[TYPE_NAMES.get(int(t), str(t))] += int(c)
        b = shapely.total_bounds(kept)
        if np.isfinite(b).all():
            stats._grow("bbox", [float(v) for v in b])
        if ctx.footprint is not None:
            stats.outside_footprint += int((~shapely.covered_by(kept, ctx.footprint)).sum())
    stats.rejected += int(bad.sum())
    stats.written += len(idx_keep)
    return keep, out, changed


def finish_layer(ctx: LayerContext, stats: LayerStats, col: Collector) -> None:
    """Layer-level rules that need the whole layer: mixed geometry families, footprint."""
    families = sorted({FAMILY[NAME_TO_ID[t]] for t, n in stats.types_in.items() if n})
    if len(families) > 1:
        detail = ", ".join(f"{t} ({n})" for t, n in sorted(stats.types_in.items()))
        col.add("geometry-mixed", "warning", f"mixed geometry types: {detail}")
    if ctx.footprint is not None and stats.outside_footprint:
        col.add("footprint", "warning",
                f"{stats.outside_footprint} of {stats.written} features lie outside the imagery footprint",
                count=stats.outside_footprint)

