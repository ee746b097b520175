"""Sources: a local directory, a bucket prefix, or a git repository in pip's `git+URL@REV#subdirectory=P` form.

Each is materialized as a local directory; git sources also resolve the exact commit that was used. A git
or local source that is a DVC project (engine/dvcsource.py) has its tracked data fetched from its own
remotes and its pipeline reproduced, in a sandbox copy: the caller's directory is never written to.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from terrasnap.api import contract
from terrasnap.engine import paths
from terrasnap.engine.errors import GitError, SourceUnavailable, UnsafeInput, UsageError
from terrasnap.engine.redact import redact, remember_url, strip_userinfo

if TYPE_CHECKING:
    from terrasnap.engine.dvcsource import DvcSource, Fetched
    from terrasnap.engine.store import Store

# A bucket source's own credentials (a key file); never the store's GOOGLE_APPLICATION_CREDENTIALS.
SOURCE_CREDENTIALS_ENV = contract.SOURCE_CREDENTIALS_ENV


@dataclass
class SourceSpec:
    kind: str  # local | bucket | git
    raw: str
    path: str = ""  # local path, bucket URL, or git URL
    revision: str | None = None
    subdirectory: str = ""

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind,
                "uri": strip_userinfo(self.raw) if self.kind != "local" else os.path.abspath(self.path)}


@dataclass
class Materialized:
    root: Path
    spec: SourceSpec
    commit: str | None = None
    meta: dict[str, object] = field(default_factory=dict)
    dvc: DvcSource | None = None  # set when the source is a DVC project (after the check step)
    fetched: Fetched | None = None  # set when the source is a DVC project (after the fetch step)


def parse_source(text: str) -> SourceSpec:
    if text.startswith("git+"):
        rest = text[4:]
        rest, _, fragment = rest.partition("#")
        sub = ""
        if fragment:
            params = parse_qs(fragment)
            sub = (params.get("subdirectory") or [""])[0]
        url, rev = rest, None
        at = rest.rfind("@")
        if at > rest.rfind("/"):
            url, rev = rest[:at], rest[at + 1 :] or None
        remember_url(url)  # a password in the URL is a secret from here on: masked in every message
        shown = strip_userinfo(text)  # what messages, logs and metadata.json record
        try:
            contract.check_git_url(url)
        except ValueError as exc:
            raise UsageError(f"source {shown!r}: git URL {exc}") from None
        try:
            sub = contract.check_subpath(sub)
            sub = "/".join(p for p in sub.split("/") if p not in ("", "."))  # ./data and data//x mean data
            if sub:
                paths.check_relpath(sub, "is")
        except ValueError as exc:
            raise UsageError(f"source {shown!r}: subdirectory {exc}") from None
        check_revision(rev, shown)
        return SourceSpec("git", shown, url, rev, sub)
    scheme = urlparse(text).scheme
    if "@" in text and "://" in text:
        remember_url(text)
    if scheme in contract.BUCKET_SCHEMES:
        try:
            contract.check_bucket_url(text)
        except ValueError as exc:
            raise UsageError(f"source {text!r}: a bucket source {exc}") from None
        return SourceSpec("bucket", text, text)
    if scheme and scheme != "file":
        raise UsageError(f"source {text!r}: expected a directory, a bucket prefix "
                         f"({', '.join(s + '://' for s in contract.BUCKET_SCHEMES)}) or git+URL@REV")
    path = urlparse(text).path if scheme == "file" else text
    return SourceSpec("local", text, path)


# Transports git may use, for the source and anything it points at (submodules, redirects, alternates):
# never ext:: (runs a command), fd::, ssh or anything else a hostile URL could name.
GIT_ALLOW_PROTOCOL = "https:http:file"
_GIT_HARDENING = ("-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never",
                  "-c", "core.hooksPath=/dev/null", "-c", "submodule.recurse=false")
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_LFS_POINTER_MAX = 1024  # git-lfs pointers are ~130 bytes; only blobs this small are opened


def check_revision(rev: str | None, text: str) -> str | None:
    """A revision is a name, never an option (`--upload-pack=...`) or a refspec; raises UsageError."""
    if rev is None:
        return None
    if rev.startswith("-"):
        raise UsageError(f"source {redact(text)!r}: revision {rev!r} starts with '-' (a revision can never be a "
                         "git option)")
    if any(c in rev for c in ": \\") or any(ord(c) < 32 or ord(c) == 127 for c in rev):
        raise UsageError(f"source {redact(text)!r}: revision {rev!r} is not a branch, tag or commit name")
    return rev


def _git_env() -> dict[str, str]:
    # GIT_ALLOW_PROTOCOL overrides any protocol.allow of the user's or system's config (a CI runner's
    # system config may still hold its proxy or CA settings, so it is not dropped).
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", GIT_ALLOW_PROTOCOL=GIT_ALLOW_PROTOCOL,
               GIT_PROTOCOL_FROM_USER="0")
    token = env.get("TERRASNAP_GIT_TOKEN")
    if token:
        # Passed as config through the environment: never on a command line, in a URL or in .git/config.
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    return env


def _git_bytes(args: list[str], cwd: Path | None = None) -> bytes:
    proc = subprocess.run(["git", *_GIT_HARDENING, *args], cwd=cwd, env=_git_env(), capture_output=True)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise GitError(redact(f"git {args[0]} failed: {' '.join(msg[-3:])}"))
    return proc.stdout


def _git(args: list[str], cwd: Path | None = None) -> str:
    return _git_bytes(args, cwd).decode(errors="surrogateescape").strip()


def _check_tree(dest: Path, sub: str, raw: str, commit: str) -> None:
    """Every name in the checked-out tree is safe, and nothing would be silently missing: a submodule
    (gitlink) or a git-lfs pointer is refused, naming its path — terrasnap fetches neither, and snapshotting
    a pointer file instead of the data it stands for would publish the wrong bytes."""
    listing = _git_bytes(["ls-tree", "-r", "-l", "-z", "--full-tree", "HEAD"], cwd=dest)
    bad: list[str] = []
    for item in listing.split(b"\0"):
        if not item:
            continue
        meta, _, raw_name = item.partition(b"\t")
        name = os.fsdecode(raw_name)
        if sub and not (name == sub or name.startswith(sub + "/")):
            continue
        mode, kind, _obj, size = meta.split()[:4]
        why = paths.problem(name)
        if why:
            bad.append(f"{paths.quoted(name)} {why}")
        elif kind == b"commit":
            bad.append(f"{name!r} is a git submodule (not fetched: its files would be missing)")
        elif kind == b"blob" and mode != b"120000" and size.isdigit() and int(size) <= _LFS_POINTER_MAX:
            try:
                with open(dest / name, "rb") as fh:
                    head = fh.read(len(LFS_POINTER))
            except OSError:
                continue  # not in the working tree: nothing of it can be snapshotted either
            if head == LFS_POINTER:
                bad.append(f"{name!r} is a git-lfs pointer (LFS objects are not fetched: the data would be "
                           "missing)")
    if bad:
        raise UnsafeInput(f"source {raw} at {commit[:12]}: refused, nothing pushed: " + "; ".join(sorted(bad)[:10])
                          + (f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""))


def _materialize_git(spec: SourceSpec, dest: Path) -> Materialized:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _git(["init", "-q", "--", str(dest)])
    _git(["remote", "add", "--", "origin", spec.path], cwd=dest)
    rev = check_revision(spec.revision, spec.raw) or "HEAD"
    try:
        _git(["fetch", "-q", "--no-recurse-submodules", "--depth", "1", "--end-of-options", "origin", rev], cwd=dest)
    except GitError:
        # Servers without uploadpack.allowReachableSHA1InWant refuse a bare commit by depth; fetch all.
        try:
            _git(["fetch", "-q", "--no-recurse-submodules", "--end-of-options", "origin",
                  "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"], cwd=dest)
        except GitError as exc:
            raise GitError(f"source {spec.raw}: cannot fetch: {exc.message}") from exc
        commit = ""
        # A tag or commit resolves as given; a branch was fetched as refs/remotes/origin/<branch>.
        for name in (rev, f"refs/remotes/origin/{rev}"):
            try:
                commit = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"],
                              cwd=dest)
                break
            except GitError:
                continue
        if not commit:
            raise GitError(f"source {spec.raw}: revision {rev!r} does not exist") from None
        _git(["checkout", "-q", "--no-recurse-submodules", commit, "--"], cwd=dest)
    else:
        _git(["checkout", "-q", "--no-recurse-submodules", "FETCH_HEAD", "--"], cwd=dest)
        commit = _git(["rev-parse", "HEAD"], cwd=dest)
    root = dest / spec.subdirectory if spec.subdirectory else dest
    if spec.subdirectory:
        # Resolve first, then check: a subdirectory that is (or passes through) a symlink out of the checkout
        # would snapshot whatever it points at.
        real = root.resolve()
        if not real.is_relative_to(dest.resolve()):
            raise UnsafeInput(f"source {spec.raw}: subdirectory {spec.subdirectory!r} leads outside the checkout "
                              f"at {commit[:12]} (a symlink; refused, nothing read)")
    if not root.is_dir():
        raise SourceUnavailable(f"source {spec.raw}: subdirectory {spec.subdirectory!r} not found at {commit[:12]}")
    # The tree is checked where the subdirectory really is (it may be a symlink to another folder inside).
    real_sub = root.resolve().relative_to(dest.resolve()).as_posix()
    _check_tree(dest, "" if real_sub == "." else real_sub, spec.raw, commit)
    return Materialized(root=root, spec=spec, commit=commit, meta={"revision": rev})


def _materialize_bucket(spec: SourceSpec, dest: Path, endpoint: str | None) -> Materialized:
    from terrasnap.engine.store import Store

    try:
        from terrasnap.engine.store import endpoint_from_env

        scheme = urlparse(spec.path).scheme
        if scheme == "file":  # a file:// prefix (tests, local runs) has no credentials to choose
            src = Store.from_url(spec.path.rstrip("/"), endpoint)
        else:
            endpoint = endpoint if endpoint is not None else endpoint_from_env(scheme)
            src = Store(spec.path.rstrip("/"), endpoint, fs=bucket_source_filesystem(spec, endpoint))
        src.check_reachable(write=False)
        files = list(src.list_prefix(""))
    except Exception as exc:
        raise SourceUnavailable(redact(f"source {spec.raw}: {getattr(exc, 'message', exc)}")) from exc
    if not files:
        raise SourceUnavailable(f"source {spec.raw}: no objects under this prefix")
    dest.mkdir(parents=True, exist_ok=True)
    bad = []
    for rel, _info in files:
        try:
            paths.join_inside(dest, rel, "object")
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        # Checked before anything is written: `p/../../x` or `a//b` would land outside (or beside) the folder.
        raise UnsafeInput(f"source {spec.raw}: object names refused (nothing fetched): " + "; ".join(bad[:10]))
    for rel, info in files:
        local = dest / rel
        if local.exists() and local.stat().st_size == int(info.get("size") or -1):
            continue  # already fetched into a persistent workdir
        local.parent.mkdir(parents=True, exist_ok=True)
        src.get_file(rel, str(local))
    return Materialized(root=dest, spec=spec)


def _sandbox_copy(root: Path, dest: Path) -> Path:
    """A local DVC project is reproduced in a copy (its stages write outputs), without its cache or git."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(root, dest, symlinks=True, ignore=lambda d, names: [
        n for n in names if n == ".git" or (Path(d).name == ".dvc" and n in ("cache", "tmp", "config.local"))])
    return dest


def materialize(spec: SourceSpec, workdir: Path, endpoint: str | None = None, store: Store | None = None,
                progress: Callable[[str], None] | None = None) -> Materialized:
    """The source as a local directory, its DVC pipeline reproduced and checked, in this process. `store`
    (when snapshotting) lets a DVC remote that is the store itself be read with the store's own settings."""
    from terrasnap.engine import dvcsource

    mat = fetch_source(spec, workdir, endpoint, store, progress)
    if mat.fetched is not None:
        stages = dvcsource.run_pipeline(mat.fetched, workdir, progress) if mat.fetched.plan else {}
        mat.dvc = dvcsource.check(mat.fetched, stages, workdir)
    return mat


def fetch_source(spec: SourceSpec, workdir: Path, endpoint: str | None = None, store: Store | None = None,
                 progress: Callable[[str], None] | None = None) -> Materialized:
    """The fetch step: the source as a local directory (a DVC project's tracked data fetched, none of its
    stages run). Needs only the source's own credentials."""
    from terrasnap.engine import dvcsource

    if spec.kind == "local":
        root = Path(spec.path)
        if not root.is_dir():
            raise SourceUnavailable(f"source {spec.raw}: no such directory")
        if not dvcsource.is_dvc_source(root, root):
            return Materialized(root=root, spec=spec)
        mat = Materialized(root=_sandbox_copy(root, workdir / "checkout"), spec=spec)
        mat.fetched = dvcsource.fetch(mat.root, mat.root, workdir, store, progress, origin=root.resolve())
        return mat
    if spec.kind == "git":
        mat = _materialize_git(spec, workdir / "checkout")
        mat.fetched = dvcsource.fetch(mat.root, workdir / "checkout", workdir, store, progress)
        return mat
    return _materialize_bucket(spec, workdir / "bucket", endpoint)


# -- a bucket source's own credentials ------------------------------------------------------------------------

def bucket_source_credentials() -> Path | None:
    """The key file of a bucket source (`source.bucket.credentialsSecret`, mounted in the fetch container
    only), or None: then the bucket is read anonymously (or with workload identity), never with the store's
    key, so `gs://<another team's bucket>/` cannot be copied with the store's rights."""
    value = os.environ.get(SOURCE_CREDENTIALS_ENV)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise SourceUnavailable(f"{SOURCE_CREDENTIALS_ENV}={value}: the bucket source's credentials file "
                                f"does not exist (is source.bucket.credentialsSecret's key right?)")
    return path


def _s3_source_filesystem(spec: SourceSpec, endpoint: str | None, creds: Path | None) -> object:
    """s3fs for a bucket source: its own AWS shared credentials file (`[default]` keys), else the pod's web
    identity (IRSA / EKS Pod Identity) — or anonymous wherever the environment holds the store's keys."""
    import configparser

    import fsspec

    kwargs: dict[str, object] = {"skip_instance_cache": True}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if creds is not None:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(creds.read_text())
            section = parser["default"]
            kwargs.update(key=section["aws_access_key_id"], secret=section["aws_secret_access_key"])
            if section.get("aws_session_token"):
                kwargs["token"] = section["aws_session_token"]
        except (OSError, KeyError, configparser.Error) as exc:
            raise SourceUnavailable(f"source {spec.raw}: credentials {creds} are not an AWS shared credentials "
                                    f"file with a [default] aws_access_key_id and aws_secret_access_key: "
                                    f"{type(exc).__name__}") from None
    elif any(os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_SHARED_CREDENTIALS_FILE")):
        kwargs["anon"] = True  # the store's keys: never for a source
    return fsspec.filesystem("s3", **kwargs)


def _azure_source_filesystem(spec: SourceSpec, endpoint: str | None, creds: Path | None) -> object:
    """adlfs for a bucket source: its own connection string (an account key's, or a SAS one:
    `BlobEndpoint=...;SharedAccessSignature=...`), never the store's login; `endpoint` replaces BlobEndpoint."""
    import fsspec

    from terrasnap.engine.store import _connection_string_parts

    try:
        text = creds.read_text().strip() if creds is not None else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceUnavailable(f"source {spec.raw}: credentials {creds}: {type(exc).__name__}") from None
    parts = _connection_string_parts(text)
    if not ("AccountName" in parts or "BlobEndpoint" in parts):
        raise SourceUnavailable(f"source {spec.raw}: an azure:// bucket source needs source.bucket.credentialsSecret "
                                "holding a connection string (account key or SAS); an Azure URL names no account")
    if endpoint:
        parts["BlobEndpoint"] = endpoint
    conn = ";".join(f"{k}={v}" for k, v in parts.items()) + ";"
    return fsspec.filesystem("az", connection_string=conn, skip_instance_cache=True)


def bucket_source_filesystem(spec: SourceSpec, endpoint: str | None) -> object:
    """gcsfs, s3fs or adlfs for a bucket source, with its own credentials (see bucket_source_credentials)."""
    import json

    import fsspec

    creds = bucket_source_credentials()
    if spec.path.startswith("s3://"):
        return _s3_source_filesystem(spec, endpoint, creds)
    if spec.path.startswith("azure://"):
        return _azure_source_filesystem(spec, endpoint, creds)
    if creds is not None:
        try:
            json.loads(creds.read_text())
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"source {spec.raw}: credentials {creds} are not a JSON key file: {exc}") from None
    if endpoint:
        # Emulators take no tokens (and getting one needs Google's token endpoint): anonymous, as for the store.
        return fsspec.filesystem("gs", endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    if creds is not None:
        return fsspec.filesystem("gs", token=str(creds), skip_instance_cache=True)
    # No key of its own: workload identity / the metadata server if the pod has one, else anonymous; the
    # store's GOOGLE_APPLICATION_CREDENTIALS is never used for a source.
    token = "anon" if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") else "google_default"
    return fsspec.filesystem("gs", token=token, skip_instance_cache=True)


# -- the fetch step's state, handed to the snapshot container --------------------------------------------------

def save_fetched(mat: Materialized, path: Path) -> None:
    """What the fetch step found, as JSON, for `load_fetched` in a later container."""
    import json

    doc = {"source": mat.spec.raw, "root": str(mat.root), "commit": mat.commit, "meta": mat.meta,
           "dvc": mat.fetched.to_dict() if mat.fetched else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_fetched(path: Path) -> Materialized:
    import json

    from terrasnap.engine.dvcsource import Fetched

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: no fetched source here (run `terrasnap source fetch` first): {exc}") from None
    mat = Materialized(root=Path(doc["root"]), spec=parse_source(doc["source"]), commit=doc.get("commit"),
                       meta=dict(doc.get("meta") or {}))
    if doc.get("dvc"):
        mat.fetched = Fetched.from_dict(doc["dvc"])
    return mat
