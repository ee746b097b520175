"""terrasnap.api: the DatasetSnapshot and SnapshotStore resources as Python values — pure, no I/O.

`models` parses a resource's spec (with the same defaults as the CRD schema), `conditions` is the one place
that writes metav1.Conditions, `durations` parses `24h`/`90d`.
"""

from terrasnap.api.constants import (
    API_VERSION,
    GROUP,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_SNAPSHOT,
    LABEL_STORE,
    MANAGED_BY,
    VERSION,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "LABEL_GENERATION",
    "LABEL_MANAGED_BY",
    "LABEL_SNAPSHOT",
    "LABEL_STORE",
    "MANAGED_BY",
    "VERSION",
]
