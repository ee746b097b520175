"""DVC, driven through its own command line: a project made on the fly, `dvc add`, `dvc repro`, `dvc push`.

The command line, not DVC's Python internals, because that is what users run by hand and what the
store must stay compatible with; the `.dir` objects are read from DVC's cache to list what was tracked.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from terrasnap.engine.errors import DVCError, StoreUnreachable, TerrasnapError
from terrasnap.engine.store import Store

REMOTE = "store"
# Credentials that must never reach a source repository's DVC calls or stage commands.
SCRUBBED_PREFIXES = ("GOOGLE_APPLICATION_CREDENTIALS", "TERRASNAP_", "AWS_", "AZURE_", "CLOUDSDK_", "GCE_",
                     "STORAGE_EMULATOR_HOST", "DVC_")


def dvc_env(scratch: Path, scrub: bool = False) -> dict[str, str]:
    """The environment of a DVC call. `scratch` holds DVC's side files (site cache, XDG dirs): never the
    project or the source checkout, whose files are the snapshot's data. `scrub` drops every credential
    (a source repository's own DVC calls and stages get only what its remotes were given explicitly)."""
    env = dict(os.environ)
    if scrub:
        env = {k: v for k, v in env.items() if not k.startswith(SCRUBBED_PREFIXES)}
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stage's __pycache__ would be data with a timestamp in it
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # stage commands call `terrasnap` by name
    env.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    env["DVC_NO_ANALYTICS"] = "1"
    # Pods have a read-only root filesystem: keep every DVC side file inside the workdir.
    env["DVC_SITE_CACHE_DIR"] = str(scratch / ".dvc-site")
    env.setdefault("XDG_CACHE_HOME", str(scratch / ".cache"))
    env["XDG_CONFIG_HOME"] = str(scratch / ".config")  # no user-level DVC config leaks in
    return env


def cache_dir(workdir: Path) -> Path:
    """DVC's cache for one terrasnap workdir, shared by the source's project and the private one, so an
    object fetched from the source's remote is never copied or uploaded twice."""
    return workdir / ".dvc-cache"


def init_project(workdir: Path, store: Store, cache: Path) -> None:
    """A DVC project (no git) whose default remote is the store, configured only from non-secret settings.

    The config is written directly (it is DVC's documented INI format): one `dvc` process per setting
    would cost a second each.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / ".dvc").is_dir():
        from dvc.repo import Repo

        with _dvc_call(workdir, DVCError, "init", scratch=workdir.parent):
            Repo.init(str(workdir), no_scm=True)
    remote_url = store.root if store.scheme == "file" else store.url
    lines = ["[core]", "    no_scm = True", "    analytics = false", f"    remote = {REMOTE}",
             "[cache]", f"    dir = {cache}",
             f"['remote \"{REMOTE}\"']", f"    url = {remote_url}"]
    local: list[str] = []
    if store.scheme == "gs":
        if store.endpoint:
            lines += [f"    endpointurl = {store.endpoint}", "    allow_anonymous_login = true"]
        creds = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if creds and not store.endpoint:
            # The path to the mounted Secret goes into the local config, never its contents.
            local = [f"['remote \"{REMOTE}\"']", f"    credentialpath = {creds}"]
    if store.scheme == "s3":
        # Keys, session tokens and web identity come from botocore's chain (AWS_* variables, IRSA): never
        # written into the config. Single-part uploads up to 5 GiB keep ETag == md5 (verify reads less).
        if store.endpoint:
            lines.append(f"    endpointurl = {store.endpoint}")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            lines.append(f"    region = {region}")
    # azure: the URL alone; the login (connection string, account + key, or account for workload identity)
    # reaches `dvc push` as AZURE_STORAGE_* variables (Store.dvc_env), never the config.
    (workdir / ".dvc" / "config").write_text("\n".join(lines) + "\n")
    if local:
        (workdir / ".dvc" / "config.local").write_text("\n".join(local) + "\n")


def _no_progress_threads() -> None:
    """DVC's progress bars (tqdm) start a monitor thread that outlives the call; with it alive, the built-in
    stage's process pool (run in this process) must pay forkserver's start-up instead of a fork."""
    import tqdm

    tqdm.tqdm.monitor_interval = 0


@contextmanager
def _dvc_call(workdir: Path, error: type[Exception], what: str, *, scratch: Path,
              scrub: bool = False, extra_env: Mapping[str, str] | None = None) -> Iterator[None]:
    """DVC's Python API in this process (a `dvc` process costs a second of imports per call), with the
    environment a `dvc` command would get and DVC's own log messages folded into our error."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    errors: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                errors.append(record.getMessage())

    _no_progress_threads()
    handler = _Collect()
    dvc_logger = logging.getLogger("dvc")
    dvc_logger.addHandler(handler)
    env = {**dvc_env(scratch, scrub), **(extra_env or {})}
    os.environ.clear()
    os.environ.update(env)
    os.chdir(workdir)  # stage commands and relative targets resolve against the project
    # DVC talks to stdout ("Running stage ..."); our stdout carries only the result document.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    except TerrasnapError:
        raise  # already says what and where
    except Exception as exc:
        causes: list[str] = []
        cur: BaseException | None = exc
        while cur is not None and len(causes) < 4:
            causes.append(str(cur))
            cur = cur.__cause__ or cur.__context__
        detail = "; ".join(dict.fromkeys([c for c in causes + errors[-3:] if c]))
        raise error(f"dvc {what} failed in {workdir}: {detail or type(exc).__name__}") from exc
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
        dvc_logger.removeHandler(handler)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


@contextmanager
def _in_project(workdir: Path, error: type[Exception], what: str,
                extra_env: Mapping[str, str] | None = None) -> Iterator[Any]:
    from dvc.repo import Repo

    with _dvc_call(workdir, error, what, scratch=workdir.parent, extra_env=extra_env), Repo(str(workdir)) as repo:
        yield repo


def _seed_state(repo: Any, md5s: Mapping[Path, str]) -> None:
    """Give DVC's state db the md5s the engine has just read, so DVC trusts them instead of reading every
    file again. It is DVC's own record (keyed on inode, mtime and size, like its own entries), so a file
    changed since is simply hashed again; the store's verify checks every object's bytes against its name."""
    try:
        from dvc_data.hashfile.hash_info import HashInfo

        repo.state.save_many(((os.path.abspath(p), HashInfo("md5", md5), None) for p, md5 in md5s.items()),
                             repo.fs)
    except (ImportError, AttributeError, TypeError) as exc:  # another dvc-data: DVC then hashes them itself
        logging.getLogger(__name__).debug("DVC's state db not seeded: %s", exc)


def add(workdir: Path, target: str, md5s: Mapping[Path, str] | None = None) -> None:
    """`dvc add target`; `md5s`: the files' md5s, known already (DVC then copies them into its cache without
    hashing them again)."""
    # relink=False: the workspace keeps its hard links to the caller's files (no copy back, no chmod)
    with _in_project(workdir, DVCError, "add") as repo:
        if md5s:
            _seed_state(repo, md5s)
        repo.add(target, relink=False)


def repro_in_process(workdir: Path, stage_name: str, run: Callable[[], None],
                     hash_outputs: Callable[[], Mapping[Path, str]]) -> bool:
    """`dvc repro <stage_name>` for a stage whose command is the engine's own code, run in this process
    (a `terrasnap stage` process costs a second or two of imports): DVC's own Stage says whether it changed,
    removes its outputs, and saves, commits and dumps it afterwards, so dvc.lock is what `dvc repro` writes
    and a later `dvc repro`/`dvc status` by hand says it is up to date. `run` raises if the stage fails
    (nothing is then committed, as when a command fails); `hash_outputs` gives the outputs' md5s (read once
    by the engine, handed to DVC's state db). Returns False when the stage was up to date.
    Never for a repository's own stages: that code runs in its own process and container (dvcsource.py)."""
    from dvc.repo import lock_repo

    with _in_project(workdir, DVCError, "repro") as repo, lock_repo(repo):
        (stage,) = repo.stage.collect(stage_name)
        if not stage.changed():
            return False
        stage.remove_outs(ignore_remove=False, force=False)
        run()
        _seed_state(repo, hash_outputs())
        stage.save()  # the deps' and outs' hashes (from the state db), and the run cache, as repro does
        stage.commit()
        stage.dump(update_pipeline=False)
        return True


def repro(workdir: Path, what: str = "repro") -> None:
    with _in_project(workdir, DVCError, what) as repo:
        repo.reproduce()


def push(workdir: Path, jobs: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """Returns how many objects were uploaded (those the store already has are skipped). `env`: the store's
    login for this call only (Store.dvc_env)."""
    with _in_project(workdir, StoreUnreachable, "push", env) as repo:
        return int(repo.push(remote=REMOTE, jobs=jobs) or 0)


@dataclass(frozen=True)
class TrackedDir:
    path: str  # the tracked output, e.g. "raw" or "normalized"
    md5: str  # "<hex>.dir"
    size: int
    nfiles: int
    entries: dict[str, str]  # relpath -> md5


def cache_object(cache: Path, md5: str) -> Path:
    """Where DVC's local cache keeps an object (the same layout as the remote)."""
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def read_dir_object(cache: Path, md5: str) -> dict[str, str]:
    return parse_dir_object(cache_object(cache, md5).read_bytes())


def parse_dir_object(data: bytes) -> dict[str, str]:
    return {item["relpath"]: item["md5"] for item in json.loads(data)}


def _tracked(workdir: Path, out: dict[str, Any]) -> TrackedDir:
    md5 = out["md5"]
    entries = read_dir_object(cache_dir(workdir.parent), md5) if md5.endswith(".dir") else {}
    return TrackedDir(out["path"], md5, int(out.get("size", 0)), int(out.get("nfiles", 1)), entries)


def tracked_outputs(workdir: Path) -> list[TrackedDir]:
    """Every output DVC tracks in the project: `*.dvc` files and the outs in `dvc.lock`."""
    outs: list[TrackedDir] = []
    for dvcfile in sorted(p for p in workdir.glob("*.dvc") if p.is_file()):
        for out in yaml.safe_load(dvcfile.read_text()).get("outs", []):
            outs.append(_tracked(workdir, out))
    lock = workdir / "dvc.lock"
    if lock.exists():
        uncached = _uncached_outputs(workdir)
        for stage in (yaml.safe_load(lock.read_text()).get("stages") or {}).values():
            for out in stage.get("outs", []):
                # `cache: false` outputs (the report metric) are in the lock but never pushed
                if out.get("md5") and out["path"] not in uncached:
                    outs.append(_tracked(workdir, out))
    return outs


def _uncached_outputs(workdir: Path) -> set[str]:
    spec = yaml.safe_load((workdir / "dvc.yaml").read_text()) or {}
    paths: set[str] = set()
    for stage in (spec.get("stages") or {}).values():
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key, []) or []:
                if isinstance(item, dict):
                    for path, opts in item.items():
                        if isinstance(opts, dict) and opts.get("cache") is False:
                            paths.add(path)
    return paths


def referenced_objects(outs: list[TrackedDir]) -> list[str]:
    """Every remote object a pull of these outputs needs, `.dir` objects included (sorted, unique)."""
    objs: set[str] = set()
    for out in outs:
        objs.add(out.md5)
        objs.update(out.entries.values())
    return sorted(objs)
