"""Which termination message the operator believes: pure functions of the Job, its pods and the store.

A namespace's tenants can create pods with any labels, and a repository's own pipeline runs in the Job's pod
(in its own init container). So a result is read only from a pod the Job controls (its controller
ownerReference and `batch.kubernetes.io/controller-uid` label name the Job's uid), a success only from the
engine's `snapshot` container, and only if every URI in it is the canonical one for this snapshot in this
store (`api.contract.snapshot_uris`). The init containers (`fetch`, `pipeline`) may only report failures.
Anything else becomes `InvalidResult`, which never writes a manifest into the status (so never a GC root).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from terrasnap.api import contract
from terrasnap.planner.status import EngineResult, parse_result

CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
INVALID_RESULT = "InvalidResult"


def controlled_by(pod: Mapping[str, Any], job_uid: str) -> bool:
    """Whether the Job with `job_uid` controls `pod` (ownerReference controller=true and the uid label)."""
    meta = pod.get("metadata") or {}
    if not job_uid:
        return False
    owned = any(
        ref.get("controller") is True and ref.get("kind") == "Job" and ref.get("uid") == job_uid
        for ref in meta.get("ownerReferences") or ()
    )
    labels = meta.get("labels") or {}
    uids = [labels[key] for key in CONTROLLER_UID_LABELS if key in labels]
    return owned and bool(uids) and all(uid == job_uid for uid in uids)


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = (status.get("state") or {}).get("terminated")
    return state or (status.get("lastState") or {}).get("terminated")


def messages(
    pods: Iterable[Mapping[str, Any]], job_uid: str, main: str, init: Iterable[str]
) -> list[tuple[str, str, str]]:
    """(finishedAt, container, message) of every terminated container of interest, newest first."""
    init_names = set(init)
    out: list[tuple[str, str, str]] = []
    for pod in pods:
        if not controlled_by(pod, job_uid):
            continue
        status = pod.get("status") or {}
        listed = [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]
        for container in listed:
            name = container.get("name")
            if name != main and name not in init_names:
                continue
            terminated = _terminated(container)
            if terminated and terminated.get("message"):
                out.append((str(terminated.get("finishedAt") or ""), str(name), str(terminated["message"])))
    out.sort(reverse=True)
    return out


def check_uris(result: EngineResult, store_url: str, namespace: str, name: str) -> EngineResult:
    """A success whose URIs are not this snapshot's canonical ones becomes InvalidResult."""
    if not result.ok or result.snapshot_id is None:
        return result
    expected = contract.snapshot_uris(store_url, namespace, name, result.snapshot_id)
    for key, uri in result.manifest.items():
        target = "manifest" if key == "uri" else key
        if uri != expected.get(target):
            return EngineResult(
                ok=False, reason=INVALID_RESULT, commit=result.commit, summary=result.summary,
                message=f"the result's {target} URI {uri!r} is not this snapshot's "
                        f"(expected {expected.get(target)!r}); it was not accepted",
            )  # fmt: skip
    return result


def _from_init(result: EngineResult, container: str) -> EngineResult:
    """An init container may only say it failed; its reason must be one the engine defines."""
    if result.ok:
        return EngineResult(
            ok=False, reason=INVALID_RESULT,
            message=f"container {container!r} reported a success; only the snapshot container publishes",
        )  # fmt: skip
    reason = result.reason if result.reason in contract.REASONS else "EngineFailed"
    return EngineResult(ok=False, reason=reason, commit=result.commit, summary=result.summary,
                        message=f"{container}: {result.message}")


def trusted_result(
    pods: Iterable[Mapping[str, Any]],
    job_uid: str,
    *,
    main: str,
    init: Iterable[str],
    store_url: str | None,
    namespace: str,
    name: str,
) -> EngineResult | None:
    """The result the operator accepts from the Job's pods, or None when no controlled pod left one.

    `store_url` None (the store is gone): a success cannot be checked, so it is InvalidResult.
    """
    for _finished, container, message in messages(pods, job_uid, main, init):
        result = parse_result(message)
        if result is None:
            continue
        if container != main:
            return _from_init(result, container)
        if store_url is None and result.ok:
            return EngineResult(ok=False, reason=INVALID_RESULT,
                                message="the store is gone: the result's URIs cannot be checked")
        return check_uris(result, store_url or "", namespace, name)
    return None
