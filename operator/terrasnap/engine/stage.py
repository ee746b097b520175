"""The built-in DVC stage: validate `raw/`, write `normalized/` and `report.json`.

It runs as `terrasnap stage validate ...` under `dvc repro`, exactly as a hand-written dvc.yaml stage
would, so `dvc.lock` records its inputs and outputs and `dvc repro` skips it when nothing changed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from terrasnap.engine.errors import ValidationFailed
from terrasnap.engine.scan import scan
from terrasnap.engine.validate.policy import Policy

STAGE_NAME = "validate"
REPORT = "report.json"


def stage_command() -> dict[str, Any]:
    """The project's dvc.yaml: one stage, its command, deps and outs — what a user would write by hand."""
    return {
        "stages": {
            STAGE_NAME: {
                "cmd": f"terrasnap stage validate --policy policy.json --report {REPORT} raw normalized",
                "deps": ["raw", "policy.json"],
                "outs": ["normalized"],
                "metrics": [{REPORT: {"cache": False}}],
            }
        }
    }


def load_report(project: Path) -> dict[str, Any] | None:
    path = project / REPORT
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return expand_crs(data)


# Every file and layer names its CRS in WKT and PROJJSON (~2.5 KB); 10,000 chips in one CRS made report.json
# 78 MB of copies. The file keeps each CRS once, under "crs", and entries refer to it by key (`crs_ref`).
_CRS_FIELDS = {"crs_ref": ("crs_wkt", "crs_projjson"), "target_crs_ref": ("target_crs_wkt", "target_crs_projjson")}


def _entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = [v for v in (doc.get("files") or {}).values() if isinstance(v, dict)]
    for layers in (doc.get("layers") or {}).values():
        out += [la for la in layers or [] if isinstance(la, dict)]
    return out


def compact_crs(doc: dict[str, Any]) -> dict[str, Any]:
    """The report with each CRS stored once (`crs` table; the entries are changed in place); `expand_crs`
    gives back the same document."""
    table: dict[tuple[str, str], str] = {}
    for entry in _entries(doc):
        for ref, (wkt, pj) in _CRS_FIELDS.items():
            if wkt in entry and pj in entry and ref not in entry:
                key = table.setdefault((entry[wkt], entry[pj]), f"crs-{len(table) + 1}")
                del entry[wkt], entry[pj]
                entry[ref] = key
    return {**doc, "crs": {key: {"crs_wkt": w, "crs_projjson": p} for (w, p), key in table.items()}}


def expand_crs(doc: dict[str, Any]) -> dict[str, Any]:
    table = doc.pop("crs", None)
    if not isinstance(table, dict):
        return doc
    for entry in _entries(doc):
        for ref, (wkt, pj) in _CRS_FIELDS.items():
            if isinstance(entry.get(ref), str) and entry[ref] in table:
                crs = table[entry.pop(ref)]
                entry[wkt], entry[pj] = crs["crs_wkt"], crs["crs_projjson"]  # one shared string per CRS
    return doc


def aggregate_findings(findings: list[dict[str, Any]], examples: int = 3) -> list[dict[str, Any]]:
    """Findings by rule and severity: how many, in how many files, and the first few (in report order).
    A warning on every one of 10,000 chips is one entry, not 10,000."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for f in findings:
        g = groups.setdefault((f.get("rule", ""), f.get("severity", "")), {
            "rule": f.get("rule", ""), "severity": f.get("severity", ""), "count": 0, "files": set(),
            "examples": []})
        g["count"] += int(f.get("count", 1))
        g["files"].add(f.get("path", ""))
        if len(g["examples"]) < examples:
            g["examples"].append({"path": f.get("path", ""), "message": f.get("message", "")})
    return [{**g, "files": len(g["files"] - {""})} for g in groups.values()]


def build_report(raw: Path, policy: Policy, out: Path | None, prefix: str = "raw") -> dict[str, Any]:
    """Validate every layer and raster under `raw` (normalizing into `out`) and describe every file."""
    from terrasnap.engine.validate import validate_paths

    entries = scan(raw)
    vectors = [e for e in entries if e.kind == "vector"]
    rasters = [e for e in entries if e.kind == "raster"]
    report = validate_paths([raw / e.rel for e in vectors], [raw / e.rel for e in rasters], policy,
                            out_dir=out, root=raw)
    doc = report.to_dict()
    target = policy.target
    target_crs = {"crs_wkt": target.to_wkt(), "crs_projjson": target.to_json(), "epsg": target.to_epsg()}
    files: dict[str, dict[str, Any]] = {}
    for e in entries:
        files[f"{prefix}/{e.rel}"] = {"kind": e.kind}
    for fr in doc.get("files", []):
        rel = f"{prefix}/{fr['path']}"
        files[rel] = {"kind": fr.get("kind", "other"), **(fr.get("summary") or {})}
        for layer in fr.get("layers", []) or []:
            layer.pop("output", None)  # an absolute temp path: never part of a report
            if layer.get("output_relpath"):
                files[f"normalized/{layer['output_relpath']}"] = {
                    "kind": "vector",
                    "source_path": rel,
                    **target_crs,
                    "features": layer.get("written"),
                    "geometry_types": layer.get("geometry_types"),
                    "bbox": layer.get("bbox"),
                    "repaired": layer.get("repaired"),
                    "skipped": layer.get("skipped"),
                }
    counts = doc.get("summary") or {}
    findings = [f.to_dict() for f in report.findings]
    return {
        "ok": report.ok,
        "policy": policy.to_dict(),
        "summary": {
            "features": int(counts.get("features", 0)),
            "repaired": int(counts.get("repaired", 0)),
            # features that did not reach the normalized output: skipped, null, empty, collapsed
            "rejected": max(0, int(counts.get("features", 0)) - int(counts.get("written", 0))),
            "warnings": sum(int(f.get("count", 1)) for f in findings if f.get("severity") == "warning"),
            "errors": sum(int(f.get("count", 1)) for f in findings if f.get("severity") == "error"),
        },
        "findings": findings[:200],
        "findings_by_rule": aggregate_findings(findings),
        "files": dict(sorted(files.items())),
        # every finding is counted in `findings_by_rule`; the first 200 (errors first) are in `findings`
        "validation": {k: v for k, v in doc.items() if k not in ("files", "findings")},
        "layers": {f"{prefix}/{fr['path']}": fr.get("layers", []) for fr in doc.get("files", []) if fr.get("layers")},
    }


def run_stage(policy_file: Path, report_file: Path, raw: Path, out: Path) -> int:
    """Stage entry point: exit 0 with normalized/ + report.json, or 1 with report.json and no outputs."""
    policy = Policy.from_dict(json.loads(policy_file.read_text()))
    # Normalize into a sibling temp dir and move it into place only when everything passed.
    tmp = Path(tempfile.mkdtemp(prefix=".normalized-", dir=out.parent))
    try:
        try:
            report = build_report(raw, policy, tmp)
        except ValidationFailed as exc:
            report = {"ok": False, "summary": {}, "findings": [
                {"rule": "source", "severity": "error", "path": str(raw), "message": exc.message, "count": 1}],
                "files": {}}
        _write_json(report_file, compact_crs(report))
        if not report["ok"]:
            return 1
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    # no indent: json's C encoder (indenting falls back to pure Python: seconds for 10,000 files)
    tmp.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def rejection_message(report: dict[str, Any]) -> str:
    """One line for the result document: how many errors, and the first few of them, each with its place."""
    errors = [f for f in report.get("findings", []) if f.get("severity") == "error"]
    total = sum(int(f.get("count", 1)) for f in errors)
    head = "; ".join(f["message"] for f in errors[:3])
    more = f" (+{len(errors) - 3} more finding(s))" if len(errors) > 3 else ""
    return f"validation rejected the data ({total} error(s); nothing pushed): {head}{more}"


def validate_source(source: str, policy: Policy, endpoint: str | None, report_file: Path | None) -> dict[str, Any]:
    """`terrasnap validate`: the stage's checks on any source, without DVC or a store."""
    from terrasnap.engine.source import materialize, parse_source

    with tempfile.TemporaryDirectory(prefix="terrasnap-validate-") as work:
        mat = materialize(parse_source(source), Path(work), endpoint)
        report = build_report(mat.root, policy, None)
    if report_file:
        _write_json(report_file, report)
    if not report["ok"]:
        raise ValidationFailed(rejection_message(report))
    return {"ok": True, "summary": report["summary"], "findings": report["findings"][:20]}
