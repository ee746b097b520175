"""The operator's own configuration, from environment variables (the chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "4Gi"},
}


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the planner needs that is not in a resource's spec.

    Environment: TERRASNAP_NAMESPACE (where the operator and the GC CronJobs live), TERRASNAP_WORKER_IMAGE,
    TERRASNAP_WORKER_SERVICE_ACCOUNT, TERRASNAP_GC_SERVICE_ACCOUNT, TERRASNAP_JOB_TTL_SECONDS,
    TERRASNAP_JOB_DEADLINE_SECONDS, TERRASNAP_JOB_BACKOFF_LIMIT, TERRASNAP_IMAGE_PULL_POLICY.
    """

    namespace: str = "terrasnap-system"
    worker_image: str = "ghcr.io/terrasnap/worker:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    worker_service_account: str = "terrasnap-worker"
    gc_service_account: str = "terrasnap-gc"
    job_ttl_seconds: int = 86400
    active_deadline_seconds: int = 3600
    backoff_limit: int = 3
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_RESOURCES)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        base = cls()
        return cls(
            namespace=env.get("TERRASNAP_NAMESPACE") or base.namespace,
            worker_image=env.get("TERRASNAP_WORKER_IMAGE") or base.worker_image,
            image_pull_policy=env.get("TERRASNAP_IMAGE_PULL_POLICY") or base.image_pull_policy,
            worker_service_account=env.get("TERRASNAP_WORKER_SERVICE_ACCOUNT") or base.worker_service_account,
            gc_service_account=env.get("TERRASNAP_GC_SERVICE_ACCOUNT") or base.gc_service_account,
            job_ttl_seconds=int(env.get("TERRASNAP_JOB_TTL_SECONDS") or base.job_ttl_seconds),
            active_deadline_seconds=int(
                env.get("TERRASNAP_JOB_DEADLINE_SECONDS") or base.active_deadline_seconds
            ),
            backoff_limit=int(env.get("TERRASNAP_JOB_BACKOFF_LIMIT") or base.backoff_limit),
        )
