"""DatasetSnapshot → the Job that makes its snapshot (a pure function of the object, its store and config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from terrasnap.api import contract
from terrasnap.api.config import OperatorConfig
from terrasnap.api.constants import (
    ANNOTATION_RETRY,
    ANNOTATION_SPEC_HASH,
    LABEL_GENERATION,
    LABEL_SNAPSHOT,
    LABEL_STORE,
)
from terrasnap.api.models import VOLUME_MOUNT, SnapshotSpec, SpecError, StoreSpec
from terrasnap.planner import names
from terrasnap.planner.common import (
    CREDENTIALS_FILE,
    WORKSPACE,
    Manifest,
    SecretCopy,
    base_env,
    base_labels,
    container_security_context,
    credentials,
    owner_reference,
    pod_security_context,
    scratch_volumes,
)

CONTAINER = "snapshot"
# The pod's three steps (docs/contracts.md): fetch with the source's credentials only, the repository's own
# pipeline with none, then the snapshot with the store's only. Each writes its own termination message
# (fetch and pipeline only when they fail); the result of a run is the `snapshot` container's.
FETCH_CONTAINER = "fetch"
PIPELINE_CONTAINER = "pipeline"
RESULT_FILE = "/dev/termination-log"
# The fetch step's state (read by the snapshot step) and the snapshot step's own directory: volumes the
# pipeline container never mounts, so nothing it does reaches what the snapshot step trusts.
STATE_DIR = "/var/run/terrasnap/state"
STATE_FILE = f"{STATE_DIR}/source.json"
PRIVATE_DIR = "/var/run/terrasnap/private"
SOURCE_CREDENTIALS_DIR = contract.SOURCE_CREDENTIALS_DIR
# One directory per DVC remote the repository names (engine/dvcsource.py reads <dir>/<remote>/credentials.json).
DVC_REMOTES_DIR = contract.DVC_REMOTE_CREDENTIALS_DIR
DVC_REMOTES_ENV = contract.DVC_REMOTE_CREDENTIALS_ENV


@dataclass(frozen=True)
class JobPlan:
    name: str
    spec_hash: str
    manifest: Manifest
    secret_copy: SecretCopy | None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.manifest["metadata"]["labels"])


def snapshot_labels(name: str, generation: int, store: str) -> dict[str, str]:
    labels = base_labels("snapshot")
    labels.update({LABEL_SNAPSHOT: name, LABEL_GENERATION: str(generation), LABEL_STORE: store})
    return labels


def command_args(snapshot_name: str, namespace: str, spec: SnapshotSpec, store: StoreSpec) -> list[str]:
    """The snapshot container's arguments (the source comes from the fetch step's state)."""
    args = ["snapshot", "--prepared", STATE_FILE, "--private", PRIVATE_DIR, "--store", store.url]
    if store.endpoint:
        args += ["--endpoint", store.endpoint]
    args += ["--name", snapshot_name, "--namespace", namespace]
    args += spec.validation.arguments()
    args += ["--result-file", RESULT_FILE, "--workdir", WORKSPACE]
    return args


def fetch_args(spec: SnapshotSpec, store: StoreSpec) -> list[str]:
    args = ["source", "fetch", spec.source.argument(), "--workdir", WORKSPACE, "--state", STATE_FILE,
            "--store", store.url]
    if store.endpoint:
        args += ["--endpoint", store.endpoint]
    return [*args, "--result-file", RESULT_FILE]


def pipeline_args() -> list[str]:
    return ["pipeline", "run", "--workdir", WORKSPACE, "--result-file", RESULT_FILE]


INSECURE_GIT_PREFIXES = ("file://", "http://")


def pod_failure_policy(containers: Sequence[str] = (FETCH_CONTAINER, PIPELINE_CONTAINER, CONTAINER)) -> Manifest:
    """Rejected data and usage errors fail the Job at once; infrastructure errors count against
    backoffLimit; evictions and preemptions (DisruptionTarget) are retried without counting. One rule per
    step: `containerName` matches init containers too, and a failing stage of the pipeline is rejected data.
    The API server refuses a rule naming a container the pod lacks (a bucket source has no pipeline)."""
    rules: list[Manifest] = []
    for action, codes in (("FailJob", contract.EXIT_FINAL), ("Count", contract.EXIT_RETRYABLE)):
        for name in containers:
            rules.append({"action": action, "onExitCodes": {"containerName": name, "operator": "In",
                                                           "values": list(codes)}})
    return {
        "rules": [
            *rules,
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def check_policy(spec: SnapshotSpec, config: OperatorConfig) -> None:
    """The operator's own rules on top of the CRD's: the images it runs and the sources it fetches.
    Raises SpecError with reason ImageNotAllowed or InsecureSource."""
    if spec.image and not config.image_allowed(spec.image):
        allowed = ", ".join([config.worker_image, *config.allowed_images])
        raise SpecError(f"spec.image {spec.image!r} is not allowed by the operator (allowed: {allowed}; "
                        "TERRASNAP_ALLOWED_IMAGES)", reason="ImageNotAllowed")
    git = spec.source.git
    if git is not None and not config.allow_insecure_sources and git.url.startswith(INSECURE_GIT_PREFIXES):
        raise SpecError(f"source.git.url {git.url!r}: file:// and http:// are refused (a node's files, an "
                        "unauthenticated plain-text fetch); use https://, or run the operator with "
                        "TERRASNAP_ALLOW_INSECURE_SOURCES=1 on a development cluster", reason="InsecureSource")


def plan_job(
    snapshot: Mapping[str, Any], store_name: str, store: StoreSpec, config: OperatorConfig
) -> JobPlan:
    """The Job for the snapshot's current generation.

    `snapshot` is the DatasetSnapshot object (apiVersion, kind, metadata with name/namespace/uid/generation,
    spec). Raises `SpecError` for a spec the apiserver should have refused.
    """
    meta = snapshot["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 1)
    if len(name) > contract.DNS1123_LABEL_MAX:  # the CRD refuses it too: it is a label value
        raise SpecError(f"metadata.name must be at most {contract.DNS1123_LABEL_MAX} characters "
                        f"(it is the value of the {LABEL_SNAPSHOT} label on the Job and its pods)")
    if len(store_name) > contract.DNS1123_LABEL_MAX:
        raise SpecError(f"spec.store must be at most {contract.DNS1123_LABEL_MAX} characters "
                        f"(it is the value of the {LABEL_STORE} label on the Job and its pods)")
    raw_spec = snapshot.get("spec") or {}
    spec = SnapshotSpec.from_dict(raw_spec)
    check_policy(spec, config)
    retry = (meta.get("annotations") or {}).get(ANNOTATION_RETRY) or None
    hash_ = names.spec_hash(meta["uid"], raw_spec, retry)
    job_name = names.job_name(name, generation, hash_)
    labels = snapshot_labels(name, generation, store_name)

    volumes, work_mounts = scratch_volumes()
    volumes += [{"name": "state", "emptyDir": {}}, {"name": "private", "emptyDir": {}}]
    image = spec.image or config.worker_image

    def container(cname: str, args: list[str], env: list[Manifest], mounts: list[Manifest]) -> Manifest:
        return {
            "name": cname,
            "image": image,
            "imagePullPolicy": config.image_pull_policy,
            "command": ["terrasnap"],
            "args": args,
            "env": env,
            "resources": _resources(spec.resources, config.resources),
            "securityContext": container_security_context(),
            "terminationMessagePath": RESULT_FILE,
            "terminationMessagePolicy": "File",
            "volumeMounts": [dict(m) for m in work_mounts] + mounts,
            "workingDir": WORKSPACE,
        }

    # 1. fetch: the source's own credentials only (git token, DVC remotes, the bucket's key), never the store's.
    fetch_env = base_env(store.endpoint)
    fetch_mounts: list[Manifest] = [{"name": "state", "mountPath": STATE_DIR}]
    git = spec.source.git
    if git is not None and git.credentials is not None:
        fetch_env.append(
            {
                "name": "TERRASNAP_GIT_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": git.credentials.name, "key": git.credentials.key}},
            }
        )
    if git is not None and git.dvc_remotes:
        # Only Secrets of the snapshot's own namespace; each mounted for its remote alone.
        for i, remote in enumerate(git.dvc_remotes):
            volumes.append({"name": f"dvc-remote-{i}", "secret": {
                "secretName": remote.credentials.name, "defaultMode": 0o440,
                "items": [{"key": remote.credentials.key, "path": contract.DVC_REMOTE_CREDENTIALS_FILE}]}})
            fetch_mounts.append({"name": f"dvc-remote-{i}", "mountPath": f"{DVC_REMOTES_DIR}/{remote.name}",
                                 "readOnly": True})
        fetch_env.append({"name": DVC_REMOTES_ENV, "value": DVC_REMOTES_DIR})
    bucket = spec.source.bucket
    if bucket is not None and bucket.credentials is not None:
        volumes.append({"name": "source-credentials", "secret": {
            "secretName": bucket.credentials.name, "defaultMode": 0o440,
            "items": [{"key": bucket.credentials.key, "path": CREDENTIALS_FILE}]}})
        fetch_mounts.append({"name": "source-credentials", "mountPath": SOURCE_CREDENTIALS_DIR, "readOnly": True})
        fetch_env.append({"name": contract.SOURCE_CREDENTIALS_ENV,
                          "value": f"{SOURCE_CREDENTIALS_DIR}/{CREDENTIALS_FILE}"})
    volume = spec.source.volume
    if volume is not None:
        volumes.append(
            {"name": "source", "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": True}}
        )
        fetch_mounts.append({"name": "source", "mountPath": VOLUME_MOUNT, "readOnly": True})
    init = [container(FETCH_CONTAINER, fetch_args(spec, store), fetch_env, fetch_mounts)]
    # 2. pipeline: the repository's own stages (git and volume sources may be DVC projects; a bucket never
    #    is): the workspace and nothing else, no store endpoint, no token (automountServiceAccountToken off).
    if bucket is None:
        init.append(container(PIPELINE_CONTAINER, pipeline_args(), base_env(None), []))

    # 3. snapshot: the store's credentials only; the fetch state read-only; its own private directory.
    env = base_env(store.endpoint)
    mounts: list[Manifest] = [{"name": "state", "mountPath": STATE_DIR, "readOnly": True},
                              {"name": "private", "mountPath": PRIVATE_DIR}]
    #    Never the GC's key unless the store shares it (credentials.shareWithNamespaces, Selector only).
    copy, cred_volumes, cred_mounts, cred_env = credentials(
        store.snapshot_secret(),
        default_namespace=namespace if store.snapshot_credentials is not None else config.namespace,
        pod_namespace=namespace,
        copy_name=names.store_secret_name(job_name),
        scheme=store.scheme,
    )
    cred_env = [*cred_env, *store.provider_env()]
    volumes += cred_volumes
    mounts += cred_mounts
    env += cred_env
    if volume is not None:  # a local source is read in place (a non-DVC directory is not copied)
        mounts.append({"name": "source", "mountPath": VOLUME_MOUNT, "readOnly": True})
    main_container = container(CONTAINER, command_args(name, namespace, spec, store), env, mounts)
    manifest: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_SPEC_HASH: hash_},
            "ownerReferences": [owner_reference(snapshot)],
        },
        "spec": {
            "backoffLimit": spec.backoff_limit if spec.backoff_limit is not None else config.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds or config.active_deadline_seconds,
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            "podFailurePolicy": pod_failure_policy([*(c["name"] for c in init), CONTAINER]),
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": config.worker_service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "initContainers": init,
                    "containers": [main_container],
                    "volumes": volumes,
                },
            },
        },
    }
    return JobPlan(name=job_name, spec_hash=hash_, manifest=manifest, secret_copy=copy)


def _resources(requested: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> Manifest:
    """Spec resources over the defaults, per resource name. A default limit is dropped for a resource whose
    request the spec sets (a request above the default limit would make the Job invalid)."""
    user_requests = dict((requested or {}).get("requests") or {})
    user_limits = dict((requested or {}).get("limits") or {})
    requests = {**dict(defaults.get("requests") or {}), **user_requests}
    limits = {k: v for k, v in dict(defaults.get("limits") or {}).items() if k not in user_requests}
    limits.update(user_limits)
    result: Manifest = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


def worker_service_account(namespace: str, config: OperatorConfig) -> Manifest:
    """The worker ServiceAccount the operator keeps in each namespace with snapshots: no API rights are
    bound to it and its token is never mounted (the Job's pods report through termination messages)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": config.worker_service_account,
            "namespace": namespace,
            "labels": base_labels("worker"),
        },
        "automountServiceAccountToken": False,
    }
