"""kopf registrations, nothing else: each handler turns kopf's body into a plain dict, takes the process's
Context and the time, and calls a reconcile function in `snapshots` or `stores` (which unit tests run
against an in-memory client). Handlers are sync (kopf runs them in its thread pool).

API verbs used (for the chart's RBAC):
- terrasnap.io datasetsnapshots: get, list, watch, patch (kopf's progress/diff-base annotations);
  datasetsnapshots/status: patch.
- terrasnap.io snapshotstores: get, list, watch, patch (annotations); snapshotstores/status: patch.
- batch jobs: get, list, watch, create, delete.  batch cronjobs: get, create, patch (operator namespace).
- core pods: list (to read termination messages).
- core serviceaccounts: create (the worker ServiceAccount, once per namespace with snapshots).
- core events: create (terrasnap.kube posts them with the core/v1 API).
- core secrets: get (the Secrets stores name: existence check, and the source of copies), create +
  delete (per-Job copies in snapshot namespaces, the GC copy in the operator's namespace) — the copies only
  when a store's Secret lives in another namespace than the pod that mounts it.
- core namespaces: get, list, watch (their labels, for SnapshotStores' allowedNamespaces; kopf also lists
  them to match namespace globs such as `-n 'team-*'`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from terrasnap import kube as k
from terrasnap.api import conditions as cond
from terrasnap.api import config as operator_config
from terrasnap.api.config import OperatorConfig
from terrasnap.api.constants import (
    ANNOTATION_RETRY,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SNAPSHOT_PLURAL,
    STORE_PLURAL,
    VERSION,
)
from terrasnap.controller import metrics, snapshots, stores
from terrasnap.controller.context import Context, Retry

log = logging.getLogger("terrasnap.operator")
KOPF_PREFIX = f"kopf.{GROUP}"

_config: OperatorConfig | None = None  # set by run.main before kopf starts
_context: Context | None = None


def use_config(config: OperatorConfig) -> None:
    global _config, _context
    _config, _context = config, None


def context() -> Context:
    """The process's Context, connected on first use (so $KUBECONFIG is read when kopf starts)."""
    global _context
    if _context is None:
        config = _config if _config is not None else operator_config.load()
        _context = Context(config=config, client=k.Kube())
    return _context


def set_context(ctx: Context | None) -> None:
    global _context
    _context = ctx


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(body), default=dict))


def _run(resource: str, step: Callable[[], None]) -> None:
    """Retry → kopf.TemporaryError; anything else is counted and re-raised (kopf retries with backoff)."""
    try:
        step()
    except Retry as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception:
        metrics.RECONCILE_ERRORS.labels(resource=resource).inc()
        raise


# --- settings ------------------------------------------------------------------------------------------


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    ctx = context()
    config = ctx.config
    # Own status fields only; kopf's progress and diff base live in annotations (never pruned).
    # (Prefix `kopf.terrasnap.io`, not `terrasnap.io`: kopf hides its storage prefix from diffs, and
    # `terrasnap.io/retry` must stay visible to the update handler.)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"  # unused: no deletion handlers, no finalizers
    # Silent watch freezes (kopf #585, #810): bounded server and client timeouts, then re-list.
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_client_timeout
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Only the Jobs we made, filtered by the apiserver.
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if config.selector:
        settings.watching.label_selectors[GROUP, SNAPSHOT_PLURAL] = config.selector
        settings.watching.label_selectors[GROUP, STORE_PLURAL] = config.selector
    # No CRD/namespace scanning (fewer RBAC rules) when cluster-wide; namespace globs (-n 'team-*') need it.
    settings.scanning.disabled = config.clusterwide
    # kopf would turn handler log lines into Events; ours are posted on transitions (terrasnap.kube).
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "terrasnap-operator"
    settings.batching.error_delays = (1, 2, 5, 10, 20, 30, 60)
    # Handlers are sync and mostly wait on the apiserver: more threads than cores.
    settings.execution.max_workers = config.workers
    # kopf runs one worker per object and its HTTP client has no connection limit: 1,000 new objects would
    # open hundreds of TLS connections (RSS!). Bound the concurrent per-object workers and event posters.
    settings.queueing.worker_limit = config.worker_limit
    settings.posting.worker_limit = 8
    settings.queueing.idle_timeout = 0.3  # a worker keeps its slot while idle: release it soon
    log.info("terrasnap operator: namespace %s, worker image %s", config.namespace, config.worker_image)


# --- DatasetSnapshot -----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, SNAPSHOT_PLURAL)
@kopf.on.create(GROUP, VERSION, SNAPSHOT_PLURAL)
@kopf.on.update(GROUP, VERSION, SNAPSHOT_PLURAL, field="spec")
@kopf.on.update(GROUP, VERSION, SNAPSHOT_PLURAL, field=("metadata", "annotations", ANNOTATION_RETRY))
def reconcile_snapshot(body: kopf.Body, reason: str = "", **_: Any) -> None:
    obj, created = _plain(body), reason == "create"
    _run(SNAPSHOT_PLURAL, lambda: snapshots.reconcile_snapshot(context(), obj, cond.now(), created=created))


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
    """Never patches the Job and returns nothing (kopf would write a return value into the Job's status)."""
    if event.get("type") == "DELETED":
        snapshots.forget_job(context(), body)
        return
    try:
        snapshots.observe_job(context(), _plain(body), cond.now())
    except Exception:
        metrics.RECONCILE_ERRORS.labels(resource="jobs").inc()
        log.exception("observing Job %s failed", (body.get("metadata") or {}).get("name"))


# --- Namespaces ---------------------------------------------------------------------------------------------


@kopf.on.event("", "v1", "namespaces")
def track_namespace(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Namespace labels for stores' allowedNamespaces; a relabelled namespace's refused snapshots run again."""
    try:
        snapshots.namespace_changed(context(), _plain(body), cond.now(), deleted=event.get("type") == "DELETED")
    except Exception:
        metrics.RECONCILE_ERRORS.labels(resource="namespaces").inc()
        log.exception("reacting to namespace %s failed", (body.get("metadata") or {}).get("name"))


# --- SnapshotStore -------------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, STORE_PLURAL)
def track_store(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
    """Keeps the store cache current (no writes)."""
    stores.remember_store(context(), _plain(body), deleted=event.get("type") == "DELETED")


@kopf.on.resume(GROUP, VERSION, STORE_PLURAL)
@kopf.on.create(GROUP, VERSION, STORE_PLURAL)
@kopf.on.update(GROUP, VERSION, STORE_PLURAL, field="spec")
def reconcile_store(body: kopf.Body, **_: Any) -> None:
    obj = _plain(body)
    _run(STORE_PLURAL, lambda: stores.reconcile_store(context(), obj, cond.now()))
