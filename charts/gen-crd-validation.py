"""Write the DatasetSnapshot CRD's `spec.validation` schema from its one definition, `terrasnap.api.policy`.

Run after any change to the policy's fields or rule table (`make crds` runs this, then charts/sync-crds.sh);
tests/unit/test_policy_schema.py fails when the CRD and the definition drift apart. Only the `validation:`
block is rewritten; the rest of the CRD (descriptions, other fields) is hand-written and left as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from terrasnap.api.policy import validation_schema

CRD = Path(__file__).resolve().parents[1] / "crds" / "terrasnap.io_datasetsnapshots.yaml"
INDENT = 16  # spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.<field>


def scalar(value: Any) -> str:
    if value == "off":
        return '"off"'  # a bare off is YAML 1.1's false
    out = yaml.safe_dump(value, width=10000).strip()
    return out[:-3].strip() if out.endswith("...") else out


def emit(node: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in node.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            emit(value, indent + 2, lines)
        elif isinstance(value, dict):
            lines.append(f"{pad}{key}: {{}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key}:")
            for item in value:
                for n, (k, v) in enumerate(item.items()):
                    lines.append(f"{pad}  {'- ' if n == 0 else '  '}{k}: {scalar(v)}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(scalar(x) for x in value)}]")
        else:
            lines.append(f"{pad}{key}: {scalar(value)}")


def main() -> int:
    schema = validation_schema()
    lines = [" " * INDENT + "validation:"]
    emit(schema, INDENT + 2, lines)
    text = CRD.read_text()
    start = text.index(" " * INDENT + "validation:\n")
    end = text.index(" " * INDENT + "image:\n")  # the field after validation in the CRD
    CRD.write_text(text[:start] + "\n".join(lines) + "\n" + text[end:])
    doc = yaml.safe_load(CRD.read_text())
    written = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    if written["validation"] != schema:
        print(f"{CRD}: the written block does not read back as the schema", file=sys.stderr)
        return 1
    print(f"gen-crd-validation: {CRD.name} spec.validation written from terrasnap.api.policy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
