"""`validate_paths`: validate (and normalize) a whole file set on a process pool, and the Report.

Rasters go first (their headers are cheap; they are inspected on the pool too), and their footprint (in
the target CRS) is handed to every vector worker so labels outside the imagery are counted in the same
single pass.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from terrasnap.engine.normalize import normalized_relpath
from terrasnap.engine.validate.findings import Finding, count_map, sort_key
from terrasnap.engine.validate.policy import Policy
from terrasnap.engine.validate.raster import (
    RasterInfo,
    check_raster_set,
    footprint_union,
    inspect_raster,
    raster_grids,
)
from terrasnap.engine.validate.vector import VectorResult, check_vector_set, validate_vector

PathLike = str | os.PathLike[str]
# A file to validate: its path (reported relative to `root`), or (path, rel_path) to name it explicitly.
FileArg = PathLike | tuple[PathLike, str]


@dataclass
class Report:
    policy: Policy
    vectors: list[VectorResult] = field(default_factory=list)
    rasters: list[RasterInfo] = field(default_factory=list)
    set_findings: list[Finding] = field(default_factory=list)  # across files

    @property
    def findings(self) -> list[Finding]:
        out = [f for v in self.vectors for f in v.findings]
        out += [f for r in self.rasters for f in r.findings]
        return sorted(out + self.set_findings, key=sort_key)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return count_map(self.findings)

    def summary(self) -> dict[str, int]:
        fs = self.findings
        return {
            "vectors": len(self.vectors),
            "rasters": len(self.rasters),
            "features": sum(la.features for v in self.vectors for la in v.layers),
            "written": sum(la.written for v in self.vectors for la in v.layers),
            "invalid": sum(la.invalid for v in self.vectors for la in v.layers),
            "repaired": sum(la.repaired for v in self.vectors for la in v.layers),
            "skipped": sum(la.skipped for v in self.vectors for la in v.layers),
            "rejected": sum(la.rejected for v in self.vectors for la in v.layers),
            "null": sum(la.null for v in self.vectors for la in v.layers),
            "empty": sum(la.empty for v in self.vectors for la in v.layers),
            "collapsed": sum(la.collapsed for v in self.vectors for la in v.layers),
            "outside_footprint": sum(la.outside_footprint for v in self.vectors for la in v.layers),
            "errors": sum(f.count for f in fs if f.severity == "error"),
            "warnings": sum(f.count for f in fs if f.severity == "warning"),
        }

    def first_error(self) -> Finding | None:
        return next((f for f in self.findings if f.severity == "error"), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable, deterministic ordering (files by path, findings errors first)."""
        files = [v.to_dict() for v in self.vectors] + [r.to_dict() for r in self.rasters]
        return {
            "ok": self.ok,
            "policy": self.policy.to_dict(),
            "summary": self.summary(),
            "counts": self.counts,
            "files": sorted(files, key=lambda d: d["path"]),
            "findings": [f.to_dict() for f in self.findings],
            "set_findings": [f.to_dict() for f in sorted(self.set_findings, key=sort_key)],
            "grids": self.grids(),
        }

    def grids(self) -> list[dict[str, Any]]:
        """The rasters' pixel grids and which files share each (raster-grid reports all but the first)."""
        return [g.to_dict() for g in raster_grids(self.rasters)]


def _split(arg: FileArg, root: PathLike | None) -> tuple[str, str]:
    if isinstance(arg, tuple):
        return os.fspath(arg[0]), arg[1]
    return os.fspath(arg), _rel(arg, root)


def _rel(path: PathLike, root: PathLike | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            return p.resolve().relative_to(root).as_posix()  # root: resolved by validate_paths, once
        except ValueError:
            pass
    return p.as_posix()


def _validate_one(path: str, policy: Policy, rel: str, out: str | None, footprint: bytes | None) -> VectorResult:
    """validate_vector, with a bug on odd data turned into an error on that file (with the reason)
    rather than a crash of the whole run."""
    try:
        return validate_vector(path, policy, rel, out, footprint=footprint)
    except Exception as exc:
        res = VectorResult(rel)
        res.findings = [Finding("internal", "error", rel,
                                f"{rel}: validation crashed: {type(exc).__name__}: {exc} (internal)")]
        return res


def _inspect_one(path: str, rel: str, policy: Policy) -> RasterInfo:
    try:
        return inspect_raster(path, rel, policy)
    except Exception as exc:
        info = RasterInfo(rel)
        info.findings = [Finding("internal", "error", rel,
                                 f"{rel}: inspection crashed: {type(exc).__name__}: {exc} (internal)")]
        return info


# Small files come in batches, so a 10,000-chip set costs a few hundred round trips to the pool, not
# 10,000 (each pickles the policy and, for vectors, the imagery footprint).
BATCH_BYTES = 4 << 20
BATCH_FILES = 64


def _batches(jobs: list[tuple[str, str, str | None]]) -> list[list[tuple[str, str, str | None]]]:
    """Jobs (biggest first) cut into batches of at most BATCH_FILES files or about BATCH_BYTES."""
    out: list[list[tuple[str, str, str | None]]] = []
    cur: list[tuple[str, str, str | None]] = []
    size = 0
    for job in jobs:
        n = _size(job[0])
        if cur and (len(cur) >= BATCH_FILES or size + n > BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(job)
        size += n
    if cur:
        out.append(cur)
    return out


def _validate_batch(batch: list[tuple[str, str, str | None]], policy: Policy, footprint: bytes | None
                    ) -> list[VectorResult]:
    return [_validate_one(p, policy, rel, out, footprint) for p, rel, out in batch]


def _inspect_batch(batch: list[tuple[str, str]], policy: Policy) -> list[RasterInfo]:
    return [_inspect_one(p, rel, policy) for p, rel in batch]


def _mp_context() -> Any:
    # fork is cheapest, but forking a process that runs other threads (a controller, a hasher) can
    # deadlock in a child on an inherited lock; then pay forkserver's start-up instead.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    return multiprocessing.get_context(method)


def validate_paths(vector_paths: Sequence[FileArg], raster_paths: Sequence[FileArg], policy: Policy | None = None,
                   out_dir: PathLike | None = None, *, root: PathLike | None = None, workers: int = 2) -> Report:
    """Validate every file (rasters, then vectors, in batches on `workers` processes), normalize vectors into
    `out_dir/<normalized_relpath(rel)>` when out_dir is given, and run the cross-file rules.
    Each file is a path or (path, rel_path); rel paths default to the path relative to `root` when
    given, else the path as passed."""
    policy = policy or Policy()
    report = Report(policy)
    root = Path(root).resolve() if root is not None else None
    rasters = sorted((_split(a, root) for a in raster_paths), key=lambda r: -_size(r[0]))
    jobs = []
    for a in vector_paths:
        p, rel = _split(a, root)
        out = os.path.join(out_dir, normalized_relpath(rel)) if out_dir is not None else None
        jobs.append((p, rel, out))
    # biggest first: the pool's tail is then made of small files
    jobs.sort(key=lambda j: -_size(j[0]))
    parallel = workers > 1 and len(jobs) + len(rasters) > 1
    with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) if parallel else _Inline() as pool:
        raster_batches = [pool.submit(_inspect_batch, [(p, rel) for p, rel, _ in b], policy)
                          for b in _batches([(p, rel, None) for p, rel in rasters])]
        report.rasters = sorted((r for f in raster_batches for r in f.result()), key=lambda r: r.path)
        footprint, footprint_findings = _footprint(report.rasters, policy)
        futures = [pool.submit(_validate_batch, b, policy, footprint) for b in _batches(jobs)]
        results = [r for f in futures for r in f.result()]
    report.vectors = sorted(results, key=lambda r: r.path)
    report.set_findings = (check_vector_set(report.vectors, policy) + check_raster_set(report.rasters, None, policy)
                           + footprint_findings)
    return report


def _footprint(rasters: list[RasterInfo], policy: Policy) -> tuple[bytes | None, list[Finding]]:
    """The imagery's footprint in the target CRS (WKB), handed to every vector worker; or why not."""
    try:
        union = footprint_union(rasters, policy.target) if rasters else None
        if union is not None and not union.is_empty and np.isfinite(shapely.bounds(union)).all():
            return shapely.to_wkb(union), []
        if union is not None:
            raise ValueError(f"footprint is not finite in {policy.target_crs}")
    except Exception as exc:  # labels are then simply not checked against the imagery
        sev = policy.severity("footprint", hint=True)
        if sev is not None:
            return None, [Finding("footprint", sev, "", f"imagery footprint could not be computed in "
                                  f"{policy.target_crs}: {exc}; labels not checked against it (footprint)")]
    return None, []


class _Done:
    """A finished future, for the one-process path."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


class _Inline:
    """The pool's interface, run in this process (one worker, or one file)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> _Done:
        return _Done(fn(*args))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
