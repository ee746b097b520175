"""DatasetSnapshots and their Jobs: reconcile a spec into one Job, fold the Job's state into the status.

Idempotent: the Job's name is deterministic (spec hash + retry annotation), a create answered with HTTP 409
means "already there", and status writes are computed from a fresh read with a resourceVersion
precondition. Nothing here writes `spec`, and Jobs are never patched (only read, created, deleted).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from terrasnap import kube as k
from terrasnap.api import conditions as cond
from terrasnap.api import selectors
from terrasnap.api.constants import (
    FAILED,
    LABEL_MANAGED_BY,
    LABEL_SNAPSHOT,
    MANAGED_BY,
    SNAPSHOT_KIND,
    SUCCEEDED,
)
from terrasnap.api.models import SpecError, StoreSpec
from terrasnap.controller import metrics
from terrasnap.controller.context import Context, Retry, track_phase
from terrasnap.planner import results, store_status
from terrasnap.planner import status as st
from terrasnap.planner.common import owner_reference
from terrasnap.planner.job import (
    CONTAINER,
    FETCH_CONTAINER,
    PIPELINE_CONTAINER,
    JobPlan,
    plan_job,
    worker_service_account,
)

log = logging.getLogger("terrasnap.operator")
StatusWrite = tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None


def reconcile_snapshot(ctx: Context, obj: dict[str, Any], now: str, *, created: bool = False) -> None:
    """Ensure the Job of the snapshot's current generation (and delete unfinished Jobs of older specs).

    `created`: the object is new (kopf's create cause), so it has no older Jobs to supersede.
    Raises Retry while the store or its credentials are missing.
    """
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 1)
    path = k.snapshot_path(namespace, name)
    store_name = (obj.get("spec") or {}).get("store") or ""

    store_obj = ctx.store(store_name) if store_name else None
    if store_obj is None:
        _write_invalid(
            ctx, path, generation, "StoreNotFound", f"SnapshotStore {store_name!r} does not exist", now
        )
        raise Retry(f"SnapshotStore {store_name!r} not found", delay=15)
    try:
        store = StoreSpec.from_dict(store_obj.get("spec"))
    except SpecError as exc:
        message = f"SnapshotStore {store_name!r} is invalid: {exc}"
        _write_invalid(ctx, path, generation, "StoreNotReady", message, now)
        raise Retry(message, delay=60) from exc
    conflict = store_status.overlapping_store(store_obj, ctx.stores.values())
    if conflict is not None:
        message = f"SnapshotStore {store_name!r} is not Ready: {conflict}"
        _write_invalid(ctx, path, generation, "StoreConflict", message, now)
        raise Retry(message, delay=120)
    if not store.allowed_namespaces.allows(ctx.namespace_labels(namespace)):
        # No Job and no Secret; relabelling the namespace reconciles again (namespace_changed).
        message = (f"SnapshotStore {store_name!r} does not allow namespace {namespace!r} "
                   f"(its spec.allowedNamespaces selects namespaces by label)")
        _write_invalid(ctx, path, generation, NAMESPACE_NOT_ALLOWED, message, now)
        return
    try:
        plan = plan_job(obj, store_name, store, ctx.config)
    except SpecError as exc:
        _write_invalid(ctx, path, generation, exc.reason, str(exc), now)
        return

    if st.is_settled(obj.get("status"), generation, plan.name):
        return  # this generation's Job already ran (it may have been removed by its TTL since)
    if not created:  # a new object has no older Jobs (those of a deleted namesake have another owner)
        supersede(ctx, obj, plan)
    if plan.secret_copy is not None:
        owner = owner_reference(obj, controller=False)
        try:
            copied = ctx.copy_secret(plan.secret_copy, plan.labels, owner)
        except k.KubeError as exc:
            if exc.status != 403:
                raise
            message = (f"the operator may not create Secrets in namespace {namespace!r} to share the store's "
                       "credentials (chart: rbac.credentialCopies=true)")
            _write_invalid(ctx, path, generation, "CredentialsNotFound", message, now)
            raise Retry(message, delay=60) from exc
        if not copied:
            source = f"{plan.secret_copy.source_namespace}/{plan.secret_copy.source_name}"
            message = f"store credentials Secret {source} not found"
            _write_invalid(ctx, path, generation, "CredentialsNotFound", message, now)
            raise Retry(message, delay=30)

    _ensure_worker_service_account(ctx, namespace)
    try:
        _, job_created = ctx.client.create(k.jobs_path(namespace), plan.manifest)
    except k.KubeError as exc:
        if exc.status not in (403, 422):  # 403: a quota or admission policy; 422: the manifest itself
            raise
        message = f"the API server refused Job {plan.name}: {exc.message or exc.reason}"
        _write_invalid(ctx, path, generation, "JobRejected", message, now)
        raise Retry(message, delay=60) from exc
    if job_created:
        metrics.JOBS_CREATED.inc()
        log.info("created Job %s/%s for generation %d", namespace, plan.name, generation)
    result = ctx.client.update_status(
        path, lambda fresh: st.planned(fresh.get("status"), generation, plan.name, now), current=obj
    )
    _announce(ctx, result)


NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"


def namespace_changed(ctx: Context, namespace: Mapping[str, Any], now: str, *, deleted: bool = False) -> None:
    """Keep the Namespace label cache; when a namespace's labels change, reconcile its snapshots that a
    store refused (NamespaceNotAllowed), so labelling a namespace is picked up without a restart."""
    meta = namespace.get("metadata") or {}
    name = meta.get("name") or ""
    if deleted:
        ctx.namespaces.pop(name, None)
        return
    labels = dict(meta.get("labels") or {})
    before = ctx.namespaces.get(name)
    ctx.namespaces[name] = labels
    if before is None or before == labels:
        return  # first sight (startup or a new namespace: its snapshots are reconciled on their own) or no change
    for snapshot in ctx.client.list(k.snapshot_path(name), ctx.config.selector):
        ready = cond.get_condition((snapshot.get("status") or {}).get("conditions"), "Ready") or {}
        if ready.get("reason") == NAMESPACE_NOT_ALLOWED:
            log.info("namespace %s relabelled: reconciling %s", name, snapshot["metadata"]["name"])
            reconcile_snapshot(ctx, snapshot, now)


def supersede(ctx: Context, obj: Mapping[str, Any], plan: JobPlan) -> None:
    """Delete unfinished Jobs of earlier specs of this snapshot (the new spec supersedes them)."""
    meta = obj["metadata"]
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SNAPSHOT}={meta['name']}"
    for job in ctx.client.list(k.jobs_path(meta["namespace"]), selector):
        job_meta = job.get("metadata") or {}
        if job_meta.get("name") == plan.name:
            continue
        owners = {ref.get("uid") for ref in job_meta.get("ownerReferences") or ()}
        if meta["uid"] not in owners or st.JobView.from_job(job).finished:
            continue
        if ctx.client.delete(k.jobs_path(meta["namespace"], job_meta["name"]), propagation="Background"):
            metrics.JOBS_SUPERSEDED.inc()
            ctx.delete_secret_copy(job)
            ctx.announce(
                obj, [st.Event("Normal", "Superseded", f"Job {job_meta['name']} deleted: the spec changed")]
            )


def _ensure_worker_service_account(ctx: Context, namespace: str) -> None:
    if namespace in ctx.service_accounts:
        return
    ctx.client.create(k.service_accounts_path(namespace), worker_service_account(namespace, ctx.config))
    ctx.service_accounts.add(namespace)


def _write_invalid(ctx: Context, path: str, generation: int, reason: str, message: str, now: str) -> None:
    result = ctx.client.update_status(
        path, lambda fresh: st.invalid(fresh.get("status"), generation, reason, message, now)
    )
    _announce(ctx, result)


def _announce(ctx: Context, result: StatusWrite) -> None:
    """Events and metrics for a status change."""
    if result is None:
        return
    obj, old, new = result
    track_phase(obj, new)
    events = st.events(old, new)
    ctx.announce(obj, events)
    if new.get("phase") == FAILED:
        for event in events:
            metrics.FAILURES.labels(reason=event.reason).inc()


# --- Jobs --------------------------------------------------------------------------------------------------


def forget_job(ctx: Context, job: Mapping[str, Any]) -> None:
    ctx.seen_jobs.pop((job.get("metadata") or {}).get("uid", ""), None)


def observe_job(ctx: Context, job: dict[str, Any], now: str) -> None:
    """A snapshot Job changed: fold its state (and its pod's result when it ended) into the status."""
    meta = job["metadata"]
    namespace = meta["namespace"]
    snapshot_name = (meta.get("labels") or {}).get(LABEL_SNAPSHOT)
    owner_uids = {
        ref.get("uid") for ref in meta.get("ownerReferences") or () if ref.get("kind") == SNAPSHOT_KIND
    }
    if not snapshot_name or not owner_uids:
        return
    view = st.JobView.from_job(job)
    fingerprint = (view.state, view.failed_pods)
    if ctx.seen_jobs.get(meta.get("uid", "")) == fingerprint:
        return  # nothing the status depends on changed since the last event of this Job
    if fingerprint == ("pending", 0):
        # A fresh Job: reconcile_snapshot wrote Pending when it created it (and resume re-plans after a
        # crash in between), so there is nothing to read or write yet.
        ctx.seen_jobs[meta.get("uid", "")] = fingerprint
        return
    path = k.snapshot_path(namespace, snapshot_name)
    snapshot = ctx.client.get(path)
    if snapshot is None or snapshot["metadata"].get("uid") not in owner_uids:
        return
    if not selectors.matches(snapshot["metadata"].get("labels"), ctx.config.selector):
        return  # another operator instance serves this snapshot
    generation = int(snapshot["metadata"].get("generation") or 1)
    if view.generation != generation:
        return  # superseded; reconcile_snapshot deletes it if it still runs
    status = snapshot.get("status") or {}
    if status.get("observedGeneration") == generation and status.get("job") not in (None, view.name):
        return  # an earlier Job of this generation (before a retry); the status follows the newer one
    if st.is_settled(snapshot.get("status"), generation, view.name):
        ctx.seen_jobs[meta.get("uid", "")] = fingerprint
        return
    result = termination_result(ctx, job, snapshot) if view.finished else None

    def compute(fresh: dict[str, Any]) -> dict[str, Any] | None:
        fresh_generation = int(fresh["metadata"].get("generation") or 1)
        if fresh["metadata"].get("uid") not in owner_uids or fresh_generation != view.generation:
            return None
        return st.observed(fresh.get("status"), fresh_generation, view, result, now)

    written = ctx.client.update_status(path, compute, current=snapshot)
    ctx.seen_jobs[meta.get("uid", "")] = fingerprint
    _announce(ctx, written)
    if view.finished and written is not None and written[1].get("phase") not in (SUCCEEDED, FAILED):
        ctx.delete_secret_copy(job)
        duration = _seconds_between(view.started_at, view.completed_at)
        if duration is not None:
            metrics.JOB_DURATION.labels(outcome=view.state).observe(duration)


def termination_result(ctx: Context, job: Mapping[str, Any], snapshot: Mapping[str, Any]) -> st.EngineResult | None:
    """The engine result the operator accepts from the Job's pods (planner.results says which)."""
    meta = job.get("metadata") or {}
    namespace, uid = meta.get("namespace", ""), meta.get("uid", "")
    pods = ctx.client.list(k.pods_path(namespace), f"batch.kubernetes.io/controller-uid={uid}")
    store_name = (snapshot.get("spec") or {}).get("store") or ""
    store_obj = ctx.store(store_name) if store_name else None
    store_url = ((store_obj or {}).get("spec") or {}).get("url")
    return results.trusted_result(
        pods, uid, main=CONTAINER, init=(FETCH_CONTAINER, PIPELINE_CONTAINER),
        store_url=store_url if isinstance(store_url, str) else None,
        namespace=namespace, name=(snapshot.get("metadata") or {}).get("name", ""),
    )  # fmt: skip


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
        return max(0.0, (parse(end) - parse(start)).total_seconds())
    except ValueError:
        return None
