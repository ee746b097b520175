"""Garbage collection of a terrasnap store that never deletes an object a root or an in-flight snapshot needs.

* `decision`: the pure rule (`plan_deletions`), metadata and `.dir` parsing, manifest folders;
* `report`: `GCReport`, the document every run leaves in the store;
* `run`: `GCRun`, one run as named steps, and `run_gc`;
* `cluster`: `terrasnap gc --store NAME`, roots from the cluster's DatasetSnapshots (imports kubernetes).
The protocol shared with engine/refs.py is written down in docs/gc.md; the command is in cli.py.
"""

from terrasnap.engine.errors import GCFailedClosed
from terrasnap.engine.gc.decision import Decision, dir_entries, parse_metadata_objects, plan_deletions
from terrasnap.engine.gc.report import GCReport
from terrasnap.engine.gc.run import DEFAULT_BATCH, DEFAULT_GRACE, GCRun, run_gc

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_GRACE",
    "Decision",
    "GCFailedClosed",
    "GCReport",
    "GCRun",
    "dir_entries",
    "parse_metadata_objects",
    "plan_deletions",
    "run_gc",
]
