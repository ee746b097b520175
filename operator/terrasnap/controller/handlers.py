"""kopf handlers: thin. Each one reads what it needs, asks the planner what to do, and does it.

Handlers are sync (kopf runs them in its thread pool) and idempotent: deterministic names, HTTP 409 on
create means "already there", and status writes are computed from a fresh read with a resourceVersion
precondition. Nothing here writes `spec`, and the Job handler never patches Jobs (it only reads them).

API verbs used (for the chart's RBAC):
- terrasnap.io datasetsnapshots: get, list, watch, patch (kopf's progress/diff-base annotations);
  datasetsnapshots/status: patch.
- terrasnap.io snapshotstores: get, list, watch, patch (annotations); snapshotstores/status: patch.
- batch jobs: get, list, watch, create, delete.  batch cronjobs: get, create, patch (operator namespace).
- core pods: list (to read termination messages).
- core serviceaccounts: create (the worker ServiceAccount, once per namespace with snapshots).
- core events: create (kopf posts them with the core/v1 API).
- core secrets: get (the Secrets stores name: existence check, and the source of copies), create +
  delete (per-Job copies in snapshot namespaces, the GC copy in the operator's namespace) — the copies only
  when a store's Secret lives in another namespace than the pod that mounts it.
- core namespaces: list, watch — only with namespace globs (`-n 'team-*'`); not cluster-wide.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import kopf

from terrasnap.api import conditions as cond
from terrasnap.api import selectors
from terrasnap.api.config import OperatorConfig
from terrasnap.api.constants import (
    ANNOTATION_RETRY,
    FAILED,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_SNAPSHOT,
    MANAGED_BY,
    READY,
    SNAPSHOT_KIND,
    SNAPSHOT_PLURAL,
    STORE_PLURAL,
    SUCCEEDED,
    VERSION,
)
from terrasnap.api.models import SpecError, StoreSpec
from terrasnap.controller import kube as k
from terrasnap.controller import metrics
from terrasnap.planner import names
from terrasnap.planner import status as st
from terrasnap.planner.common import SecretCopy, owner_reference, secret_copy_manifest
from terrasnap.planner.cronjob import cronjob_differs, plan_gc_cronjob
from terrasnap.planner.job import CONTAINER, JobPlan, plan_job, worker_service_account

log = logging.getLogger("terrasnap.operator")


@dataclass
class Context:
    config: OperatorConfig
    kube: k.Kube
    service_accounts: set[str] = field(default_factory=set)  # namespaces with the worker SA ensured
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)  # SnapshotStores seen by the watch
    seen_jobs: dict[str, tuple[str, int]] = field(default_factory=dict)  # Job uid → (state, failed pods)


_context: Context | None = None
KOPF_PREFIX = f"kopf.{GROUP}"
# Set by run.main: watching the whole cluster needs no namespace scanning (and no RBAC for it).
WATCH_CLUSTERWIDE = True
# Set by run.main (--selector): serve only DatasetSnapshots and SnapshotStores with these labels.
SELECTOR: str | None = None


def context() -> Context:
    global _context
    if _context is None:
        _context = Context(config=OperatorConfig.from_env(), kube=k.Kube())
    return _context


def set_context(ctx: Context | None) -> None:
    global _context
    _context = ctx


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(body), default=dict))


def _event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(
            kopf.Body(cast(Any, dict(obj))), type=type_, reason=reason, message=st.redact(message)[:1024]
        )
    except Exception:  # events are best effort; never fail a reconcile because of one
        log.debug("could not post event %s", reason, exc_info=True)


# --- settings ------------------------------------------------------------------------------------------


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    import os

    # Own status fields only; kopf's progress and diff base live in annotations (never pruned).
    # (Prefix `kopf.terrasnap.io`, not `terrasnap.io`: kopf hides its storage prefix from diffs, and
    # `terrasnap.io/retry` must stay visible to the update handler.)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"  # unused: no deletion handlers, no finalizers
    # Silent watch freezes (kopf #585, #810): bounded server and client timeouts, then re-list.
    settings.watching.server_timeout = int(os.environ.get("TERRASNAP_WATCH_SERVER_TIMEOUT", "270"))
    settings.watching.client_timeout = float(os.environ.get("TERRASNAP_WATCH_CLIENT_TIMEOUT", "300"))
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Only the Jobs we made, filtered by the apiserver.
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if SELECTOR:
        settings.watching.label_selectors[GROUP, SNAPSHOT_PLURAL] = SELECTOR
        settings.watching.label_selectors[GROUP, STORE_PLURAL] = SELECTOR
    # No CRD/namespace scanning (fewer RBAC rules) when cluster-wide; namespace globs (-n 'team-*') need it.
    settings.scanning.disabled = WATCH_CLUSTERWIDE
    # kopf would turn handler log lines into Events; we post our own on transitions.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "terrasnap-operator"
    settings.batching.error_delays = (1, 2, 5, 10, 20, 30, 60)
    # Handlers are sync and mostly wait on the apiserver: more threads than cores.
    settings.execution.max_workers = int(os.environ.get("TERRASNAP_WORKERS", "32"))
    # kopf runs one worker per object and its HTTP client has no connection limit: 1,000 new objects would
    # open hundreds of TLS connections (RSS!). Bound the concurrent per-object workers and event posters.
    settings.queueing.worker_limit = int(os.environ.get("TERRASNAP_WORKER_LIMIT", "128"))
    settings.posting.worker_limit = 8
    settings.queueing.idle_timeout = 0.3  # a worker keeps its slot while idle: release it soon
    ctx = context()
    log.info(
        "terrasnap operator: namespace %s, worker image %s", ctx.config.namespace, ctx.config.worker_image
    )


# --- DatasetSnapshot -----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, SNAPSHOT_PLURAL)
@kopf.on.create(GROUP, VERSION, SNAPSHOT_PLURAL)
@kopf.on.update(GROUP, VERSION, SNAPSHOT_PLURAL, field="spec")
@kopf.on.update(GROUP, VERSION, SNAPSHOT_PLURAL, field=("metadata", "annotations", ANNOTATION_RETRY))
def reconcile_snapshot(body: kopf.Body, reason: str = "", **_: Any) -> None:
    try:
        _reconcile_snapshot(_plain(body), created=reason == "create")
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception:
        metrics.RECONCILE_ERRORS.labels(resource=SNAPSHOT_PLURAL).inc()
        raise


def _reconcile_snapshot(obj: dict[str, Any], created: bool = False) -> None:
    ctx = context()
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 1)
    path = k.snapshot_path(namespace, name)
    now = cond.now()
    store_name = (obj.get("spec") or {}).get("store") or ""

    store_obj = _store(store_name) if store_name else None
    if store_obj is None:
        _write_invalid(path, generation, "StoreNotFound", f"SnapshotStore {store_name!r} does not exist", now)
        raise kopf.TemporaryError(f"SnapshotStore {store_name!r} not found", delay=15)
    try:
        store = StoreSpec.from_dict(store_obj.get("spec"))
        plan = plan_job(obj, store_name, store, ctx.config)
    except SpecError as exc:
        _write_invalid(path, generation, "InvalidSpec", str(exc), now)
        return

    if st.is_settled(obj.get("status"), generation, plan.name):
        return  # this generation's Job already ran (it may have been removed by its TTL since)
    if not created:  # a new object has no older Jobs (those of a deleted namesake have another owner)
        _supersede(obj, plan)
    if plan.secret_copy is not None:
        owner = owner_reference(obj, controller=False)
        if not _copy_secret(plan.secret_copy, plan.labels, owner):
            message = f"store credentials Secret {plan.secret_copy.source_namespace}/{plan.secret_copy.source_name} not found"
            _write_invalid(path, generation, "CredentialsNotFound", message, now)
            raise kopf.TemporaryError(message, delay=30)

    _ensure_worker_service_account(namespace)
    _, created = ctx.kube.create(k.jobs_path(namespace), plan.manifest)
    if created:
        metrics.JOBS_CREATED.inc()
        log.info("created Job %s/%s for generation %d", namespace, plan.name, generation)
    result = ctx.kube.update_status(
        path, lambda fresh: st.planned(fresh.get("status"), generation, plan.name, now), current=obj
    )
    _announce(result)


def _store(name: str) -> dict[str, Any] | None:
    """The SnapshotStore from the watch's cache, else from the apiserver."""
    ctx = context()
    cached = ctx.stores.get(name)
    if cached is not None:
        return cached
    found = ctx.kube.get(k.store_path(name))
    if found is not None:
        ctx.stores[name] = found
    return found


def _ensure_worker_service_account(namespace: str) -> None:
    ctx = context()
    if namespace in ctx.service_accounts:
        return
    ctx.kube.create(k.service_accounts_path(namespace), worker_service_account(namespace, ctx.config))
    ctx.service_accounts.add(namespace)


def _write_invalid(path: str, generation: int, reason: str, message: str, now: str) -> None:
    result = context().kube.update_status(
        path, lambda fresh: st.invalid(fresh.get("status"), generation, reason, message, now)
    )
    _announce(result)


def _announce(result: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None) -> None:
    """Events and metrics for a status change."""
    if result is None:
        return
    obj, old, new = result
    meta = obj["metadata"]
    metrics.PHASE_TRACKER.set(meta["namespace"], meta["name"], new.get("phase"))
    for event in st.events(old, new):
        _event(obj, event.type, event.reason, event.message)
        if new.get("phase") == FAILED:
            metrics.FAILURES.labels(reason=event.reason).inc()


def _supersede(obj: Mapping[str, Any], plan: JobPlan) -> None:
    """Delete unfinished Jobs of earlier specs of this snapshot (the new spec supersedes them)."""
    ctx = context()
    meta = obj["metadata"]
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SNAPSHOT}={meta['name']}"
    for job in ctx.kube.list(k.jobs_path(meta["namespace"]), selector):
        job_meta = job.get("metadata") or {}
        if job_meta.get("name") == plan.name:
            continue
        owners = {ref.get("uid") for ref in job_meta.get("ownerReferences") or ()}
        if meta["uid"] not in owners or st.JobView.from_job(job).finished:
            continue
        if ctx.kube.delete(k.jobs_path(meta["namespace"], job_meta["name"]), propagation="Background"):
            metrics.JOBS_SUPERSEDED.inc()
            _delete_secret_copy(job)
            _event(obj, "Normal", "Superseded", f"Job {job_meta['name']} deleted: the spec changed")


def _copy_secret(copy: SecretCopy, labels: Mapping[str, str], owner: dict[str, Any]) -> bool:
    """Create (or refresh, after a rotation) the copy of a store Secret: only its one key. False if the
    source Secret or its key is missing. Values are passed through as base64 text, never decoded or logged."""
    ctx = context()
    source = ctx.kube.get(k.secrets_path(copy.source_namespace, copy.source_name))
    value = ((source or {}).get("data") or {}).get(copy.source_key)
    if value is None:
        return False
    manifest = secret_copy_manifest(copy, value, labels=labels, owner=owner)
    _, created = ctx.kube.create(k.secrets_path(copy.namespace), manifest)
    if not created:
        # An earlier copy exists. Replace it (copies are immutable) so a rotated key reaches the next pod —
        # without reading it: the operator may create and delete Secrets there, never get them.
        ctx.kube.delete(k.secrets_path(copy.namespace, copy.name))
        ctx.kube.create(k.secrets_path(copy.namespace), manifest)
    return True


def _delete_secret_copy(job: Mapping[str, Any]) -> None:
    """Delete the per-Job credentials copy once the Job no longer needs it."""
    meta = job.get("metadata") or {}
    copy_name = names.store_secret_name(meta.get("name", ""))
    volumes = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or ()
    if any((v.get("secret") or {}).get("secretName") == copy_name for v in volumes):
        context().kube.delete(k.secrets_path(meta["namespace"], copy_name))


@kopf.on.event(GROUP, VERSION, SNAPSHOT_PLURAL)
def track_snapshot(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Keeps the phase gauge current (no writes)."""
    meta = body.get("metadata") or {}
    if event.get("type") == "DELETED":
        metrics.PHASE_TRACKER.forget(meta.get("namespace", ""), meta.get("name", ""))
    else:
        metrics.PHASE_TRACKER.set(
            meta.get("namespace", ""), meta.get("name", ""), (body.get("status") or {}).get("phase")
        )


# --- Jobs --------------------------------------------------------------------------------------------------


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "snapshot"})
def observe_job(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """A snapshot Job changed: fold its state (and its pod's result when it ended) into the status.

    Never patches the Job and returns nothing (kopf would write a return value into the Job's status).
    """
    uid = (body.get("metadata") or {}).get("uid", "")
    if event.get("type") == "DELETED":
        context().seen_jobs.pop(uid, None)
        return
    try:
        _observe_job(_plain(body))
    except Exception:
        metrics.RECONCILE_ERRORS.labels(resource="jobs").inc()
        log.exception("observing Job %s failed", (body.get("metadata") or {}).get("name"))


def _observe_job(job: dict[str, Any]) -> None:
    ctx = context()
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
    snapshot = ctx.kube.get(path)
    if snapshot is None or snapshot["metadata"].get("uid") not in owner_uids:
        return
    if not selectors.matches(snapshot["metadata"].get("labels"), SELECTOR):
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
    result = _termination_result(namespace, view.name) if view.finished else None
    now = cond.now()

    def compute(fresh: dict[str, Any]) -> dict[str, Any] | None:
        fresh_generation = int(fresh["metadata"].get("generation") or 1)
        if fresh["metadata"].get("uid") not in owner_uids or fresh_generation != view.generation:
            return None
        return st.observed(fresh.get("status"), fresh_generation, view, result, now)

    written = ctx.kube.update_status(path, compute, current=snapshot)
    ctx.seen_jobs[meta.get("uid", "")] = fingerprint
    _announce(written)
    if view.finished and written is not None and written[1].get("phase") not in (SUCCEEDED, FAILED):
        _delete_secret_copy(job)
        duration = _seconds_between(view.started_at, view.completed_at)
        if duration is not None:
            metrics.JOB_DURATION.labels(outcome=view.state).observe(duration)


def _termination_result(namespace: str, job_name: str) -> st.EngineResult | None:
    """The engine result from the termination message of the Job's most recent terminated pod."""
    pods = context().kube.list(k.pods_path(namespace), f"job-name={job_name}")
    candidates: list[tuple[str, str]] = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            if status.get("name") != CONTAINER:
                continue
            terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
                "terminated"
            )
            if terminated and terminated.get("message"):
                candidates.append((terminated.get("finishedAt") or "", terminated["message"]))
    for _finished, message in sorted(candidates, reverse=True):
        result = st.parse_result(message)
        if result is not None:
            return result
    return None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
        return max(0.0, (parse(end) - parse(start)).total_seconds())
    except ValueError:
        return None


# --- SnapshotStore -------------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, STORE_PLURAL)
def track_store(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Keeps the store cache current (no writes)."""
    name = (body.get("metadata") or {}).get("name", "")
    if event.get("type") == "DELETED":
        context().stores.pop(name, None)
    else:
        context().stores[name] = {"metadata": {"name": name}, "spec": _plain(body).get("spec") or {}}


@kopf.on.resume(GROUP, VERSION, STORE_PLURAL)
@kopf.on.create(GROUP, VERSION, STORE_PLURAL)
@kopf.on.update(GROUP, VERSION, STORE_PLURAL, field="spec")
def reconcile_store(body: kopf.Body, **_: Any) -> None:
    try:
        _reconcile_store(_plain(body))
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception:
        metrics.RECONCILE_ERRORS.labels(resource=STORE_PLURAL).inc()
        raise


def _reconcile_store(obj: dict[str, Any]) -> None:
    ctx = context()
    name = obj["metadata"]["name"]
    generation = int(obj["metadata"].get("generation") or 1)
    path = k.store_path(name)
    now = cond.now()
    try:
        plan = plan_gc_cronjob(obj, ctx.config)
    except SpecError as exc:
        _write_store_status(path, generation, now, ok=False, reason="InvalidSpec", message=str(exc))
        return
    if plan.secret_copy is not None:
        owner = owner_reference(obj, controller=False)
        if not _copy_secret(plan.secret_copy, plan.manifest["metadata"]["labels"], owner):
            message = (
                f"credentials Secret {plan.secret_copy.source_namespace}/{plan.secret_copy.source_name} "
                f"has no key {plan.secret_copy.source_key!r} (or does not exist)"
            )
            _write_store_status(
                path, generation, now, ok=False, reason="CredentialsNotFound", message=message
            )
            raise kopf.TemporaryError(message, delay=30)
    else:
        store = StoreSpec.from_dict(obj.get("spec"))
        if store.credentials is not None:
            secret = ctx.kube.get(
                k.secrets_path(store.credentials.namespace or ctx.config.namespace, store.credentials.name)
            )
            if secret is None or store.credentials.key not in (secret.get("data") or {}):
                message = f"credentials Secret {store.credentials.name} has no key {store.credentials.key!r} (or does not exist)"
                _write_store_status(
                    path, generation, now, ok=False, reason="CredentialsNotFound", message=message
                )
                raise kopf.TemporaryError(message, delay=30)

    cronjobs = k.cronjobs_path(plan.namespace)
    _, created = ctx.kube.create(cronjobs, plan.manifest)
    if not created:
        existing = ctx.kube.get(k.cronjobs_path(plan.namespace, plan.name)) or {}
        if cronjob_differs(existing, plan.manifest):
            ctx.kube.patch(
                k.cronjobs_path(plan.namespace, plan.name),
                {"metadata": {"labels": plan.manifest["metadata"]["labels"]}, "spec": plan.manifest["spec"]},
            )
            log.info("updated GC CronJob %s/%s", plan.namespace, plan.name)
    schedule = plan.manifest["spec"]["schedule"]
    suspended = " (suspended)" if plan.manifest["spec"]["suspend"] else ""
    _write_store_status(
        path,
        generation,
        now,
        ok=True,
        reason="Configured",
        message=f"GC CronJob {plan.namespace}/{plan.name} scheduled {schedule!r}{suspended}",
        cronjob={"namespace": plan.namespace, "name": plan.name},
    )


def _write_store_status(
    path: str,
    generation: int,
    now: str,
    *,
    ok: bool,
    reason: str,
    message: str,
    cronjob: dict[str, str] | None = None,
) -> None:
    def compute(fresh: dict[str, Any]) -> dict[str, Any]:
        old = fresh.get("status") or {}
        new = json.loads(json.dumps(old))
        new["observedGeneration"] = generation
        if cronjob is not None:
            new["cronJob"] = cronjob
        new["conditions"] = cond.kstatus(
            old.get("conditions"),
            generation=generation,
            when=now,
            ready=ok,
            ready_reason=cond.Reason(reason, message),
            stalled=None if ok else cond.Reason(reason, message),
        )
        return new

    result = context().kube.update_status(path, compute)
    if result is None:
        return
    obj, old, new = result
    before = cond.get_condition(old.get("conditions"), READY) or {}
    after = cond.get_condition(new.get("conditions"), READY) or {}
    if (before.get("status"), before.get("reason")) != (after.get("status"), after.get("reason")):
        _event(obj, "Normal" if ok else "Warning", reason, message)
