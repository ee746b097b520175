"""A source that is a DVC project, materialized the DVC way.

1. Its `.dvc/config` is replaced by a sanitized one: only the remotes (gs://, s3://, azure:// or a local
   path) and their URL, endpoint, region, account name and anonymous flag survive; cache, site cache and state go to the terrasnap workdir, never into
   the checkout. Credentials come only from `TERRASNAP_DVC_REMOTE_CREDENTIALS/<remote>/credentials.json`
   (the snapshot's namespace) — or, for a remote that *is* the store (same URL), the store's own.
2. What is tracked under the snapshot path (and what its stages depend on) is fetched from the remote each
   output names, or the default remote. An object the remote does not have is "never pushed" (exit 1, with
   the paths); a remote that cannot be reached is exit 3.
3. `dvc repro` honours the committed `dvc.lock`: an up-to-date stage is checked out, a stale one runs.
   Each stage is recorded as `ran` or `up-to-date`.
4. Every DVC-tracked file's md5 is checked against its `.dvc`/`dvc.lock` entry (DVC itself does not check
   what it downloads): a corrupted remote object or a stale pointer is exit 1, naming file and pointer.

Everything runs with a scrubbed environment: the repository's stages and remotes never see the store's
credentials or the git token. In a Job the steps are three containers (docs/contracts.md): `fetch` (1, 2;
the source's credentials only), `pipeline` (3; no credentials at all) and `snapshot` (4; trusts nothing
the pipeline left: it re-hashes every file, and reads a `.dir` listing only after checking its md5).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from terrasnap.api import contract
from terrasnap.engine import dvc
from terrasnap.engine.errors import (
    DVCError,
    PointerMismatch,
    SourceUnavailable,
    TerrasnapError,
    UsageError,
    ValidationFailed,
)
from terrasnap.engine.hashing import HashCache, hash_many
from terrasnap.engine.store import Store

CREDENTIALS_ENV = contract.DVC_REMOTE_CREDENTIALS_ENV
CREDENTIALS_FILE = contract.DVC_REMOTE_CREDENTIALS_FILE
# Settings a repository may give its remotes; everything else (credential paths, key files, cache or site
# directories, hooks) is dropped: the repository's config is input, not configuration of this process.
REMOTE_KEYS = ("url", "endpointurl", "allow_anonymous_login", "projectname")
S3_REMOTE_KEYS = ("url", "endpointurl", "region")
AZURE_REMOTE_KEYS = ("url", "account_name", "allow_anonymous_login")
REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RAN, UP_TO_DATE = "ran", "up-to-date"


@dataclass
class DvcSource:
    """What the DVC side of a source contributed to the snapshot."""

    project: Path  # the DVC project root inside the checkout
    stages: dict[str, str] = field(default_factory=dict)  # pipeline stage -> ran | up-to-date
    identity: dict[str, Any] = field(default_factory=dict)  # dvc.yaml files of the stages (in the snapshotID)
    side_files: dict[str, bytes] = field(default_factory=dict)  # "source/<path>": pointers, dvc.yaml/lock, params
    objects: list[str] = field(default_factory=list)  # the source's DVC objects wholly inside the snapshot
    fetched: int = 0


def find_project(root: Path, top: Path) -> Path | None:
    """The nearest directory from `root` up to `top` (the checkout) that holds `.dvc/`."""
    here = root
    while True:
        if (here / ".dvc").is_dir():
            return here
        if here == top or here.parent == here:
            return None
        here = here.parent


def is_dvc_source(root: Path, top: Path) -> bool:
    if find_project(root, top) is not None or (root / "dvc.yaml").is_file():
        return True
    return any(p.name.endswith(".dvc") and p.is_file() for p in root.rglob("*.dvc") if ".git" not in p.parts)


def _same_location(url: str, store: Store | None) -> bool:
    if store is None:
        return False
    if store.scheme == "file":
        return urlparse(url).scheme in ("", "file") and os.path.realpath(_local_path(url)) == os.path.realpath(
            store.root)
    return url.rstrip("/") == store.url.rstrip("/")


# A GCS credential becomes a bearer token sent to the endpoint: the namespace's key for a remote never goes
# to an endpoint the repository chose, only to the provider's own or the store's (operator-configured) one.
_UNTRUSTED_ENDPOINT = ("its endpointurl is set by the repository, and the credentials given for it are sent "
                       "only to the provider's own endpoint or the store's")


def _trusted_endpoint(kept: dict[str, str], store: Store | None) -> bool:
    endpoint = kept.get("endpointurl")
    return endpoint is None or (store is not None and endpoint == store.endpoint)


def _local_path(url: str) -> str:
    return urlparse(url).path if url.startswith("file://") else url


@dataclass
class Remotes:
    """What the sanitized config kept: the default remote, and why each dropped remote cannot be used (an
    error only if an output actually needs it)."""

    default: str | None = None
    refused: dict[str, str] = field(default_factory=dict)
    # Azure logins per remote (DVC takes no credentials file for Azure): handed to the fetch step's DVC in
    # memory (Repo(config=...)), never written where the pipeline could read them.
    logins: dict[str, dict[str, str]] = field(default_factory=dict)


def _azure_remote_login(kept: dict[str, str], store: Store | None, creds: Path | None
                        ) -> dict[str, str] | str:
    """An azure remote's login as DVC config keys, or why it cannot have one."""
    from terrasnap.engine.store import _connection_string_parts, azure_login

    if store is not None and _same_location(kept["url"], store):
        try:
            login = azure_login(store.endpoint)
        except UsageError as exc:
            return f"it is the store, and the store's login is not here: {exc}"
        if login.connection_string:
            return {"connection_string": login.connection_string}
        return {k: v for k, v in (("account_name", login.account_name), ("account_key", login.account_key)) if v}
    if creds is None:
        return {}  # anonymous (allow_anonymous_login) or the pod's identity, as DVC itself would
    try:
        text = creds.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        return f"its credentials file cannot be read: {type(exc).__name__}"
    parts = _connection_string_parts(text)
    if "AccountName" in parts or "BlobEndpoint" in parts:
        return {"connection_string": text}
    if not kept.get("account_name"):
        return "its credentials are an account key, and its config names no account_name"
    return {"account_key": text}


def sanitize_config(project: Path, store: Store | None, workdir: Path, origin: Path | None = None) -> Remotes:
    """Rewrite the checkout's `.dvc/config` from what the repository may say about its remotes. `origin` is
    where the project really lives when `project` is a sandbox copy (relative local remotes start there)."""
    from configobj import ConfigObj, ConfigObjError

    dvcdir = project / ".dvc"
    path = dvcdir / "config"
    try:
        src = ConfigObj(str(path), list_values=False) if path.exists() else ConfigObj(list_values=False)
    except ConfigObjError as exc:
        raise UsageError(f"{path.relative_to(project.parent)}: not a readable DVC config: {exc}") from None
    for junk in ("config.local", "tmp", "cache"):  # never trust what a repository committed here
        target = dvcdir / junk
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    creds_dir = os.environ.get(CREDENTIALS_ENV)
    refused: dict[str, str] = {}
    remotes: dict[str, dict[str, str]] = {}
    logins: dict[str, dict[str, str]] = {}
    for section, body in src.items():
        m = re.fullmatch(r"""remote\s+"(.+)\"""", section.strip())
        if not m or not isinstance(body, dict):
            continue
        name, url = m.group(1), str(body.get("url", ""))
        if not REMOTE_NAME.match(name):
            refused[name] = "its name is not a plain identifier"
            continue
        scheme = urlparse(url).scheme
        kept: dict[str, str] = {}
        if scheme in ("", "file"):
            local = _local_path(url)
            base = (origin or project) / ".dvc"
            kept["url"] = local if os.path.isabs(local) else os.path.normpath(str(base / local))
        elif scheme == "gs":
            kept = {k: str(body[k]) for k in REMOTE_KEYS if k in body}
            if _same_location(url, store):
                assert store is not None
                # The store itself: its endpoint and credentials, never what the repository says about them.
                kept = {"url": url}
                if store.endpoint:
                    kept.update(endpointurl=store.endpoint, allow_anonymous_login="true")
                elif os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                    kept["credentialpath"] = os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
            elif creds_dir and (Path(creds_dir) / name / CREDENTIALS_FILE).is_file():
                if not _trusted_endpoint(kept, store):
                    refused[name] = _UNTRUSTED_ENDPOINT
                    continue
                kept["credentialpath"] = str(Path(creds_dir) / name / CREDENTIALS_FILE)
        elif scheme == "s3":
            kept = {k: str(body[k]) for k in S3_REMOTE_KEYS if k in body}
            if _same_location(url, store):
                assert store is not None
                # The store itself: its endpoint and the file its keys are in, never raw keys in a config
                # the pipeline step can read, and never what the repository says about them.
                kept = {"url": url}
                if store.endpoint:
                    kept["endpointurl"] = store.endpoint
                if os.environ.get("AWS_SHARED_CREDENTIALS_FILE"):
                    kept["credentialpath"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"]
            elif creds_dir and (Path(creds_dir) / name / CREDENTIALS_FILE).is_file():
                if not _trusted_endpoint(kept, store):
                    refused[name] = _UNTRUSTED_ENDPOINT
                    continue
                kept["credentialpath"] = str(Path(creds_dir) / name / CREDENTIALS_FILE)
        elif scheme == "azure":
            kept = {k: str(body[k]) for k in AZURE_REMOTE_KEYS if k in body}
            if _same_location(url, store):
                kept = {"url": url}  # the store itself: its own login, never what the repository says
            creds = Path(creds_dir) / name / CREDENTIALS_FILE if creds_dir else None
            login = _azure_remote_login(kept, store, creds if creds and creds.is_file() else None)
            if isinstance(login, str):
                refused[name] = login
                continue
            if login:
                logins[name] = login
        else:
            refused[name] = f"its URL {url!r} is not gs://, s3://, azure:// or a local path"
            continue
        remotes[name] = kept
    lines = ["[core]", "    no_scm = True", "    analytics = false", "    check_update = false"]
    default = str((src.get("core") or {}).get("remote", "") or "") or None
    if default in remotes:
        lines.append(f"    remote = {default}")
    elif default:
        refused.setdefault(default, "it is not defined")
    lines += ["[cache]", f"    dir = {dvc.cache_dir(workdir)}"]
    for name, kept in sorted(remotes.items()):
        lines.append(f"['remote \"{name}\"']")
        lines += [f"    {k} = {v}" for k, v in kept.items()]
    path.write_text("\n".join(lines) + "\n")
    return Remotes(default=default, refused=refused, logins=logins)


def _restore_config(project: Path, config: str) -> None:
    """The config the fetch step wrote, whatever the pipeline left in `.dvc/` (its stages could write there)."""
    if not config:
        return
    dvcdir = project / ".dvc"
    if dvcdir.is_symlink() or not dvcdir.is_dir():
        raise PointerMismatch(f"{project.name}/.dvc: replaced by the pipeline (not a directory any more)")
    for junk in ("config.local", "tmp"):
        target = dvcdir / junk
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    path = dvcdir / "config"
    if path.is_symlink() or path.is_dir():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    path.write_text(config)


def _rel(project: Path, fs_path: str) -> str:
    return Path(fs_path).relative_to(project).as_posix()


def _overlaps(path: str, sub: str) -> bool:
    return not sub or path == sub or path.startswith(sub + "/") or sub.startswith(path + "/")


def _inside(path: str, sub: str) -> bool:
    return not sub or path == sub or path.startswith(sub + "/")


def _refuse_imports(stages: Iterable[Any]) -> None:
    from dvc.dependency import DatasetDependency, DbDependency, RepoDependency
    from dvc.dependency.param import ParamsDependency

    for st in stages:
        if st.cmd is None and st.deps:
            raise UsageError(
                f"{st.dvcfile.relpath}: `dvc import`/`import-url` outputs are not supported as snapshot sources "
                f"(their bytes live outside this repository's remotes); track the data with `dvc add` instead")
        for dep in st.deps:
            if isinstance(dep, (DatasetDependency, DbDependency, RepoDependency)) or (
                    not isinstance(dep, ParamsDependency) and not dep.is_in_repo):
                raise UsageError(f"stage {st.addressing} depends on {dep.def_path!r}, which is outside the "
                                 f"repository; only dependencies inside it can be reproduced")


def _remote_of(out: Any, remotes: Remotes) -> str:
    name = out.remote or remotes.default
    refused = remotes.refused
    if not name:
        raise PointerMismatch(f"{out.stage.dvcfile.relpath} tracks {out.def_path!r} but the repository "
                              f"configures no DVC remote: the data cannot be pulled")
    if name in refused:
        which = "DVC remote" if out.remote else "the default DVC remote"
        raise UsageError(f"{out.stage.dvcfile.relpath}: {which} {name!r} cannot be used: {refused[name]}")
    return str(name)


def _odb(repo: Any, name: str) -> Any:
    try:
        return repo.cloud.get_remote_odb(name, "fetch")
    except Exception as exc:
        raise UsageError(f"DVC remote {name!r}: {exc}") from None


def _probe(repo: Any, name: str) -> None:
    """A remote that cannot be reached is an infrastructure failure (exit 3), not missing data."""
    odb = _odb(repo, name)
    try:
        if type(odb.fs).__name__ == "LocalFileSystem":
            ok = os.path.isdir(os.path.dirname(os.path.dirname(odb.path)))  # <remote>/files/md5
        else:
            ok = bool(odb.fs.fs.exists(odb.path.split("/", 1)[0]))  # the bucket
    except Exception as exc:
        raise SourceUnavailable(f"DVC remote {name!r} ({odb.fs.unstrip_protocol(odb.path)}) is unreachable: "
                                f"{exc}") from None
    if not ok:
        raise SourceUnavailable(f"DVC remote {name!r} ({odb.fs.unstrip_protocol(odb.path)}) does not exist "
                                f"or is not mounted")


def _expected(project: Path, cache: Path, outs: Iterable[Any]) -> dict[str, tuple[str, str]]:
    """{file path in the project: (md5, pointer)} for every file of these outputs (dirs expanded)."""
    files: dict[str, tuple[str, str]] = {}
    for out in outs:
        md5 = out.hash_info.value if out.hash_info else None
        if not md5:
            continue
        path, pointer = _rel(project, out.fs_path), out.stage.dvcfile.relpath
        if md5.endswith(".dir"):
            for rel, m in read_listing(cache, md5, path).items():
                files[f"{path}/{rel}"] = (m, pointer)
        else:
            files[path] = (md5, pointer)
    return files


def read_listing(cache: Path, md5: str, where: str) -> dict[str, str]:
    """A `.dir` object from a cache another process could write: only if its bytes have its md5."""
    data = dvc.cache_object(cache, md5).read_bytes()
    got = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if got + ".dir" != md5:
        raise PointerMismatch(f"{where}: the listing object {md5} in the workspace's DVC cache is corrupted "
                              f"(its md5 is {got})")
    return dvc.parse_dir_object(data)


def _missing(cache: Path, project: Path, outs: Iterable[Any]) -> list[tuple[str, str, str, Any]]:
    """(path, pointer, md5, out) for every object of these outputs that is not in the cache."""
    missing = []
    for out in outs:
        md5 = out.hash_info.value if out.hash_info else None
        path, pointer = _rel(project, out.fs_path), out.stage.dvcfile.relpath
        if not md5:
            missing.append((path, pointer, "", out))
        elif not dvc.cache_object(cache, md5).is_file():
            missing.append((path + ("/" if md5.endswith(".dir") else ""), pointer, md5, out))
        elif md5.endswith(".dir"):
            for rel, m in dvc.read_dir_object(cache, md5).items():
                if not dvc.cache_object(cache, m).is_file():
                    missing.append((f"{path}/{rel}", pointer, m, out))
    return missing


def _check_dir_objects(cache: Path, project: Path, outs: Iterable[Any]) -> None:
    for out in outs:
        md5 = out.hash_info.value if out.hash_info else ""
        if md5.endswith(".dir"):
            got = hashlib.md5(dvc.cache_object(cache, md5).read_bytes(), usedforsecurity=False).hexdigest()
            if got + ".dir" != md5:
                raise PointerMismatch(f"{_rel(project, out.fs_path)}: the remote's listing object {md5} is "
                                      f"corrupted (its md5 is {got}); {out.stage.dvcfile.relpath} cannot be trusted")


def prepare(root: Path, top: Path, workdir: Path, store: Store | None,
            progress: Callable[[str], None] | None = None, origin: Path | None = None) -> DvcSource | None:
    """Fetch, reproduce and check the DVC project `root` belongs to (None if it is not one), in this
    process. `origin`: the directory `top` is a sandbox copy of, if it is one. The Job runs the same three
    steps in three containers (`fetch`, `run_pipeline`, `check`)."""
    fetched = fetch(root, top, workdir, store, progress, origin)
    if fetched is None:
        return None
    stages = run_pipeline(fetched, workdir, progress) if fetched.plan else {}
    return check(fetched, stages, workdir)


@dataclass
class Fetched:
    """What the fetch step learnt about the project, before any of its code ran (the pipeline step cannot
    change it: in a pod it is kept where the pipeline container cannot write)."""

    project: Path
    sub: str
    fetched: int = 0
    plan: list[str] = field(default_factory=list)  # the stages the path needs, by address
    identity: dict[str, Any] = field(default_factory=dict)  # their dvc.yaml files (in the snapshotID)
    config: str = ""  # the sanitized .dvc/config: the check step puts it back before opening the project

    def to_dict(self) -> dict[str, Any]:
        return {"project": str(self.project), "sub": self.sub, "fetched": self.fetched, "plan": self.plan,
                "identity": self.identity, "config": self.config}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Fetched:
        return cls(Path(doc["project"]), str(doc["sub"]), int(doc.get("fetched", 0)),
                   [str(s) for s in doc.get("plan") or []], dict(doc.get("identity") or {}),
                   str(doc.get("config") or ""))


def fetch(root: Path, top: Path, workdir: Path, store: Store | None,
          progress: Callable[[str], None] | None = None, origin: Path | None = None) -> Fetched | None:
    """Step 1 (the `fetch` container, the source's credentials only): sanitize the config, fetch what DVC
    tracks under the path, check out the `dvc add`-ed data. Runs none of the repository's code."""
    say = progress or (lambda _msg: None)
    if not is_dvc_source(root, top):
        return None
    project = find_project(root, top)
    if project is None:
        # A dvc.yaml (or pointers) without `dvc init`: the sandbox inits a no-scm project, as `dvc init` would.
        from dvc.repo import Repo

        with dvc._dvc_call(root, DVCError, "init", scratch=workdir, scrub=True):
            Repo.init(str(root), no_scm=True)
        project = root
    sub = root.relative_to(project).as_posix()
    sub = "" if sub == "." else sub
    remotes = sanitize_config(project, store, workdir, origin / project.relative_to(top) if origin else None)
    cache = dvc.cache_dir(workdir)
    result = Fetched(project=project, sub=sub, config=(project / ".dvc" / "config").read_text())
    with _source_repo(project, workdir, "fetch (the source's DVC data)", {"remote": remotes.logins}) as repo:
        scope = _scope(repo, project, sub)
        result.fetched = _fetch(repo, scope, cache, remotes, say)
        result.plan = sorted(s.addressing for s in scope.plan)
        for dvcfile in sorted({s.dvcfile.relpath for s in scope.plan}):
            result.identity[dvcfile] = yaml.safe_load((project / dvcfile).read_text())
    return result


def run_pipeline(fetched: Fetched, workdir: Path, progress: Callable[[str], None] | None = None
                 ) -> dict[str, str]:
    """Step 2 (the `pipeline` container: no credentials, no token): `dvc repro` of the stages the path
    needs. Returns stage -> ran | up-to-date (informational: the check step trusts none of its files)."""
    say = progress or (lambda _msg: None)
    project = fetched.project
    with _source_repo(project, workdir, "repro (the source's pipeline)") as repo:
        scope = _scope(repo, project, fetched.sub)
        say(f"dvc repro (the source's pipeline: {len(scope.plan)} stage(s))")
        ran = _reproduce(repo, [s.addressing for s in scope.pipeline])
        return {s.addressing: RAN if s.addressing in ran else UP_TO_DATE
                for s in sorted(scope.plan, key=lambda s: s.addressing)}


def check(fetched: Fetched, stages: dict[str, str], workdir: Path, hashes: HashCache | None = None
          ) -> DvcSource:
    """Step 3 (the `snapshot` container): every DVC-tracked file's md5 against its pointer, the objects
    and side files to publish. `hashes`: the hash cache to use (the snapshot's own in a pod, never one the
    pipeline could have written); `.dir` listings are read only after their md5 was checked."""
    project, sub = fetched.project, fetched.sub
    cache = dvc.cache_dir(workdir)
    # Only stage names the dvc.yaml really has, with one of the two states: the rest is the pipeline talking.
    stages = {k: v for k, v in stages.items() if k in fetched.plan and v in (RAN, UP_TO_DATE)}
    result = DvcSource(project=project, stages=stages, identity=dict(fetched.identity), fetched=fetched.fetched)
    _restore_config(project, fetched.config)
    # A fresh look after repro: dvc.lock now names what the stages that ran produced.
    with _source_repo(project, workdir, "status (the source's pointers)") as repo:
        scope = _scope(repo, project, sub)
        planned = set(fetched.plan)
        chosen = [s for s in repo.index.stages if s.addressing in planned
                  or s.dvcfile.relpath in scope.source_files
                  or any(_overlaps(_rel(project, o.fs_path), sub) for o in s.outs)]
        outs = [o for s in chosen for o in s.outs if o.hash_info and o.hash_info.value]
        _check_bytes(project, cache, workdir, outs, hashes)
        result.objects = _objects_inside(project, cache, sub, outs)
        result.side_files = _side_files(project, chosen)
    return result


@dataclass
class _Scope:
    """The part of the project the snapshot's path needs."""

    project: Path
    pipeline: list[Any]  # stages with an output at or under the path
    plan: list[Any]  # those and every stage upstream of them
    sources: list[Any]  # `dvc add`-ed data the path holds or the plan depends on

    @property
    def required(self) -> list[Any]:
        """Outputs that must come from a remote: nothing can make them again."""
        return [o for s in self.sources for o in s.outs if o.use_cache]

    @property
    def optional(self) -> list[Any]:
        """Stage outputs the lock names: checked out if the remote has them, else the stage runs."""
        return [o for s in self.plan for o in s.outs if o.use_cache and o.hash_info]

    @property
    def source_files(self) -> set[str]:
        return {s.dvcfile.relpath for s in self.sources}


def _scope(repo: Any, project: Path, sub: str) -> _Scope:
    import networkx as nx
    from dvc.repo.reproduce import get_active_graph

    graph = get_active_graph(repo.index.graph)
    stages = list(repo.index.stages)
    pipeline = [s for s in stages if s.cmd and any(_overlaps(_rel(project, o.fs_path), sub) for o in s.outs)]
    upstream: set[Any] = set(pipeline)
    for st in pipeline:
        upstream |= set(nx.descendants(graph, st))  # DVC's graph points from a stage to what it depends on
    sources = [s for s in stages if s.cmd is None and (
        s in upstream or any(_overlaps(_rel(project, o.fs_path), sub) for o in s.outs))]
    _refuse_imports(list(upstream) + sources)
    return _Scope(project, pipeline, [s for s in upstream if s.cmd], sources)


def _fetch(repo: Any, scope: _Scope, cache: Path, remotes: Remotes, say: Callable[[str], None]) -> int:
    """Fetch into the cache and check out what the scope needs; returns how many objects were downloaded."""
    project, required = scope.project, scope.required
    names = sorted({_remote_of(o, remotes) for o in required})
    for name in names:
        _probe(repo, name)
    fetched = 0
    if required or scope.optional:
        say(f"dvc fetch from the source's remote(s) {', '.join(names) or '(default)'}")
        targets = sorted({_rel(project, o.fs_path) for o in required + scope.optional})
        try:
            fetched = int(repo.fetch(targets=targets) or 0)
        except Exception as exc:  # a DownloadError: what is missing is sorted out below
            if type(exc).__name__ != "DownloadError":
                raise SourceUnavailable(f"dvc fetch from the source's remotes failed: {exc}") from None
    missing = _missing(cache, project, required)
    if missing:
        _raise_missing(repo, missing, remotes)
    _check_dir_objects(cache, project, required)
    if required:
        repo.checkout(targets=sorted({_rel(project, o.fs_path) for o in required}), force=True)
    return fetched


def _objects_inside(project: Path, cache: Path, sub: str, outs: list[Any]) -> list[str]:
    """The objects of every cached output wholly inside the path (`.dir` listings included): with them in
    the store, `dvc pull` with the repository's own pointers works against the store."""
    objects: set[str] = set()
    for out in outs:
        if out.use_cache and _inside(_rel(project, out.fs_path), sub):
            md5 = out.hash_info.value
            objects.add(md5)
            if md5.endswith(".dir"):
                objects.update(read_listing(cache, md5, _rel(project, out.fs_path)).values())
    return sorted(objects)


def _side_files(project: Path, stages: list[Any]) -> dict[str, bytes]:
    """The stages' pointer files, dvc.yaml and dvc.lock, and params files, as published under `source/`."""
    from dvc.dependency.param import ParamsDependency

    files = {s.dvcfile.relpath for s in stages}
    files |= {(Path(s.dvcfile.relpath).parent / "dvc.lock").as_posix() for s in stages if s.cmd}
    files |= {_rel(project, d.fs_path) for s in stages for d in s.deps if isinstance(d, ParamsDependency)}
    return {f"source/{rel}": (project / rel).read_bytes() for rel in sorted(files) if (project / rel).is_file()}


@contextmanager
def _source_repo(project: Path, workdir: Path, what: str, config: dict[str, Any] | None = None) -> Iterator[Any]:
    """The source's DVC project, opened with a scrubbed environment and DVC's side files in `workdir`;
    `config`: settings held in memory only (logins)."""
    from dvc.repo import Repo

    with (dvc._dvc_call(project, DVCError, what, scratch=workdir, scrub=True),
          Repo(str(project), config=config) as repo):
        yield repo


def _raise_missing(repo: Any, missing: list[tuple[str, str, str, Any]], remotes: Remotes) -> None:
    never: list[str] = []
    for path, pointer, md5, out in missing:
        if md5:
            name = _remote_of(out, remotes)
            try:
                there = bool(_odb(repo, name).exists(md5))
            except Exception as exc:
                raise SourceUnavailable(f"DVC remote {name!r} is unreachable: {exc}") from None
            if there:
                raise SourceUnavailable(f"{path}: object {md5} is on DVC remote {name!r} but could not be "
                                        f"downloaded (retry)")
        never.append(f"{path} ({pointer})")
    raise PointerMismatch(f"{len(never)} DVC-tracked path(s) were never pushed to their remote (`dvc push` "
                          f"missing after the commit?): {', '.join(never[:10])}"
                          + (f" (+{len(never) - 10} more)" if len(never) > 10 else ""))


def _reproduce(repo: Any, targets: list[str]) -> set[str]:
    from dvc.stage.exceptions import StageCmdFailedError

    try:
        ran = repo.reproduce(targets=targets, pull=True, run_cache=False)
    except Exception as exc:
        cur: BaseException | None = exc
        while cur is not None:
            if isinstance(cur, StageCmdFailedError):
                raise ValidationFailed(f"the repository's own pipeline failed: {cur}") from None
            if isinstance(cur, TerrasnapError):
                raise cur from None
            cur = cur.__cause__ or cur.__context__
        raise
    return {s.addressing for s in ran or []}


def _check_bytes(project: Path, cache: Path, workdir: Path, outs: list[Any], hc: HashCache | None = None) -> None:
    """Every tracked file's md5 against its pointer; the hashes are cached for the snapshot's own hashing."""
    expected = _expected(project, cache, outs)
    absent = [f"{p} ({ptr})" for p, (_, ptr) in sorted(expected.items()) if not (project / p).is_file()]
    if absent:
        raise PointerMismatch(f"DVC-tracked file(s) missing after checkout: {', '.join(absent[:10])}")
    paths = sorted(expected)
    hc = hc or HashCache.of_workdir(workdir)
    hashes = hash_many([project / p for p in paths], hc)
    hc.save()
    bad = [f"{p}: md5 {h.md5}, but {expected[p][1]} says {expected[p][0]}"
           for p, h in zip(paths, hashes, strict=True) if h.md5 != expected[p][0]]
    if bad:
        raise PointerMismatch(f"DVC pointers and bytes disagree (a corrupted remote object, or a pointer "
                              f"committed without `dvc push`?): {'; '.join(bad[:5])}"
                              + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""))
