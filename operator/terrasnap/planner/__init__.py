"""terrasnap.planner: pure functions from resources to the objects the operator creates and the status it
writes. No I/O: every function takes plain dicts/dataclasses and returns new ones.

- `names`: deterministic Job / CronJob / Secret names.
- `job`: DatasetSnapshot spec → snapshot Job (and the credentials Secret copy it needs).
- `cronjob`: SnapshotStore → GC CronJob.
- `status`: (status, Job, termination message) → new status and the Events to announce.
- `store_status`: (status, reconcile outcome) → new SnapshotStore status and the Events to announce.
"""
