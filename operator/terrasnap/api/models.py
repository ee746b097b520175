"""Specs of DatasetSnapshot and SnapshotStore as frozen dataclasses, with the CRD's defaults.

The apiserver already validates against the CRD schema and CEL rules; `from_dict` checks the same rules
again (an older apiserver, a hand-edited object, or a unit test must not make the planner emit a broken Job)
and raises `SpecError` with a message fit for a condition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from terrasnap.api import contract, selectors
from terrasnap.api import policy as policy_schema
from terrasnap.api.durations import parse_duration

_CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$")
INVALID_GEOMETRY = policy_schema.INVALID_GEOMETRY_CHOICES


class SpecError(ValueError):
    """A spec the operator cannot act on; the message goes into the Ready condition, `reason` is its reason
    (InvalidSpec for what the CRD should have refused; a policy of the operator's names itself)."""

    def __init__(self, message: str, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.reason = reason


def _str(data: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"{key} must be a string")
    return value


def _required(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(data, key)
    if not value or not value.strip():
        raise SpecError(f"{where}.{key} is required")
    return value


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{key} must be an object")
    return value


def _checked(check: Callable[[str], str], value: str, where: str) -> str:
    """Apply one of api/contract.py's URL/path rules; its message, prefixed with where, as a SpecError."""
    try:
        check(value)
    except ValueError as exc:
        raise SpecError(f"{where} {exc}") from None
    return value


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str
    namespace: str | None = None


# A DVC remote name as `dvc remote add` accepts it, kept to what is also a safe directory name.
DVC_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class DvcRemote:
    """Credentials (a Secret in the snapshot's namespace) for one DVC remote the repository names."""

    name: str
    credentials: SecretKeyRef


def _dvc_remotes(value: Any) -> tuple[DvcRemote, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError("source.git.dvcRemotes must be a list")
    remotes: list[DvcRemote] = []
    for i, item in enumerate(value):
        where = f"source.git.dvcRemotes[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(f"{where} must be an object")
        name = _required(item, "name", where)
        if not DVC_REMOTE_NAME.match(name):
            raise SpecError(f"{where}.name {name!r} must be a DVC remote name (letters, digits, '_', '.', '-')")
        if any(r.name == name for r in remotes):
            raise SpecError(f"{where}.name {name!r} is listed twice")
        creds = _mapping(item, "credentialsSecret")
        ref = SecretKeyRef(name=_required(creds, "name", f"{where}.credentialsSecret"),
                           key=_str(creds, "key", "key.json") or "key.json")
        remotes.append(DvcRemote(name=name, credentials=ref))
    return tuple(remotes)


@dataclass(frozen=True)
class GitSource:
    url: str
    revision: str
    path: str = ""
    credentials: SecretKeyRef | None = None
    dvc_remotes: tuple[DvcRemote, ...] = ()

    def argument(self) -> str:
        """The engine's SOURCE argument: `git+URL@REV#subdirectory=PATH`."""
        arg = f"git+{self.url}@{self.revision}"
        path = self.path.strip("/")
        if path:
            arg += f"#subdirectory={path}"
        return arg


@dataclass(frozen=True)
class BucketSource:
    url: str
    # The bucket's own key (a Secret in the snapshot's namespace), mounted in the fetch container only;
    # without it the bucket is read anonymously, never with the store's key.
    credentials: SecretKeyRef | None = None

    def argument(self) -> str:
        return self.url


VOLUME_MOUNT = "/source"


@dataclass(frozen=True)
class VolumeSource:
    claim_name: str
    path: str = "/"

    def argument(self) -> str:
        path = self.path.strip("/")
        return f"{VOLUME_MOUNT}/{path}" if path else VOLUME_MOUNT


@dataclass(frozen=True)
class Source:
    git: GitSource | None = None
    bucket: BucketSource | None = None
    volume: VolumeSource | None = None

    @property
    def kind(self) -> str:
        return "git" if self.git else "bucket" if self.bucket else "volume"

    def argument(self) -> str:
        chosen = self.git or self.bucket or self.volume
        assert chosen is not None
        return chosen.argument()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Source:
        present = [k for k in ("git", "bucket", "volume") if data.get(k) is not None]
        if len(present) != 1:
            raise SpecError("exactly one of source.git, source.bucket or source.volume must be set")
        if "git" in present:
            git = _mapping(data, "git")
            url = _checked(contract.check_spec_git_url, _required(git, "url", "source.git"), "source.git.url")
            revision = _required(git, "revision", "source.git")
            if re.search(r"\s", revision):
                raise SpecError("source.git.revision must not contain whitespace")
            path = _str(git, "path", "") or ""
            _checked(contract.check_subpath, path, "source.git.path")
            creds = git.get("credentialsSecret")
            ref = None
            if creds and url.startswith("http://"):
                raise SpecError("a credentialsSecret is never sent over plain http://: use an https:// git url")
            if creds:
                ref = SecretKeyRef(
                    name=_required(creds, "name", "source.git.credentialsSecret"),
                    key=_str(creds, "key", "token") or "token",
                )
            return cls(git=GitSource(url=url, revision=revision, path=path, credentials=ref,
                                     dvc_remotes=_dvc_remotes(git.get("dvcRemotes"))))
        if "bucket" in present:
            url = _required(_mapping(data, "bucket"), "url", "source.bucket")
            _checked(contract.check_bucket_url, url, "source.bucket.url")
            bcreds = _mapping(data, "bucket").get("credentialsSecret")
            bref = None
            if bcreds is not None:
                bcreds = _mapping(_mapping(data, "bucket"), "credentialsSecret")
                bref = SecretKeyRef(name=_required(bcreds, "name", "source.bucket.credentialsSecret"),
                                    key=_required(bcreds, "key", "source.bucket.credentialsSecret"))
            return cls(bucket=BucketSource(url=url, credentials=bref))
        volume = _mapping(data, "volume")
        path = _str(volume, "path", "/") or "/"
        _checked(contract.check_subpath, path, "source.volume.path")
        return cls(volume=VolumeSource(claim_name=_required(volume, "claimName", "source.volume"), path=path))


@dataclass(frozen=True)
class ValidationPolicy:
    """spec.validation, checked against the one policy schema (api/policy.py) the CRD is made from."""

    target_crs: str = policy_schema.FIELD_BY_NAME["targetCRS"].default
    invalid_geometry: str = policy_schema.FIELD_BY_NAME["invalidGeometry"].default
    missing_crs: str = policy_schema.FIELD_BY_NAME["missingCRS"].default
    rules: Mapping[str, str] = field(default_factory=dict)  # as written in the spec: rule -> level

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationPolicy:
        try:
            policy_schema.check_spec_fields(data)
        except policy_schema.PolicyError as exc:
            raise SpecError(str(exc)) from None
        values: dict[str, str] = {}
        for f in policy_schema.FIELDS:
            value = _str(data, f.name, f.default) or f.default
            if f.choices and value not in f.choices:
                raise SpecError(f"validation.{f.name} must be one of {', '.join(f.choices)}")
            if f.pattern and not re.match(f.pattern, value):
                raise SpecError(f"validation.{f.name}: {value!r} does not match {f.pattern} ({f.description})")
            values[f.name] = value
        raw_rules = data.get(policy_schema.RULES_FIELD) or {}
        try:
            policy_schema.resolve_levels(raw_rules, "validation.rules")
        except policy_schema.PolicyError as exc:
            raise SpecError(str(exc)) from None
        return cls(target_crs=values["targetCRS"], invalid_geometry=values["invalidGeometry"],
                   missing_crs=values["missingCRS"], rules=dict(sorted(raw_rules.items())))

    def arguments(self) -> list[str]:
        """The engine's policy flags (every field, and one --rule per rule the spec sets)."""
        args = [
            "--target-crs", self.target_crs,
            "--invalid-geometry", self.invalid_geometry,
            "--missing-crs", self.missing_crs,
        ]  # fmt: skip
        for rule, level in sorted(self.rules.items()):
            args += [policy_schema.RULE_FLAG, f"{rule}={level}"]
        return args


@dataclass(frozen=True)
class SnapshotSpec:
    store: str
    source: Source
    validation: ValidationPolicy = field(default_factory=ValidationPolicy)
    image: str | None = None
    resources: Mapping[str, Any] | None = None
    active_deadline_seconds: int | None = None
    backoff_limit: int | None = None

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> SnapshotSpec:
        if not isinstance(spec, Mapping):
            raise SpecError("spec is required")
        store = _required(spec, "store", "spec")
        source = Source.from_dict(_mapping(spec, "source"))
        validation = ValidationPolicy.from_dict(_mapping(spec, "validation"))
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and (
            not isinstance(deadline, int) or isinstance(deadline, bool) or deadline < 1
        ):
            raise SpecError("activeDeadlineSeconds must be a positive integer")
        backoff = spec.get("backoffLimit")
        if backoff is not None and (
            not isinstance(backoff, int) or isinstance(backoff, bool) or not 0 <= backoff <= 20
        ):
            raise SpecError("backoffLimit must be an integer between 0 and 20")
        resources = spec.get("resources")
        if resources is not None and not isinstance(resources, Mapping):
            raise SpecError("resources must be an object")
        _check_resources(resources or {})
        return cls(
            store=store,
            source=source,
            validation=validation,
            image=_str(spec, "image") or None,
            resources=resources or None,
            active_deadline_seconds=deadline,
            backoff_limit=backoff,
        )


STORE_SCHEMES = contract.STORE_PREFIXES


@dataclass(frozen=True)
class KeepPolicy:
    last: int = 5
    within: str = "90d"


@dataclass(frozen=True)
class GCPolicy:
    schedule: str = "0 3 * * *"
    grace_period: str = "24h"
    keep: KeepPolicy = field(default_factory=KeepPolicy)
    dry_run: bool = False
    suspend: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GCPolicy:
        keep = _mapping(data, "keep")
        policy = cls(
            schedule=_str(data, "schedule", cls.schedule) or cls.schedule,
            grace_period=_str(data, "gracePeriod", cls.grace_period) or cls.grace_period,
            keep=KeepPolicy(last=int(keep.get("last", 5)), within=_str(keep, "within", "90d") or "90d"),
            dry_run=bool(data.get("dryRun", False)),
            suspend=bool(data.get("suspend", False)),
        )
        if not _CRON.match(policy.schedule.strip()):
            raise SpecError(f"gc.schedule {policy.schedule!r} is not a cron schedule")
        for name, value in (("gc.gracePeriod", policy.grace_period), ("gc.keep.within", policy.keep.within)):
            try:
                parse_duration(value)
            except ValueError as exc:
                raise SpecError(f"{name}: {exc}") from None
        if not 1 <= policy.keep.last <= 20:
            raise SpecError("gc.keep.last must be between 1 and 20")
        return policy


NAMESPACES_FROM = ("All", "Selector")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class AllowedNamespaces:
    """Which namespaces' DatasetSnapshots may use a store (Gateway API's `allowedRoutes.namespaces`)."""

    from_: str = "All"
    selector: Mapping[str, Any] = field(default_factory=dict)  # a metav1.LabelSelector

    def allows(self, namespace_labels: Mapping[str, str] | None) -> bool:
        return self.from_ == "All" or selectors.label_selector_matches(self.selector, namespace_labels)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AllowedNamespaces:
        from_ = _str(data, "from", "All") or "All"
        if from_ not in NAMESPACES_FROM:
            raise SpecError(f"allowedNamespaces.from must be one of {', '.join(NAMESPACES_FROM)}")
        selector = _mapping(data, "selector")
        if from_ == "Selector" and "selector" not in data:
            raise SpecError("allowedNamespaces.selector is required when from is Selector")
        for expr in selector.get("matchExpressions") or ():
            op = expr.get("operator") if isinstance(expr, Mapping) else None
            if op not in SELECTOR_OPERATORS:
                raise SpecError(f"allowedNamespaces.selector: operator must be one of {', '.join(SELECTOR_OPERATORS)}")
            if (op in ("In", "NotIn")) != bool(expr.get("values")):
                raise SpecError("allowedNamespaces.selector: In and NotIn need values; Exists and DoesNotExist take none")
        return cls(from_=from_, selector=dict(selector))


@dataclass(frozen=True)
class StoreSpec:
    url: str
    endpoint: str | None = None
    credentials: SecretKeyRef | None = None
    gc: GCPolicy = field(default_factory=GCPolicy)
    allowed_namespaces: AllowedNamespaces = field(default_factory=AllowedNamespaces)
    # Snapshot pods' credentials: a Secret of this name in each snapshot's own namespace (create and read
    # rights), or — explicitly, with a Selector only — copies of `credentials` (the GC's key); else none
    # (workload identity of the worker ServiceAccount, or anonymous).
    snapshot_credentials: SecretKeyRef | None = None
    share_credentials: bool = False
    region: str | None = None  # s3:// only (AWS_REGION for the pods)
    account_name: str | None = None  # azure:// only (AZURE_STORAGE_ACCOUNT for the pods)

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    def provider_env(self) -> list[dict[str, str]]:
        """Non-secret settings each provider's clients read from the environment."""
        env = [{"name": "AWS_REGION", "value": self.region}] if self.region else []
        if self.account_name:
            env.append({"name": "AZURE_STORAGE_ACCOUNT", "value": self.account_name})
        return env

    def snapshot_secret(self) -> SecretKeyRef | None:
        """What a snapshot pod mounts (namespace None: the pod's own), or None."""
        if self.snapshot_credentials is not None:
            return self.snapshot_credentials
        return self.credentials if self.share_credentials else None

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> StoreSpec:
        if not isinstance(spec, Mapping):
            raise SpecError("spec is required")
        url = _checked(contract.check_store_url, _required(spec, "url", "spec"), "url")
        endpoint = _str(spec, "endpoint") or None
        if endpoint is not None and not re.match(r"^https?://.+", endpoint):
            raise SpecError("endpoint must be an http:// or https:// URL")
        creds = _mapping(spec, "credentials").get("secretRef")
        ref = None
        if creds:
            ref = SecretKeyRef(
                name=_required(creds, "name", "credentials.secretRef"),
                key=_str(creds, "key", "key.json") or "key.json",
                namespace=_str(creds, "namespace") or None,
            )
        creds_spec = _mapping(spec, "credentials")
        snap = _mapping(creds_spec, "snapshotSecretRef") if creds_spec.get("snapshotSecretRef") else None
        snapshot_ref = None
        if snap is not None:
            snapshot_ref = SecretKeyRef(name=_required(snap, "name", "credentials.snapshotSecretRef"),
                                        key=_str(snap, "key", "key.json") or "key.json")
        share = bool(creds_spec.get("shareWithNamespaces", False))
        allowed = AllowedNamespaces.from_dict(_mapping(spec, "allowedNamespaces"))
        if share and (ref is None or allowed.from_ != "Selector" or snapshot_ref is not None):
            raise SpecError("credentials.shareWithNamespaces copies secretRef into snapshot namespaces: it needs "
                            "secretRef, allowedNamespaces.from: Selector, and no snapshotSecretRef")
        region = _str(spec, "region") or None
        if region is not None and not url.startswith("s3://"):
            raise SpecError("region is for s3:// stores only")
        if region is not None and not re.match(r"^[a-z0-9-]{1,32}$", region):
            raise SpecError("region must look like us-east-1")
        account = _str(spec, "accountName") or None
        if account is not None and not url.startswith("azure://"):
            raise SpecError("accountName is for azure:// stores only")
        if account is not None and not contract.AZURE_ACCOUNT.match(account):
            raise SpecError("accountName must be 3-24 lowercase letters and digits")
        return cls(url=url, endpoint=endpoint, credentials=ref, gc=GCPolicy.from_dict(_mapping(spec, "gc")),
                   allowed_namespaces=allowed, snapshot_credentials=snapshot_ref, share_credentials=share,
                   region=region, account_name=account)


def _check_resources(resources: Mapping[str, Any]) -> None:
    """Quantities are non-negative and no request exceeds its limit (the CRD's CEL rule says the same)."""
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("requests", "limits"):
        values = resources.get(part) or {}
        if not isinstance(values, Mapping):
            raise SpecError(f"resources.{part} must be an object")
        try:
            parsed[part] = {k: contract.parse_quantity(v) for k, v in values.items()}
        except ValueError as exc:
            raise SpecError(f"resources.{part}: {exc}") from None
    for key, limit in parsed["limits"].items():
        request = parsed["requests"].get(key)
        if request is not None and request > limit:
            raise SpecError(f"resources.requests.{key} must be at most resources.limits.{key}")
