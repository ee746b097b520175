"""The operator's configuration: one object, loaded once, every variable validated.

`load(environ, flags)` reads the TERRASNAP_* environment variables (the chart sets them) and the command
line's overrides, parses each with a validating parser, and raises one `ConfigError` that names every bad
variable (or flag) and says what it expected — never a traceback from deep inside kopf. An empty variable
means its default (the chart renders empty values for unset options).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "4Gi"},
}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_SELECTOR_TERM = re.compile(rf"^(!?{_LABEL_KEY}|{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE})$")


class ConfigError(ValueError):
    """One or more settings are invalid; the message names each one."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator needs that is not in a resource's spec (see SETTINGS for the variables)."""

    # where the operator and the GC CronJobs live
    namespace: str = "terrasnap-system"
    # the pods it starts
    worker_image: str = "ghcr.io/terrasnap/worker:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    worker_service_account: str = "terrasnap-worker"
    # spec.image must match one of these (fnmatch patterns) or be the worker image; empty: the worker image only
    allowed_images: tuple[str, ...] = ()
    # file:// and http:// git URLs (a node's files, a token-less plain-text fetch): development clusters only
    allow_insecure_sources: bool = False
    gc_service_account: str = "terrasnap-gc"
    # Job defaults (a DatasetSnapshot's spec may override deadline and backoff)
    job_ttl_seconds: int = 86400
    active_deadline_seconds: int = 3600
    backoff_limit: int = 3
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_RESOURCES)
    # watching: bounded timeouts against silent watch freezes (kopf #585, #810)
    watch_server_timeout: int = 270
    watch_client_timeout: float = 300.0
    watch_namespaces: tuple[str, ...] = ()  # empty: the whole cluster
    selector: str | None = None  # serve only DatasetSnapshots/SnapshotStores with these labels
    # concurrency: handler threads, and concurrent per-object workers (each holds a connection)
    workers: int = 32
    worker_limit: int = 128
    # serving
    metrics_port: int = 8080
    metrics_address: str = "0.0.0.0"
    liveness: str | None = "http://0.0.0.0:8081/healthz"
    peering: str | None = None  # kopf peering object for several replicas; None: standalone
    priority: int = 0
    trace_memory: bool = False  # debug aid: SIGUSR1 prints the top allocation sites

    def image_allowed(self, image: str) -> bool:
        return image == self.worker_image or any(fnmatch.fnmatchcase(image, p) for p in self.allowed_images)

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        return load(environ)


# --- validating parsers: each returns the value or raises ValueError("expected ...") ---------------------


def _integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if (
            value is None
            or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)
        ):
            bounds = (
                f"from {minimum} to {maximum}" if minimum is not None and maximum is not None
                else f"≥ {minimum}" if minimum is not None else ""
            )  # fmt: skip
            raise ValueError(f"expected an integer {bounds}".rstrip())
        return value

    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return value


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not pattern.match(raw):
            raise ValueError(f"expected {what}")
        return raw

    return parse


def _word(what: str) -> Callable[[str], str]:
    """A non-empty value without whitespace (an image reference, a bind address)."""

    def parse(raw: str) -> str:
        if not raw.strip() or any(c.isspace() for c in raw):
            raise ValueError(f"expected {what}")
        return raw

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw

    return parse


def _liveness(raw: str) -> str | None:
    if raw.lower() in ("off", "none", "0"):
        return None
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme != "http" or not parts.hostname or port is None:
        raise ValueError("expected an http://HOST:PORT/PATH URL, or 'off'")
    return raw


def _selector(raw: str) -> str:
    terms = [t.strip() for t in raw.split(",")]
    bad = [t for t in terms if not _SELECTOR_TERM.match(t)]
    if bad:
        raise ValueError(f"expected a label selector such as 'team=geo,!skip' (bad term {bad[0]!r})")
    return raw


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/true/yes/on or 0/false/no/off")


def _patterns(raw: str) -> tuple[str, ...]:
    """Comma-separated image patterns (`registry.example/geo/*@sha256:*`); none may be empty or spaced."""
    items = tuple(p.strip() for p in raw.split(","))
    if any(not p or any(c.isspace() for c in p) for p in items):
        raise ValueError("expected comma-separated image patterns such as 'registry.example/geo/worker:*'")
    return items


_SERVICE_ACCOUNT = _matching(_DNS_SUBDOMAIN, "a ServiceAccount name (DNS-1123 subdomain)")


@dataclass(frozen=True)
class Setting:
    field: str
    variable: str
    parse: Callable[[str], Any]
    flag: str | None = None  # the `terrasnap operator` option that overrides the variable


SETTINGS: tuple[Setting, ...] = (
    Setting("namespace", "TERRASNAP_NAMESPACE", _matching(_DNS_LABEL, "a namespace name (DNS-1123 label)")),
    Setting("worker_image", "TERRASNAP_WORKER_IMAGE", _word("a container image reference without spaces")),
    Setting("image_pull_policy", "TERRASNAP_IMAGE_PULL_POLICY", _choice(PULL_POLICIES)),
    Setting("worker_service_account", "TERRASNAP_WORKER_SERVICE_ACCOUNT", _SERVICE_ACCOUNT),
    Setting("allowed_images", "TERRASNAP_ALLOWED_IMAGES", _patterns),
    Setting("allow_insecure_sources", "TERRASNAP_ALLOW_INSECURE_SOURCES", _flag),
    Setting("gc_service_account", "TERRASNAP_GC_SERVICE_ACCOUNT", _SERVICE_ACCOUNT),
    Setting("job_ttl_seconds", "TERRASNAP_JOB_TTL_SECONDS", _integer(0)),
    Setting("active_deadline_seconds", "TERRASNAP_JOB_DEADLINE_SECONDS", _integer(1)),
    Setting("backoff_limit", "TERRASNAP_JOB_BACKOFF_LIMIT", _integer(0)),
    Setting("watch_server_timeout", "TERRASNAP_WATCH_SERVER_TIMEOUT", _integer(1)),
    Setting("watch_client_timeout", "TERRASNAP_WATCH_CLIENT_TIMEOUT", _seconds),
    Setting("selector", "TERRASNAP_SELECTOR", _selector, "--selector"),
    Setting("workers", "TERRASNAP_WORKERS", _integer(1, 1024)),
    Setting("worker_limit", "TERRASNAP_WORKER_LIMIT", _integer(1)),
    Setting("metrics_port", "TERRASNAP_METRICS_PORT", _integer(0, 65535), "--metrics-port"),
    Setting("metrics_address", "TERRASNAP_METRICS_ADDRESS", _word("a bind address such as 0.0.0.0"), "--metrics-address"),
    Setting("liveness", "TERRASNAP_LIVENESS", _liveness, "--liveness"),
    Setting("peering", "TERRASNAP_PEERING", _matching(_DNS_SUBDOMAIN, "a KopfPeering name"), "--peering"),
    Setting("priority", "TERRASNAP_PRIORITY", _integer(), "--priority"),
    Setting("trace_memory", "TERRASNAP_TRACEMALLOC", _flag),
)
_BY_FLAG = {s.flag: s for s in SETTINGS if s.flag}


def load(
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
    watch_namespaces: tuple[str, ...] = (),
) -> OperatorConfig:
    """The configuration from `environ` (default: os.environ), then `flags` ({"--metrics-port": "0"}; a
    None value is "not given"). Raises ConfigError naming every invalid variable or flag."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    errors: list[str] = []
    given = {flag: raw for flag, raw in (flags or {}).items() if raw is not None}
    unknown = sorted(set(given) - set(_BY_FLAG))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    for setting in SETTINGS:
        if setting.flag in given:
            source, raw = setting.flag, given[setting.flag]
            # The empty string disables the liveness endpoint on the command line (as before).
            if setting.field == "liveness" and raw == "":
                values["liveness"] = None
                continue
        else:
            source, raw = setting.variable, env.get(setting.variable, "")
        if raw == "":
            continue  # the default
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as exc:
            errors.append(f"{source}={raw!r}: {exc}")
    bad_namespaces = [n for n in watch_namespaces if not n or any(c.isspace() or c == "," for c in n)]
    if bad_namespaces:
        errors.append(f"--namespace={bad_namespaces[0]!r}: expected a namespace name or glob")
    if errors:
        raise ConfigError("invalid operator configuration:\n  " + "\n  ".join(errors))
    return dataclasses.replace(OperatorConfig(), watch_namespaces=tuple(watch_namespaces), **values)
