"""The contract between the `terrasnap` command (engine), the operator and the GC, written once.

Pure: standard library only (and the validation policy's schema beside it, `terrasnap.api.policy`, re-exported
as `contract.policy`). engine/errors.py, cli.py, planner/job.py, planner/status.py, api/models.py and
engine/source.py import it; nothing restates it (tests/unit/test_contract.py checks). docs/contracts.md
describes it for people.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from decimal import Decimal

# The validation policy is part of the contract too (spec.validation, the engine's --policy file and --rule
# flags): contract.policy.RULES, .FIELDS, .validation_schema().
from terrasnap.api import policy as policy

# -- exit codes of the `terrasnap` command -----------------------------------------------------------------

EXIT_DONE = 0
EXIT_REJECTED = 1  # the data was refused by validation; nothing was pushed
EXIT_USAGE = 2  # the command line or the spec is wrong
EXIT_INFRASTRUCTURE = 3  # store, git, DVC or the source failed; running again may help
# A Job fails at once on these (running again cannot change the outcome) ...
EXIT_FINAL = (EXIT_REJECTED, EXIT_USAGE)
# ... and counts these against its backoffLimit.
EXIT_RETRYABLE = (EXIT_INFRASTRUCTURE,)

# -- reason codes (the result's error.reason) and their exit codes -------------------------------------------

VALIDATION_FAILED = "ValidationFailed"
USAGE_ERROR = "UsageError"
STORE_UNREACHABLE = "StoreUnreachable"
SOURCE_UNAVAILABLE = "SourceUnavailable"
GIT_ERROR = "GitError"
DVC_ERROR = "DVCError"
VERIFY_FAILED = "VerifyFailed"
INTERNAL_ERROR = "InternalError"
GC_FAILED_CLOSED = "GCFailedClosed"  # GC could not establish what is used; it stopped deleting
POINTER_MISMATCH = "PointerMismatch"  # a source's DVC pointers and its bytes disagree (never pushed, corrupted)
GC_INCOMPLETE = "GCIncomplete"  # GC finished, but some deletes failed (the next run retries them)
SNAPSHOT_DAMAGED = "SnapshotDamaged"  # `terrasnap verify`: an object of a published snapshot is missing or corrupt
INTERRUPTED = "Interrupted"  # SIGTERM (a pod stopped, a node drained): cleaned up, running again may help
UNSAFE_INPUT = "UnsafeInput"  # a name, path, revision or object id from a source or manifest was refused

REASONS: dict[str, int] = {
    VALIDATION_FAILED: EXIT_REJECTED,
    USAGE_ERROR: EXIT_USAGE,
    STORE_UNREACHABLE: EXIT_INFRASTRUCTURE,
    SOURCE_UNAVAILABLE: EXIT_INFRASTRUCTURE,
    GIT_ERROR: EXIT_INFRASTRUCTURE,
    DVC_ERROR: EXIT_INFRASTRUCTURE,
    VERIFY_FAILED: EXIT_INFRASTRUCTURE,
    POINTER_MISMATCH: EXIT_REJECTED,
    INTERNAL_ERROR: EXIT_INFRASTRUCTURE,
    GC_FAILED_CLOSED: EXIT_INFRASTRUCTURE,
    GC_INCOMPLETE: EXIT_INFRASTRUCTURE,
    SNAPSHOT_DAMAGED: EXIT_REJECTED,
    INTERRUPTED: EXIT_INFRASTRUCTURE,
    UNSAFE_INPUT: EXIT_REJECTED,
}


def exit_code(reason: str) -> int:
    """The exit code of a reason; an unknown reason is an internal error."""
    return REASONS.get(reason, EXIT_INFRASTRUCTURE)


# -- the result document (`--result-file`, the pod's termination message) ----------------------------------

RESULT_LIMIT = 4096  # a pod's termination message is cut at 4096 bytes
RESULT_URI_KEYS = ("manifest", "metadata", "lock", "stac")  # URIs of the published snapshot's files
RESULT_KEYS = ("ok", "snapshotID", *RESULT_URI_KEYS, "source", "summary", "stats", "error")
ERROR_KEYS = ("reason", "message")
# Left out when a result would exceed RESULT_LIMIT (the snapshot's costs; the GC's lists, which its report in
# the store keeps in full).
DROPPABLE_KEYS = ("stats", "roots", "errors", "inflightSnapshots")


@dataclass
class Summary:
    """The result's `summary`, copied into DatasetSnapshot status.summary (the CRD declares these keys)."""

    files: int = 0
    features: int = 0
    rasters: int = 0
    bytes: int = 0
    repaired: int = 0
    rejected: int = 0
    warnings: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


SUMMARY_KEYS = tuple(f.name for f in fields(Summary))

# -- credentials the Job hands the engine for a DVC source's own remotes --------------------------------------
# One folder per remote name, each holding that remote's Secret key as `credentials.json`.
DVC_REMOTE_CREDENTIALS_ENV = "TERRASNAP_DVC_REMOTE_CREDENTIALS"
DVC_REMOTE_CREDENTIALS_DIR = "/var/run/secrets/terrasnap/dvc-remotes"
DVC_REMOTE_CREDENTIALS_FILE = "credentials.json"
# A bucket source's own key file (source.bucket.credentialsSecret), mounted in the fetch container only.
SOURCE_CREDENTIALS_ENV = "TERRASNAP_SOURCE_CREDENTIALS"
SOURCE_CREDENTIALS_DIR = "/var/run/secrets/terrasnap/source"

# -- source and store URLs -------------------------------------------------------------------------------
# ssh:// is refused: a Job's pod has no ssh key (the operator passes only an https token,
# TERRASNAP_GIT_TOKEN), and a command that worked on a laptop must work in the cluster.
GIT_SCHEMES = ("https", "http", "file")
BUCKET_SCHEMES = ("gs", "s3", "azure")
# engine/store.py; a file store must be absolute (file:///path). DVC's own URL forms: s3://bucket/prefix,
# azure://container/prefix.
STORE_SCHEMES = ("gs", "s3", "azure", "file")
STORE_PREFIXES = ("gs://", "s3://", "azure://", "file:///")
# An Azure container name (3-63 lowercase letters, digits and single hyphens) and storage account name; the
# CRDs' CEL rules say the same.
AZURE_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
# The store's (or an azure bucket source's) credentials file for Azure: a connection string (what
# `az storage account show-connection-string` prints) or the account key alone. The engine hands it to
# adlfs and to `dvc push` as AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_KEY, never writing it down.
AZURE_CREDENTIALS_ENV = "TERRASNAP_AZURE_CREDENTIALS"


def _prefixes(schemes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{s}://" for s in schemes)


def _spelled(prefixes: tuple[str, ...]) -> str:
    return ", ".join(prefixes[:-1]) + " or " + prefixes[-1] if len(prefixes) > 1 else prefixes[0]


# The CRDs' CEL rules say the same (tests/unit/test_contract.py): a newline or a space in a URL is refused
# whole, never split by a later parser; userinfo in a git URL would end up in logs and pods' arguments.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_USERINFO = re.compile(r"^[A-Za-z][-A-Za-z0-9+.]*://[^/]*@")
# Four URIs of a snapshot (store + ~230 characters each) and the rest of the result fit RESULT_LIMIT.
STORE_URL_MAX = 512


def _plain(url: str) -> None:
    if _CONTROL_OR_SPACE.search(url):
        raise ValueError("must not contain whitespace or control characters")


def check_git_url(url: str) -> str:
    """A git repository URL; raises ValueError saying which schemes are allowed."""
    if not isinstance(url, str) or not url.startswith(_prefixes(GIT_SCHEMES)):
        raise ValueError(f"must start with {_spelled(_prefixes(GIT_SCHEMES))}")
    _plain(url)
    return url


def check_spec_git_url(url: str) -> str:
    """A DatasetSnapshot's git URL: as check_git_url, and no userinfo — a spec is read by everyone with
    `get` on it and becomes a pod's argument. (`terrasnap snapshot` on a laptop may still take one; it
    never records or prints it.)"""
    check_git_url(url)
    if _USERINFO.match(url):
        raise ValueError("must not carry user:password@ or a token@: put the token in source.git.credentialsSecret")
    return url


def check_bucket_url(url: str) -> str:
    """A bucket prefix a source is read from."""
    if not isinstance(url, str) or not url.startswith(_prefixes(BUCKET_SCHEMES)):
        raise ValueError(f"must start with {_spelled(_prefixes(BUCKET_SCHEMES))}")
    _plain(url)
    _check_azure_container(url)
    return url


def _check_azure_container(url: str) -> None:
    if url.startswith("azure://"):
        container = url[len("azure://"):].split("/", 1)[0]
        if not AZURE_CONTAINER.match(container):
            raise ValueError(f"azure container {container!r} must be 3-63 lowercase letters, digits and "
                             "single hyphens, starting and ending with a letter or digit")


def check_store_url(url: str) -> str:
    """A store (DVC remote) URL."""
    if not isinstance(url, str) or not url.startswith(STORE_PREFIXES):
        raise ValueError(f"must start with {_spelled(STORE_PREFIXES)}")
    _plain(url)
    _check_azure_container(url)
    if len(url) > STORE_URL_MAX:
        raise ValueError(f"must be at most {STORE_URL_MAX} characters (the Job's result must hold four URIs in it)")
    return url


# -- quantities (resources.requests / limits), as Kubernetes spells them ---------------------------------
_QUANTITY = re.compile(r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: object) -> Decimal:
    """A non-negative Kubernetes quantity (`500m`, `1Gi`, `2`) as a Decimal; ValueError otherwise."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a non-negative quantity (e.g. 500m, 1Gi, 2)")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:])) if suffix else number


def check_subpath(path: str) -> str:
    """A directory inside a repository or volume, relative to its root (leading and trailing slashes are
    dropped). `..` anywhere is refused, as the CRD's CEL rule (`!self.contains("..")`) refuses it."""
    if ".." in path:
        raise ValueError("must be a relative path without '..'")
    return path.strip("/")



# -- where a published snapshot lives (the engine writes there; the operator accepts only these URIs) --------
MANIFEST_PREFIX = "terrasnap/manifests"
# result key → file name in the snapshot's folder; `manifest` (manifest.parquet) marks it published
SNAPSHOT_FILES: dict[str, str] = {
    "manifest": "manifest.parquet", "metadata": "metadata.json", "lock": "dvc.lock", "stac": "collection.json",
}


def snapshot_folder(namespace: str, name: str, snapshot_hex: str) -> str:
    """The store-relative folder of one snapshot: terrasnap/manifests/<namespace>/<name>/<snapshotID hex>."""
    return f"{MANIFEST_PREFIX}/{namespace}/{name}/{snapshot_hex}"


def snapshot_uris(store_url: str, namespace: str, name: str, snapshot_id: str) -> dict[str, str]:
    """The canonical URIs of a snapshot's files (SNAPSHOT_FILES keys) in the store at `store_url`."""
    folder = snapshot_folder(namespace, name, snapshot_id.removeprefix("sha256:"))
    base = store_url.rstrip("/")
    return {key: f"{base}/{folder}/{file}" for key, file in SNAPSHOT_FILES.items()}


# -- Kubernetes names (a snapshot's --name and --namespace; they become store folders) ----------------------
# DNS-1123 subdomain for object names, DNS-1123 label for namespaces — what the API server itself accepts, so
# `terrasnap/manifests/<namespace>/<name>/` can never leave terrasnap/manifests/.
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_object_name(name: str) -> str:
    """A DatasetSnapshot name: a DNS-1123 subdomain; raises ValueError saying the rule."""
    if not isinstance(name, str) or len(name) > DNS1123_SUBDOMAIN_MAX or not _SUBDOMAIN.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid Kubernetes name (a DNS-1123 subdomain: lower-case letters, "
                         f"digits, '-' and '.', starting and ending with a letter or digit, at most "
                         f"{DNS1123_SUBDOMAIN_MAX} characters)")
    return name


def check_namespace(name: str) -> str:
    """A namespace: a DNS-1123 label; raises ValueError saying the rule."""
    if not isinstance(name, str) or len(name) > DNS1123_LABEL_MAX or not _LABEL.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid Kubernetes namespace (a DNS-1123 label: lower-case letters, "
                         f"digits and '-', starting and ending with a letter or digit, at most "
                         f"{DNS1123_LABEL_MAX} characters)")
    return name
