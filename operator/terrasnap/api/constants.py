"""Names shared by the CRDs, the planner, the controller and the GC."""

from __future__ import annotations

GROUP = "terrasnap.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

SNAPSHOT_KIND = "DatasetSnapshot"
SNAPSHOT_PLURAL = "datasetsnapshots"
STORE_KIND = "SnapshotStore"
STORE_PLURAL = "snapshotstores"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "terrasnap"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_SNAPSHOT = f"{GROUP}/snapshot"
LABEL_GENERATION = f"{GROUP}/generation"
LABEL_STORE = f"{GROUP}/store"
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
# Set (to any new value, e.g. a timestamp) to run a snapshot's Job again without changing its spec:
#   kubectl annotate dsnap NAME terrasnap.io/retry="$(date +%s)" --overwrite
ANNOTATION_RETRY = f"{GROUP}/retry"

# Status history bound (CRD: status.history maxItems).
HISTORY_LIMIT = 20

# Phases of a DatasetSnapshot.
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
PHASES = (PENDING, RUNNING, SUCCEEDED, FAILED)

# Condition types.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
