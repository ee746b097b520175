"""Hostile sources, names and manifests (issue 10): git revisions that are options, dangerous transports,
submodules and LFS pointers, symlinked subdirectories, escaping bucket object names, non-UTF-8 file names,
escaping --name/--namespace, hostile manifest rows, and secrets in URLs.

Each attack runs against the real engine — real git repositories, real file:// and fake-gcs-server stores —
and asserts that it had no effect (no command ran, nothing written outside where it belongs, no marker in
any output) and that the message names the file or argument and the reason.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from terrasnap.cli import main
from terrasnap.engine import redact, source
from terrasnap.engine.errors import GitError, UnsafeInput
from terrasnap.engine.manifest import FileRow, manifest_bytes
from terrasnap.engine.store import Store
from tests.engine.test_snapshot import _git, make_repo, snap, store_is_empty
from tests.support import sampledata as sd

UPLOAD_PACK_ATTACK = "--upload-pack=touch${IFS}$TS_MARK;git-upload-pack"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _commit_all(repo: Path, msg: str = "c") -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", msg)
    return _git(repo, "rev-parse", "HEAD")


# -- git: revisions and transports ------------------------------------------------------------------------

def test_a_revision_that_is_a_git_option_runs_nothing(tmp_path: Path, file_store: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _ = make_repo(tmp_path)
    mark = tmp_path / "X"
    monkeypatch.setenv("TS_MARK", str(mark))
    # The payload is live: plain git, given it as a fetch argument, runs the command.
    probe = tmp_path / "probe"
    _git(tmp_path, "init", "-q", str(probe))
    subprocess.run(["git", "fetch", "-q", f"file://{repo}", UPLOAD_PACK_ATTACK], cwd=probe, capture_output=True)
    assert mark.exists()
    mark.unlink()

    code, doc, _err = snap(f"git+file://{repo}@{UPLOAD_PACK_ATTACK}", file_store, "--workdir",
                          str(tmp_path / "work"), tmp=tmp_path)
    assert code == 2 and doc["error"]["reason"] == "UsageError", doc
    msg = doc["error"]["message"]
    assert "--upload-pack" in msg and "starts with '-'" in msg
    assert not mark.exists() and not list(tmp_path.rglob("X"))
    assert store_is_empty(file_store)
    # The second layer: past the revision check, the engine's git calls end options before any revision.
    with pytest.raises(GitError, match="couldn't find remote ref --upload-pack"):
        source._git(["fetch", "-q", "--depth", "1", "--end-of-options", f"file://{repo}", UPLOAD_PACK_ATTACK],
                    cwd=probe)
    assert not mark.exists()


@pytest.mark.parametrize("rev, why", [
    ("main:planted", "is not a branch, tag or commit name"),  # a refspec would write a ref
    ("-c", "starts with '-'"),
])
def test_revisions_that_are_refspecs_or_flags(rev: str, why: str, tmp_path: Path, file_store: str) -> None:
    repo, _ = make_repo(tmp_path)
    code, doc, _ = snap(f"git+file://{repo}@{rev}", file_store, tmp=tmp_path)
    assert code == 2 and rev in doc["error"]["message"] and why in doc["error"]["message"], doc
    assert store_is_empty(file_store)


def test_a_git_tree_name_that_is_not_utf8(tmp_path: Path, file_store: str) -> None:
    repo, _ = make_repo(tmp_path)
    with open(os.path.join(os.fsencode(repo / "data"), b"caf\xe9.geojson"), "wb") as fh:
        fh.write(b"{}")
    _commit_all(repo, "latin-1 name")
    code, doc, err = snap(f"git+file://{repo}@main", file_store, tmp=tmp_path)
    assert code == 1 and doc["error"]["reason"] == "UnsafeInput", (doc, err)
    assert "'data/caf\\xe9.geojson' is not valid UTF-8" in doc["error"]["message"]
    assert "Traceback" not in err and store_is_empty(file_store)


def test_the_engine_git_never_speaks_ext_or_fd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mark = tmp_path / "ext-ran"
    monkeypatch.setenv("TS_MARK", str(mark))
    # ext:: is live when allowed...
    subprocess.run(["git", "-c", "protocol.ext.allow=always", "ls-remote", "ext::sh -c touch% $TS_MARK"],
                   cwd=tmp_path, capture_output=True)
    assert mark.exists()
    mark.unlink()
    # ... and the engine's git refuses it even where a user's global config allows every protocol.
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'protocol.allow'='always'")
    with pytest.raises(GitError) as info:
        source._git(["ls-remote", "ext::sh -c touch% $TS_MARK"], cwd=tmp_path)
    assert "ext" in info.value.message
    assert not mark.exists()
    # and the command line refuses such a URL outright (exit 2, naming the allowed schemes)
    code, doc, _ = snap("git+ext::sh -c touch% $TS_MARK", f"file://{tmp_path / 'store'}", tmp=tmp_path)
    assert code == 2 and "https://" in doc["error"]["message"] and not mark.exists()


# -- git: what a checkout holds ---------------------------------------------------------------------------

def test_a_submodule_is_reported_never_silently_dropped(tmp_path: Path, file_store: str) -> None:
    inner = tmp_path / "inner"
    sd.write_geojson(inner / "more.geojson", sd.buildings(3))
    _git(inner, "init", "-q", "-b", "main")
    _commit_all(inner)
    repo, _ = make_repo(tmp_path)
    _git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", f"file://{inner}", "data/vendor")
    _commit_all(repo, "submodule")
    code, doc, _ = snap(f"git+file://{repo}@main#subdirectory=data", file_store, tmp=tmp_path)
    assert code == 1 and doc["error"]["reason"] == "UnsafeInput", doc
    assert "'data/vendor' is a git submodule" in doc["error"]["message"]
    assert store_is_empty(file_store)


def test_a_git_lfs_pointer_is_reported_not_snapshotted_as_data(tmp_path: Path, file_store: str) -> None:
    repo, _ = make_repo(tmp_path)
    (repo / "data" / "ortho.tif").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
    _commit_all(repo, "lfs")
    code, doc, _ = snap(f"git+file://{repo}@main", file_store, tmp=tmp_path)
    assert code == 1 and doc["error"]["reason"] == "UnsafeInput", doc
    assert "'data/ortho.tif' is a git-lfs pointer" in doc["error"]["message"]
    assert store_is_empty(file_store)


def test_a_subdirectory_that_is_a_symlink_out_of_the_checkout(tmp_path: Path, file_store: str) -> None:
    outside = tmp_path / "outside"
    sd.write_geojson(outside / "private.geojson", sd.buildings(2, seed=7))
    repo, _ = make_repo(tmp_path)
    os.symlink(outside, repo / "link")
    _commit_all(repo, "symlink")
    code, doc, _ = snap(f"git+file://{repo}@main#subdirectory=link", file_store, tmp=tmp_path)
    assert code == 1 and doc["error"]["reason"] == "UnsafeInput", doc
    assert "subdirectory 'link' leads outside the checkout" in doc["error"]["message"]
    assert store_is_empty(file_store)


# -- paths: bucket listings, local names, CLI names -------------------------------------------------------

def _upload_raw_name(endpoint: str, bucket: str, name: str, data: bytes) -> None:
    """An object whose name is exactly `name` (a client library would normalize it; an attacker need not)."""
    q = urllib.parse.urlencode({"uploadType": "media", "name": name})
    req = urllib.request.Request(f"{endpoint}/upload/storage/v1/b/{bucket}/o?{q}", data=data, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req, timeout=10).read()


class _HostileListing(Store):
    """A real file:// store whose listing also returns names GCS and S3 allow but a local filesystem cannot
    hold (fake-gcs-server normalizes `..` and `//` away on upload, so it cannot serve them)."""

    extra: list[str] = []

    def list_prefix(self, rel_prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from super().list_prefix(rel_prefix)
        for name in self.extra:
            yield name, {"size": 3}


@pytest.mark.parametrize("name, why", [
    ("p/../../../escaped.geojson", "contains '..'"),
    ("a//b.geojson", "has an empty segment"),
    ("/etc/escaped.geojson", "is absolute"),
])
def test_bucket_object_names_that_escape_or_have_empty_segments(name: str, why: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = tmp_path / "bucket"
    sd.write_geojson(bucket / "ok.geojson", sd.buildings(2))
    monkeypatch.setattr(_HostileListing, "extra", [name])
    monkeypatch.setattr(Store, "from_url", classmethod(lambda cls, url, endpoint=None: _HostileListing(url)))
    work = tmp_path / "deep" / "work"
    spec = source.SourceSpec("bucket", f"gs://b/{bucket.name}/", f"file://{bucket}")
    with pytest.raises(UnsafeInput) as info:
        source.materialize(spec, work)
    assert repr(name) in info.value.message and why in info.value.message
    assert not list(tmp_path.rglob("escaped.geojson")) and not _files(work)  # checked before any fetch


def test_bucket_names_a_client_normalizes_never_reach_the_filesystem(tmp_path: Path, gcs: Any,
                                                                    gcs_bucket: str) -> None:
    """The same attack against a real fake-gcs-server: whatever the server keeps, nothing leaves the folder."""
    good = json.dumps({"type": "FeatureCollection", "features": sd.buildings(2)}).encode()
    _upload_raw_name(gcs.endpoint, gcs_bucket, "raw/ok.geojson", good)
    _upload_raw_name(gcs.endpoint, gcs_bucket, "raw/p/../../../escaped.geojson", good)
    work = tmp_path / "deep" / "work"
    code, doc, _ = snap(f"gs://{gcs_bucket}/raw/", f"gs://{gcs_bucket}/dvc", "--workdir", str(work),
                        endpoint=gcs.endpoint, tmp=tmp_path)
    assert code in (0, 1), doc
    assert not [p for p in tmp_path.rglob("escaped.geojson") if not p.is_relative_to(work / "bucket")]


def test_bucket_object_name_that_is_not_utf8(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    sd.write_geojson(bucket / "ok.geojson", sd.buildings(2))
    with open(os.path.join(os.fsencode(bucket), b"bad\xfe.geojson"), "wb") as fh:
        fh.write(b"{}")
    spec = source.SourceSpec("bucket", "gs://b/raw/", f"file://{bucket}")
    with pytest.raises(UnsafeInput) as info:
        source.materialize(spec, tmp_path / "work")
    assert "'bad\\xfe.geojson' is not valid UTF-8" in info.value.message
    assert not _files(tmp_path / "work")


def test_a_file_name_that_is_not_utf8_is_a_clear_exit_1(tmp_path: Path, file_store: str) -> None:
    src = tmp_path / "src"
    sd.write_geojson(src / "ok.geojson", sd.buildings(2))
    with open(os.path.join(os.fsencode(src), b"bad\xff.geojson"), "wb") as fh:
        fh.write(b"{}")
    code, doc, err = snap(src, file_store, tmp=tmp_path)
    assert code == 1 and doc["error"]["reason"] == "UnsafeInput", (doc, err)
    assert "'bad\\xff.geojson' is not valid UTF-8" in doc["error"]["message"]
    assert "UnicodeEncodeError" not in err and store_is_empty(file_store)
    res = CliRunner().invoke(main, ["validate", str(src)])  # the CI gate says the same
    assert res.exit_code == 1 and "bad\\xff.geojson" in res.output


@pytest.mark.parametrize("flags, flag", [
    (["--name", "../../../x"], "--name"),
    (["--name", "a/b"], "--name"),
    (["--namespace", ".."], "--namespace"),
    (["--namespace", "a.b"], "--namespace"),  # a subdomain, not a label
])
def test_name_and_namespace_follow_kubernetes_rules(flags: list[str], flag: str, tmp_path: Path) -> None:
    src = sd.make_demo(tmp_path / "src")
    store = tmp_path / "a" / "b" / "c" / "store"
    code, doc, _ = snap(src, f"file://{store}", *flags, tmp=tmp_path)
    assert code == 2 and doc["error"]["reason"] == "UsageError", doc
    assert doc["error"]["message"].startswith(f"{flag} {flags[1]!r} is not a valid Kubernetes")
    assert not store.exists() and not (tmp_path / "a" / "x").exists()


# -- fetch: hostile manifests, --expect -------------------------------------------------------------------

def _plant_manifest(store_dir: Path, path: str, md5: str) -> str:
    hexid = "0" * 64
    folder = store_dir / "terrasnap" / "manifests" / "ml" / "evil" / hexid
    folder.mkdir(parents=True)
    rows = [FileRow(path=path, role="raw", kind="other", size=4, sha256="a" * 64, md5=md5)]
    (folder / "manifest.parquet").write_bytes(manifest_bytes(rows, f"sha256:{hexid}"))
    return f"file://{folder}/manifest.parquet"


@pytest.mark.parametrize("path, md5, why", [
    ("../../outside.txt", "d41d8cd98f00b204e9800998ecf8427e", "contains '..'"),
    ("/tmp/absolute.txt", "d41d8cd98f00b204e9800998ecf8427e", "is absolute"),
    ("ok.txt", "../../../../secret", "is not a DVC md5 id"),
])
def test_fetch_refuses_hostile_manifest_rows(path: str, md5: str, why: str, tmp_path: Path) -> None:
    uri = _plant_manifest(tmp_path / "store", path, md5)
    (tmp_path / "secret").write_text("s3cr3t")
    dest = tmp_path / "out" / "dest"
    res = CliRunner().invoke(main, ["fetch", uri, str(dest)])
    assert res.exit_code == 1, res.output
    assert "UnsafeInput" in res.output and why in res.output and (path in res.output or md5 in res.output)
    assert not _files(tmp_path / "out") and not (tmp_path / "outside.txt").exists()


def test_fetch_expect_recomputes_the_snapshot_id(tmp_path: Path, file_store: str) -> None:
    src = sd.make_demo(tmp_path / "src")
    code, doc, _ = snap(src, file_store, "--invalid-geometry", "repair", tmp=tmp_path)
    assert code == 0, doc
    sid = doc["snapshotID"]
    res = CliRunner().invoke(main, ["fetch", doc["manifest"], str(tmp_path / "good"), "--expect", sid])
    assert res.exit_code == 0, res.output
    wrong = "sha256:" + "1" * 64
    res = CliRunner().invoke(main, ["fetch", doc["manifest"], str(tmp_path / "wrong"), "--expect", wrong])
    assert res.exit_code == 1 and "UnsafeInput" in res.output and "recomputed from the manifest is " + sid in res.output
    assert not _files(tmp_path / "wrong")
    # A manifest swapped in place (its claimed snapshotID kept) no longer recomputes to the folder's id.
    store = Store.from_url(file_store)
    rel = store.rel_from_uri(doc["manifest"])
    other = [FileRow(path="raw/x.txt", role="raw", kind="other", size=1, sha256="b" * 64,
                     md5="d41d8cd98f00b204e9800998ecf8427e")]
    store.write_bytes(rel, manifest_bytes(other, sid))
    res = CliRunner().invoke(main, ["fetch", doc["manifest"], str(tmp_path / "swapped"), "--expect", sid])
    assert res.exit_code == 1 and "recomputed from the manifest is sha256:" in res.output, res.output
    assert not _files(tmp_path / "swapped")


def test_fetch_expect_recomputes_a_pipeline_snapshot_id(tmp_path: Path, file_store: str) -> None:
    """A DVC source's id covers its stages' dvc.yaml: --expect rebuilds that from the published side files."""
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "src.geojson", sd.buildings(4))
    (repo / "dvc.yaml").write_text(
        "stages:\n  derive:\n    cmd: cp src.geojson derived.geojson\n    deps: [src.geojson]\n"
        "    outs: [derived.geojson]\n")
    _git(repo, "init", "-q", "-b", "main")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True,
                   env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    (repo / ".gitignore").write_text("/derived.geojson\n")
    _commit_all(repo, "pipeline")
    code, doc, _ = snap(f"git+file://{repo}@main", file_store, tmp=tmp_path)
    assert code == 0, doc
    res = CliRunner().invoke(main, ["fetch", doc["manifest"], str(tmp_path / "got"), "--expect", doc["snapshotID"]])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "got" / "raw" / "derived.geojson").exists()


# -- secrets ----------------------------------------------------------------------------------------------

PASSWORD = "pw-MARKER-7f3a"
TOKEN = "tok-MARKER-91c2"


@pytest.fixture
def dumb_http_repo(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real git repository served over git's dumb HTTP protocol by a local HTTP server: (base URL, commit)."""
    repo, commit = make_repo(tmp_path)
    bare = tmp_path / "served" / "repo.git"
    _git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    _git(bare, "update-server-info")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=str(tmp_path / "served")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", commit
    finally:
        server.shutdown()
        server.server_close()


def test_passwords_and_tokens_appear_in_no_output(tmp_path: Path, dumb_http_repo: tuple[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hostport, commit = dumb_http_repo
    monkeypatch.setenv("TERRASNAP_GIT_TOKEN", TOKEN)
    store_dir = tmp_path / "store"
    work = tmp_path / "work"
    url = f"git+http://user:{PASSWORD}@{hostport}/repo.git@main#subdirectory=data"
    code, doc, err = snap(url, f"file://{store_dir}", "--workdir", str(work), tmp=tmp_path)
    assert code == 0, (doc, err)
    assert doc["source"]["commit"] == commit
    outputs = {"result": json.dumps(doc), "stderr": err}
    for p in _files(store_dir):  # manifest, metadata.json, report.json, STAC, dvc files, objects
        outputs[str(p)] = p.read_bytes().decode(errors="replace")
    for name, text in outputs.items():
        assert PASSWORD not in text and TOKEN not in text and "user:" not in text, name
    metadata = next(json.loads(v) for k, v in outputs.items() if k.endswith("metadata.json"))
    assert metadata["source"]["uri"] == f"git+http://{hostport}/repo.git@main#subdirectory=data"

    # A failing fetch (the server is there, the revision is not) echoes no secret either.
    bad = f"git+http://user:{PASSWORD}@{hostport}/repo.git@no-such-branch"
    code, doc, err = snap(bad, f"file://{store_dir}", tmp=tmp_path)
    assert code == 3 and doc["error"]["reason"] == "GitError"
    assert "no-such-branch" in doc["error"]["message"]
    for text in (json.dumps(doc), err):
        assert PASSWORD not in text and TOKEN not in text


def test_unreachable_git_with_userinfo_echoes_no_password(tmp_path: Path, file_store: str) -> None:
    code, doc, err = snap(f"git+https://user:{PASSWORD}@127.0.0.1:9/acme/repo.git@main", file_store,
                          tmp=tmp_path)
    assert code == 3 and doc["error"]["reason"] == "GitError"
    assert PASSWORD not in json.dumps(doc) and PASSWORD not in err
    assert "127.0.0.1:9/acme/repo.git" in doc["error"]["message"]


def test_redact_strips_userinfo_and_masks_known_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRASNAP_GIT_TOKEN", TOKEN)
    assert redact.strip_userinfo("https://u:p%40ss@host/x?y=1") == "https://host/x?y=1"
    assert redact.strip_userinfo("file:///a@b/c") == "file:///a@b/c"  # no userinfo: an '@' in a path stays
    redact.remember_url(f"https://bob:{PASSWORD}@host/r.git")
    out = redact.redact(f"fatal: could not read from https://bob:{PASSWORD}@host/r.git ({PASSWORD}); {TOKEN}")
    assert PASSWORD not in out and TOKEN not in out and "bob" not in out
    assert "https://***@host/r.git" in out
