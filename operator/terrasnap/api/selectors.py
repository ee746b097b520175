"""Label selectors (equality and existence forms), as the apiserver evaluates them: `a=b,c!=d,e,!f`.

The operator passes its `--selector` to the apiserver for DatasetSnapshots and SnapshotStores, and checks
the same selector itself where it reaches objects another way (a Job's snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def matches(labels: Mapping[str, str] | None, selector: str | None) -> bool:
    labels = labels or {}
    for raw in (selector or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str] | None) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions, ANDed) as the apiserver evaluates it; the
    empty selector matches everything. Operators: In, NotIn, Exists, DoesNotExist."""
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), list(expr.get("values") or ())
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an operator we do not know selects nothing (the CRD allows only these four)
    return True
