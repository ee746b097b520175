"""The store: a plain DVC remote (file://, gs://, s3:// or azure://) plus terrasnap's own prefix beside the objects.

Everything that talks to the bucket goes through `Store`, so the engine, fetch and GC agree on the
layout (docs/contracts.md) and on how errors are reported.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import fsspec

from terrasnap.api import contract
from terrasnap.engine.errors import StoreUnreachable, UsageError

MANIFEST_PREFIX = contract.MANIFEST_PREFIX
INFLIGHT_PREFIX = "terrasnap/inflight"
GC_PREFIX = "terrasnap/gc"
SUPPORTED_SCHEMES = contract.STORE_SCHEMES


def endpoint_from_env(scheme: str = "gs") -> str | None:
    """The emulator (or S3-compatible) endpoint, if any: ours first, then the one each provider's own
    clients honour (STORAGE_EMULATOR_HOST for Google's, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL for AWS's)."""
    explicit = os.environ.get("TERRASNAP_STORE_ENDPOINT")
    if explicit:
        return explicit
    if scheme == "s3":
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    if scheme == "azure":
        return None  # a connection string carries its own BlobEndpoint
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        return emulator if "://" in emulator else f"http://{emulator}"
    return None


@dataclass(frozen=True)
class ObjectInfo:
    md5: str  # "<32 hex>" or "<32 hex>.dir"
    size: int
    mtime: float | None  # seconds since epoch; None when the store does not say


def _gcs_filesystem(endpoint: str | None) -> Any:
    # Against an emulator: anonymous access and no bucket-type probe (PITFALLS: 60 s hang per call).
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    if endpoint:
        return fsspec.filesystem("gs", endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    creds = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    return fsspec.filesystem("gs", token=creds or "google_default", skip_instance_cache=True)


def _s3_filesystem(endpoint: str | None) -> Any:
    """s3fs with botocore's own credential chain (AWS_* variables, a shared credentials file, IRSA / EKS Pod
    Identity's web identity token) and region (AWS_REGION / AWS_DEFAULT_REGION)."""
    kwargs: dict[str, Any] = {"skip_instance_cache": True}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["client_kwargs"] = {"region_name": region}
    return fsspec.filesystem("s3", **kwargs)


@dataclass(frozen=True)
class AzureLogin:
    """How to reach an Azure storage account, the ways Azure's own tools take it: a connection string, an
    account name and key, or an account name alone (DefaultAzureCredential: workload identity)."""

    account_name: str | None
    connection_string: str | None = None
    account_key: str | None = None

    def fs_kwargs(self) -> dict[str, Any]:
        if self.connection_string:
            return {"connection_string": self.connection_string}
        if self.account_key:
            return {"account_name": self.account_name, "account_key": self.account_key}
        return {"account_name": self.account_name, "anon": False}

    def env(self) -> dict[str, str]:
        """The same login for `dvc push` (dvc-azure reads Azure CLI's AZURE_STORAGE_* variables), so no
        secret is ever written into a DVC config."""
        if self.connection_string:
            return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}
        env = {"AZURE_STORAGE_ACCOUNT": self.account_name or ""}
        if self.account_key:
            env["AZURE_STORAGE_KEY"] = self.account_key
        return env


def _connection_string_parts(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in value.strip().strip(";").split(";"):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            parts[key.strip()] = val.strip()
    return parts


def azure_login(endpoint: str | None) -> AzureLogin:
    """The login from the mounted credentials file (contract.AZURE_CREDENTIALS_ENV: a connection string or an
    account key) or Azure's own variables; `endpoint` (Azurite, a sovereign cloud) replaces BlobEndpoint."""
    secret = None
    path = os.environ.get(contract.AZURE_CREDENTIALS_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                secret = fh.read().strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"azure credentials file {path}: {type(exc).__name__}: {exc}") from None
    if secret is not None and ("AccountName=" in secret or "BlobEndpoint=" in secret):
        conn, key = secret, None
    elif secret is not None:
        conn, key = None, secret
    else:
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None
        key = os.environ.get("AZURE_STORAGE_KEY") or None
    account = os.environ.get("AZURE_STORAGE_ACCOUNT") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or None
    if conn:
        parts = _connection_string_parts(conn)
        if endpoint:
            parts["BlobEndpoint"] = endpoint
        if account and "AccountName" not in parts:
            parts["AccountName"] = account
        return AzureLogin(parts.get("AccountName"), ";".join(f"{k}={v}" for k, v in parts.items()) + ";")
    if key:
        if not account:
            raise UsageError("an Azure account key needs its account name (accountName on the SnapshotStore, "
                             "or AZURE_STORAGE_ACCOUNT)")
        if endpoint:
            protocol = endpoint.split("://", 1)[0]
            conn = (f"DefaultEndpointsProtocol={protocol};AccountName={account};AccountKey={key};"
                    f"BlobEndpoint={endpoint};")
            return AzureLogin(account, conn)
        return AzureLogin(account, account_key=key)
    if account:
        if endpoint:
            raise UsageError("an Azure endpoint needs a connection string or an account key (DVC reaches a "
                             "custom endpoint only through a connection string)")
        return AzureLogin(account)
    raise UsageError("no Azure credentials: give the account name (accountName on the SnapshotStore, or "
                     "AZURE_STORAGE_ACCOUNT) for workload identity, or a Secret holding a connection string "
                     "or the account key")


def _azure_filesystem(endpoint: str | None) -> Any:
    return fsspec.filesystem("az", skip_instance_cache=True, **azure_login(endpoint).fs_kwargs())


_FILESYSTEMS: dict[str, Callable[[str | None], Any]] = {"gs": _gcs_filesystem, "s3": _s3_filesystem,
                                                        "azure": _azure_filesystem}  # fmt: skip


class Store:
    """A DVC remote at `url`; paths given to methods are relative to the store root."""

    def __init__(self, url: str, endpoint: str | None = None, fs: Any = None) -> None:
        """`fs`: the filesystem to use instead of the store's own login (a bucket source's)."""
        parsed = urlparse(url)
        if parsed.scheme not in SUPPORTED_SCHEMES:
            raise UsageError(
                f"store {url!r}: unsupported scheme {parsed.scheme or '(none)'!r}; "
                f"use file:///absolute/path, gs://bucket/prefix, s3://bucket/prefix or azure://container/prefix"
            )
        self.scheme = parsed.scheme
        self.endpoint = endpoint if endpoint is not None else (
            endpoint_from_env(parsed.scheme) if parsed.scheme != "file" else None
        )
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise UsageError(f"store {url!r}: file:// URLs must be absolute (file:///path)")
            self.root = os.path.abspath(parsed.path)
            self._fs: Any = fsspec.filesystem("file", auto_mkdir=True)
        else:
            if not parsed.netloc:
                raise UsageError(f"store {url!r}: no bucket name")
            try:
                contract.check_store_url(url)
            except ValueError as exc:
                raise UsageError(f"store {url!r}: {exc}") from None
            self.root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            self._fs = fs
        self.url = url.rstrip("/")

    @property
    def fs(self) -> Any:
        """The filesystem, logged in on first use: a step that only names the store (fetch compares a DVC
        remote's URL with it) needs no credentials for it."""
        if self._fs is None:
            self._fs = _FILESYSTEMS[self.scheme](self.endpoint)
        return self._fs

    @classmethod
    def from_url(cls, url: str, endpoint: str | None = None) -> Store:
        return cls(url, endpoint)

    def dvc_env(self) -> dict[str, str]:
        """Variables `dvc push` to this store needs beyond the process's own (Azure: the login, which DVC
        cannot take from a file path the way it takes a GCS key or an AWS credentials file)."""
        return azure_login(self.endpoint).env() if self.scheme == "azure" else {}

    # -- paths ---------------------------------------------------------------------------------
    def abs(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def uri(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def rel_from_uri(self, uri: str) -> str:
        """The store-relative path of a URI inside this store (UsageError if it is elsewhere)."""
        if not uri.startswith(self.url + "/"):
            raise UsageError(f"{uri!r} is not inside store {self.url!r}")
        return uri[len(self.url) + 1 :]

    @staticmethod
    def object_rel(md5: str) -> str:
        return f"files/md5/{md5[:2]}/{md5[2:]}"

    @staticmethod
    def manifest_rel(namespace: str, name: str, snapshot_hex: str) -> str:
        return contract.snapshot_folder(namespace, name, snapshot_hex)

    # -- I/O -------------------------------------------------------------------------------------
    def _wrap(self, what: str, exc: BaseException) -> StoreUnreachable:
        return StoreUnreachable(f"store {self.url}: {what}: {type(exc).__name__}: {exc}")

    def check_reachable(self, *, write: bool = True) -> None:
        """Fail fast, with the store's URL in the message, before any work is done. A reader (`write=False`:
        fetch, verify, a bucket source) needs an existing, readable file:// root, never a writable one: a
        store or source mounted read-only is the normal case for them."""
        try:
            fs = self.fs
        except UsageError as exc:
            raise UsageError(f"store {self.url}: {exc}") from None
        try:
            if self.scheme == "file" and not write:
                if not os.path.isdir(self.root):
                    raise FileNotFoundError(f"{self.root} does not exist")
                if not os.access(self.root, os.R_OK | os.X_OK):
                    raise PermissionError(f"{self.root} is not readable")
            elif self.scheme == "file":
                os.makedirs(self.root, exist_ok=True)
                if not os.access(self.root, os.W_OK):
                    raise PermissionError(f"{self.root} is not writable")
            else:
                if self.endpoint:
                    _probe_tcp(self.endpoint)
                bucket = self.root.split("/", 1)[0]
                if not fs.exists(bucket):
                    raise FileNotFoundError(f"bucket {bucket!r} does not exist")
        except StoreUnreachable:
            raise
        except Exception as exc:
            raise self._wrap("not reachable", exc) from exc

    def exists(self, rel: str) -> bool:
        try:
            return bool(self.fs.exists(self.abs(rel)))
        except Exception as exc:
            raise self._wrap(f"checking {rel}", exc) from exc

    def _info(self, rel: str) -> dict[str, Any] | None:
        """The backend's metadata of an object (one call, no content), None if it does not exist."""
        try:
            return dict(self.fs.info(self.abs(rel)))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._wrap(f"stat {rel}", exc) from exc

    def size(self, rel: str) -> int | None:
        """Size in bytes, None if the object does not exist."""
        info = self._info(rel)
        return None if info is None else int(info.get("size") or 0)

    def read_bytes(self, rel: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self.abs(rel)))
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise self._wrap(f"reading {rel}", exc) from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write atomically: readers see the old object or the whole new one, never a prefix."""
        target = self.abs(rel)
        try:
            if self.scheme == "file":
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.tmp-{uuid.uuid4().hex}"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            else:
                # A GCS object upload is atomic: it becomes visible only when complete.
                self.fs.pipe_file(target, data)
        except Exception as exc:
            raise self._wrap(f"writing {rel}", exc) from exc

    def put_file(self, local: str, rel: str) -> None:
        target = self.abs(rel)
        try:
            if self.scheme == "file":
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.tmp-{uuid.uuid4().hex}"
                self.fs.put_file(local, tmp)
                os.replace(tmp, target)
            else:
                self.fs.put_file(local, target)
        except Exception as exc:
            raise self._wrap(f"uploading {rel}", exc) from exc

    def get_file(self, rel: str, local: str) -> None:
        try:
            self.fs.get_file(self.abs(rel), local)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise self._wrap(f"downloading {rel}", exc) from exc

    def delete_many(self, rels: Iterable[str]) -> list[tuple[str, str]]:
        """Delete objects; returns (rel, error) for each that failed, and never raises for one object."""
        failures: list[tuple[str, str]] = []
        for rel in rels:
            try:
                self.fs.rm_file(self.abs(rel))
            except FileNotFoundError:
                pass
            except Exception as exc:
                failures.append((rel, f"{type(exc).__name__}: {exc}"))
        return failures

    def delete_batch(self, rels: Iterable[str]) -> list[tuple[str, str]]:
        """Like delete_many, in as few round trips as the backend allows (GCS: batch requests of 100 on
        Google, 5 concurrent DELETEs on emulators). Missing objects are not failures. (Added for GC.)"""
        rels = list(rels)
        if self.scheme == "s3" and rels:
            return self._delete_s3(rels)
        if self.scheme == "azure" and rels:
            return self._delete_azure(rels)
        if self.scheme != "gs" or not rels:
            return self.delete_many(rels)
        from fsspec.asyn import sync

        paths = [self.abs(rel) for rel in rels]
        try:
            results = sync(self.fs.loop, self.fs._delete_files, paths, 100)
        except Exception as exc:
            return [(rel, f"{type(exc).__name__}: {exc}") for rel in rels]
        failures: list[tuple[str, str]] = []
        for rel, result in zip(rels, results, strict=False):
            if isinstance(result, BaseException) and not (
                isinstance(result, FileNotFoundError) or "No such object" in str(result) or "404" in str(result)
            ):
                failures.append((rel, f"{type(result).__name__}: {result}"))
        if len(results) < len(rels):
            failures.extend((rel, "no result from the batch delete") for rel in rels[len(results) :])
        return failures

    def _delete_s3(self, rels: list[str]) -> list[tuple[str, str]]:
        """S3 DeleteObjects, 1,000 keys a call; a key that is already gone is no error there. Each call's
        per-key errors are reported, never raised."""
        from fsspec.asyn import sync

        bucket, _, prefix = self.root.partition("/")
        failures: list[tuple[str, str]] = []
        for start in range(0, len(rels), 1000):
            chunk = rels[start : start + 1000]
            keys = {posixpath.join(prefix, rel) if prefix else rel: rel for rel in chunk}
            request = {"Objects": [{"Key": key} for key in keys], "Quiet": True}
            try:
                answer = sync(self.fs.loop, self.fs._call_s3, "delete_objects", Bucket=bucket, Delete=request)
            except Exception as exc:
                failures.extend((rel, f"{type(exc).__name__}: {exc}") for rel in chunk)
                continue
            for error in answer.get("Errors") or ():
                rel = keys.get(str(error.get("Key")), str(error.get("Key")))
                if error.get("Code") != "NoSuchKey":
                    failures.append((rel, f"{error.get('Code')}: {error.get('Message')}"))
        self.fs.invalidate_cache()
        return failures

    def _delete_azure(self, rels: list[str]) -> list[tuple[str, str]]:
        """Azure blob batch (Blob Batch API), 256 sub-requests a call; a blob that is already gone (404) is
        no error. Each sub-request's failure is reported, never raised."""
        from fsspec.asyn import sync

        container, _, prefix = self.root.partition("/")

        async def run() -> list[tuple[str, str]]:
            failures: list[tuple[str, str]] = []
            async with self.fs.service_client.get_container_client(container) as client:
                for start in range(0, len(rels), 256):
                    chunk = rels[start : start + 256]
                    names = [posixpath.join(prefix, rel) if prefix else rel for rel in chunk]
                    try:
                        answers = await client.delete_blobs(*names, raise_on_any_failure=False)
                        statuses = [a.status_code async for a in answers]
                    except Exception as exc:
                        failures.extend((rel, f"{type(exc).__name__}: {exc}") for rel in chunk)
                        continue
                    for rel, status in zip(chunk, statuses, strict=False):
                        if status not in (200, 202, 404):
                            failures.append((rel, f"HTTP {status} from the blob batch delete"))
                    if len(statuses) < len(chunk):
                        failures.extend((rel, "no result from the blob batch delete") for rel in chunk[len(statuses):])
            return failures

        try:
            return sync(self.fs.loop, run)
        finally:
            self.fs.invalidate_cache()

    def list_prefix(self, rel_prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(relative path, info) of every file under a prefix; raises StoreUnreachable on listing errors."""
        base = self.abs(rel_prefix)
        try:
            if self.scheme != "file" and not self.fs.exists(base):
                return
            found = self._find(base)
        except Exception as exc:
            raise self._wrap(f"listing {rel_prefix}", exc) from exc
        for path, info in sorted(found.items()):
            rel = path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path
            if ".tmp-" in posixpath.basename(rel):
                continue
            yield rel, info

    def _find(self, base: str) -> dict[str, dict[str, Any]]:
        """Every file under `base`. On file://, fsspec's walk silently omits a folder it cannot read (and
        drops `on_error` when it recurses), so a GC would see nothing there and call that "nothing is
        registered": the local walk raises instead."""
        if self.scheme == "file":
            return find_local_strict(base)
        # A listing is always fresh (fsspec caches listings per instance; GC re-lists before it deletes),
        # and holds objects only: s3fs reports an emptied prefix it listed before as a "directory".
        self.fs.invalidate_cache()
        found = self.fs.find(base, detail=True)
        return {path: info for path, info in found.items() if info.get("type") != "directory"}

    # -- content checksums (verify after push, `terrasnap verify`) ------------------------------------
    def stored_md5(self, rel: str) -> tuple[int, str | None] | None:
        """(size, md5 hex the store itself computed) of an object, md5 None when the backend keeps none
        (file://, a composite GCS object); None when the object does not exist. Costs one metadata call,
        the same as `size()`, and reads no content."""
        info = self._info(rel)
        if info is None or info.get("type") == "directory":
            return None
        return int(info.get("size") or 0), STORE_CHECKSUMS.get(self.scheme, _no_checksum)(info)

    def read_digests(self, rel: str) -> tuple[int, str, str] | None:
        """(size, md5 hex, sha256 hex) of an object's bytes as read back; None when it does not exist."""
        import hashlib

        md5, sha, size = hashlib.md5(), hashlib.sha256(), 0
        try:
            with self.fs.open(self.abs(rel), "rb", block_size=1 << 22) as fh:
                while chunk := fh.read(1 << 22):
                    md5.update(chunk)
                    sha.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._wrap(f"reading {rel}", exc) from exc
        return size, md5.hexdigest(), sha.hexdigest()

    def list_objects(self) -> Iterator[ObjectInfo]:
        """Every DVC object in the store (files/md5/xx/yyyy[.dir])."""
        for rel, info in self.list_prefix("files/md5"):
            parts = rel.split("/")
            if len(parts) != 4 or len(parts[2]) != 2:
                continue
            yield ObjectInfo(md5=parts[2] + parts[3], size=int(info.get("size") or 0), mtime=_mtime(info))


def _no_checksum(_info: dict[str, Any]) -> str | None:
    return None


def _gcs_md5(info: dict[str, Any]) -> str | None:
    """GCS keeps the MD5 of every non-composite object it received (base64 in `md5Hash`)."""
    import base64
    import binascii

    value = info.get("md5Hash")
    if not value:
        return None
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def _s3_md5(info: dict[str, Any]) -> str | None:
    """The ETag of a single-part upload without SSE-KMS is the object's md5; a multipart ETag (`<hex>-N`) is
    not, and such an object is read back instead. An SSE-KMS ETag is 32 hex that is not the md5: a stored
    md5 that disagrees is always confirmed by reading the object back (verify.check_object)."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"').lower()
    return etag if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag) else None


def _azure_md5(info: dict[str, Any]) -> str | None:
    """Azure keeps Content-MD5 of a blob written in one Put Blob (the service computes it: DVC's objects
    under 64 MiB, azure-storage-blob's single-put limit); a blob committed from blocks has none unless the
    uploader set one, and such a blob is read back instead."""
    import base64
    import binascii

    settings: Any = info.get("content_settings") or {}  # azure-storage-blob's ContentSettings is dict-like
    value = settings.get("content_md5")
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str) and value:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        return None
    return raw.hex() if len(raw) == 16 else None


# The md5 a store computed itself, from an fsspec `info()` dict, per scheme. A scheme missing here is
# verified by reading the object back.
STORE_CHECKSUMS: dict[str, Callable[[dict[str, Any]], str | None]] = {"gs": _gcs_md5, "s3": _s3_md5,
                                                                      "azure": _azure_md5}  # fmt: skip


def find_local_strict(base: str) -> dict[str, dict[str, Any]]:
    """fsspec-style {path: info} of every file under a local folder; raises OSError on anything it cannot
    read (an unreadable folder, a dangling symlink, a symlink loop) instead of leaving it out."""
    if not os.path.lexists(base):
        return {}
    if not os.path.isdir(base):
        os.stat(base)  # a dangling symlink raises here; a plain file is itself the listing
        return {base: _local_info(base)}

    def fail(exc: OSError) -> None:
        raise exc

    out: dict[str, dict[str, Any]] = {}
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(base, onerror=fail, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            raise OSError(f"symlink loop at {dirpath}")
        seen.add((st.st_dev, st.st_ino))
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                out[path] = _local_info(path)  # os.walk files a dangling symlink as a file: stat raises
            except FileNotFoundError:
                if os.path.lexists(path):
                    raise
                # deleted since the folder was read (a released registration, a finished atomic write)
        for name in dirnames:
            os.stat(os.path.join(dirpath, name))
    return out


def _local_info(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"name": path, "size": st.st_size, "type": "file", "mtime": st.st_mtime}


def _probe_tcp(endpoint: str, timeout: float = 5.0) -> None:
    """Connect once: gcsfs retries a dead endpoint with back-off for over a minute before it says so."""
    import socket

    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout):
        pass


def _mtime(info: dict[str, Any]) -> float | None:
    """Modification time from an fsspec info dict: a number (local files) or ISO text (GCS)."""
    from datetime import datetime

    for key in ("mtime", "created", "updated", "LastModified", "last_modified"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):  # s3fs and adlfs give datetimes
            return value.timestamp()
        if value:
            try:
                return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None
