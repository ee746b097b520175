"""SnapshotStores: reconcile a store into its GC CronJob; the status comes from planner.store_status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from terrasnap import kube as k
from terrasnap.api.models import SpecError, StoreSpec
from terrasnap.controller.context import Context, Retry
from terrasnap.planner import store_status as ss
from terrasnap.planner.common import owner_reference
from terrasnap.planner.cronjob import cronjob_differs, plan_gc_cronjob

log = logging.getLogger("terrasnap.operator")


def remember_store(ctx: Context, obj: Mapping[str, Any], deleted: bool = False) -> None:
    """Keep the store cache current (DatasetSnapshots read their store from it)."""
    name = (obj.get("metadata") or {}).get("name", "")
    if deleted:
        ctx.stores.pop(name, None)
    else:
        created = (obj.get("metadata") or {}).get("creationTimestamp")
        ctx.stores[name] = {"metadata": {"name": name, "creationTimestamp": created}, "spec": dict(obj.get("spec") or {})}


def reconcile_store(ctx: Context, obj: dict[str, Any], now: str) -> None:
    """Ensure the store's GC CronJob and its credentials copy; Retry while credentials are missing."""
    name = obj["metadata"]["name"]
    generation = int(obj["metadata"].get("generation") or 1)
    path = k.store_path(name)
    # Every store on the cluster (other installations' too): an older one on an overlapping URL wins.
    conflict = ss.overlapping_store(obj, ctx.client.list(k.store_path()))
    if conflict is not None:
        spec = dict(obj.get("spec") or {})
        obj = {**obj, "spec": {**spec, "gc": {**(spec.get("gc") or {}), "suspend": True}}}
    try:
        plan = plan_gc_cronjob(obj, ctx.config)
    except SpecError as exc:
        _write(ctx, path, generation, ss.invalid_spec(str(exc)), now)
        return
    if plan.secret_copy is not None:
        copy = plan.secret_copy
        if not ctx.copy_secret(
            copy, plan.manifest["metadata"]["labels"], owner_reference(obj, controller=False)
        ):
            outcome = ss.credentials_not_found(copy.source_namespace, copy.source_name, copy.source_key)
            _write(ctx, path, generation, outcome, now)
            raise Retry(outcome.message, delay=30)
    else:
        credentials = StoreSpec.from_dict(obj.get("spec")).credentials
        if credentials is not None:
            secret = ctx.client.get(
                k.secrets_path(credentials.namespace or ctx.config.namespace, credentials.name)
            )
            if secret is None or credentials.key not in (secret.get("data") or {}):
                outcome = ss.credentials_not_found(None, credentials.name, credentials.key)
                _write(ctx, path, generation, outcome, now)
                raise Retry(outcome.message, delay=30)

    _, created = ctx.client.create(k.cronjobs_path(plan.namespace), plan.manifest)
    if not created:
        existing = ctx.client.get(k.cronjobs_path(plan.namespace, plan.name)) or {}
        if cronjob_differs(existing, plan.manifest):
            ctx.client.patch(
                k.cronjobs_path(plan.namespace, plan.name),
                {"metadata": {"labels": plan.manifest["metadata"]["labels"]}, "spec": plan.manifest["spec"]},
            )
            log.info("updated GC CronJob %s/%s", plan.namespace, plan.name)
    if conflict is not None:
        _write(ctx, path, generation, ss.store_conflict(conflict, plan.namespace, plan.name), now)
        raise Retry(conflict, delay=120)  # until the older store is gone
    spec = plan.manifest["spec"]
    _write(
        ctx,
        path,
        generation,
        ss.configured(plan.namespace, plan.name, spec["schedule"], bool(spec["suspend"])),
        now,
    )


def _write(ctx: Context, path: str, generation: int, outcome: ss.StoreOutcome, now: str) -> None:
    result = ctx.client.update_status(
        path, lambda fresh: ss.store_status(fresh.get("status"), generation, outcome, now)
    )
    if result is not None:
        obj, old, new = result
        ctx.announce(obj, ss.store_events(old, new))
