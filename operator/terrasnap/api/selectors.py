"""Label selectors (equality and existence forms), as the apiserver evaluates them: `a=b,c!=d,e,!f`.

The operator passes its `--selector` to the apiserver for DatasetSnapshots and SnapshotStores, and checks
the same selector itself where it reaches objects another way (a Job's snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping


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
