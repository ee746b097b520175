"""The policy is written once (api/policy.py): the shipped CRD, the CLI, the spec model, the engine's Policy
and the README agree with it field by field, and every rule the engine emits is in its table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from terrasnap.api import policy as schema
from terrasnap.api.models import SnapshotSpec, SpecError, ValidationPolicy
from terrasnap.cli import _policy, main
from terrasnap.engine.validate import Policy

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "terrasnap.io_datasetsnapshots.yaml"  # the shipped file, never a copy


def crd_validation_schema() -> dict[str, Any]:
    doc = yaml.safe_load(CRD.read_text())
    (version,) = doc["spec"]["versions"]
    schema_: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["validation"]
    return schema_


def test_the_crd_validation_schema_is_the_one_definition() -> None:
    crd = crd_validation_schema()
    assert crd == schema.validation_schema(), "the CRD drifted from terrasnap.api.policy: run `make crds`"
    # and field by field, so a failure says which
    assert list(crd["properties"]) == list(schema.SPEC_FIELDS)
    for f in schema.FIELDS:
        prop = crd["properties"][f.name]
        assert prop["default"] == f.default, f.name
        assert prop.get("enum") == (list(f.choices) if f.choices else None), f.name
        assert prop.get("pattern") == f.pattern, f.name
    rules = crd["properties"]["rules"]
    assert rules["additionalProperties"] == {"type": "string", "enum": ["error", "warning", "off"]}
    cel = [c["rule"] for c in rules["x-kubernetes-validations"]]
    assert all(f'"{name}"' in cel[0] for name in schema.RULE_NAMES)
    assert len(re.findall(r'"[a-z0-9_-]+"', cel[0])) == len(schema.RULES)
    refusing = sorted(r.name for r in schema.RULES if not r.downgradable)
    assert sorted(re.match(r'!\("([^"]+)"', c).group(1) for c in cel[1:]) == refusing  # type: ignore[union-attr]


def test_the_chart_ships_the_same_crd() -> None:
    assert (REPO / "charts" / "terrasnap" / "crds" / CRD.name).read_bytes() == CRD.read_bytes()


@pytest.mark.parametrize("command", ["snapshot", "validate"])
def test_the_cli_has_every_policy_option(command: str) -> None:
    cmd = main.commands[command]  # type: ignore[attr-defined]
    params = {opt: p for p in cmd.params for opt in p.opts}
    for f in schema.FIELDS:
        p = params[f.flag]
        assert p.default is None, f"{f.flag} must default to None so the --policy file can set it"
        if f.choices:
            assert isinstance(p.type, click.Choice) and tuple(p.type.choices) == f.choices
        assert f"[default: {f.default}]" in (p.help or "")
    assert params[schema.RULE_FLAG].multiple
    assert schema.POLICY_FILE_FLAG in params


def test_the_engine_policy_has_every_field_and_rule() -> None:
    d = Policy().to_dict()
    assert sorted(d) == sorted(schema.SPEC_FIELDS)
    for f in schema.FIELDS:
        assert d[f.name] == f.default
    assert tuple(d["rules"]) == schema.RULE_NAMES
    assert d["rules"] == {r.name: r.default for r in schema.RULES}


def test_the_spec_model_agrees() -> None:
    v = ValidationPolicy()
    assert (v.target_crs, v.invalid_geometry, v.missing_crs) == tuple(f.default for f in schema.FIELDS)
    parsed = ValidationPolicy.from_dict({"rules": {"crs-mixed": "warning", "raster-cog": "off"}})
    assert parsed.rules == {"crs-mixed": "warning", "raster-cog": "off"}
    for bad, message in [({"rules": {"nope": "warning"}}, "unknown rule 'nope'"),
                         ({"rules": {"parse": "off"}}, "rules.parse: cannot be set to off"),
                         ({"rules": {"crs-mixed": "warn"}}, "level must be one of error, warning, off"),
                         ({"targetCRS": "4326"}, "validation.targetCRS")]:
        with pytest.raises(SpecError, match=re.escape(message)):
            ValidationPolicy.from_dict(bad)


SPECS = [
    {},
    {"targetCRS": "EPSG:3857", "invalidGeometry": "repair", "missingCRS": "assume:EPSG:32633"},
    {"rules": {"crs-mixed": "warning", "rfc7946-crs": "warning", "raster-grid": "off", "repaired": "error"}},
]


@pytest.mark.parametrize("spec", SPECS)
def test_a_spec_reaches_the_engine_as_the_same_policy(spec: dict[str, Any]) -> None:
    """spec.validation -> the Job's arguments (planner) -> the CLI's parsing -> the engine's Policy."""
    snap = SnapshotSpec.from_dict({"store": "main", "source": {"bucket": {"url": "gs://b/p"}}, "validation": spec})
    args = snap.validation.arguments()
    ctx = main.commands["snapshot"].make_context(  # type: ignore[attr-defined]
        "snapshot", ["SRC", "--store", "file:///s", *args])
    p = ctx.params
    policy = _policy(p["policy_file"], p["rules"], target_crs=p["target_crs"],
                     invalid_geometry=p["invalid_geometry"], missing_crs=p["missing_crs"])
    assert policy == Policy.from_spec(spec)
    assert policy.to_dict() == Policy.from_spec(spec).to_dict()


def test_the_job_passes_the_spec_rules_to_the_engine() -> None:
    from terrasnap.api.models import StoreSpec
    from terrasnap.planner.job import command_args

    spec = SnapshotSpec.from_dict({"store": "main", "source": {"bucket": {"url": "gs://b/p"}},
                                   "validation": {"rules": {"rfc7946-crs": "warning", "crs-mixed": "warning"}}})
    args = command_args("s", "ns", spec, StoreSpec(url="gs://store/dvc"))
    rules = [args[i + 1] for i, a in enumerate(args) if a == schema.RULE_FLAG]
    assert rules == ["crs-mixed=warning", "rfc7946-crs=warning"]
    assert args[args.index("--target-crs") + 1] == "EPSG:4326"


def test_every_rule_the_engine_emits_is_in_the_table() -> None:
    src = REPO / "operator" / "terrasnap" / "engine"
    text = "\n".join(p.read_text() for p in [*(src / "validate").glob("*.py"), src / "stage.py"])
    emitted = set(re.findall(r'(?:\badd\(|judge\(i, |Finding\(|fail\(.*?, |severity\()"([a-z0-9_-]+)"', text))
    emitted |= set(re.findall(r'(?:rule = |if closed else |\n\s+else |"rule": )"([a-z0-9_-]+)"', text))
    assert {"parse", "crs-mixed", "raster-grid", "wkb", "source", "is_valid"} <= emitted  # the scan works
    assert emitted <= set(schema.RULE_NAMES), emitted - set(schema.RULE_NAMES)


def test_the_readme_rule_table_lists_every_rule() -> None:
    readme = (REPO / "README.md").read_text()
    for r in schema.RULES:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{r.name}` |")), None)
        assert row is not None, f"README has no row for {r.name}"
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == r.default and cells[2] == ("yes" if r.downgradable else "no"), row
