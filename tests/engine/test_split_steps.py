"""The Job's three steps (`terrasnap source fetch`, `terrasnap pipeline run`, `terrasnap snapshot --prepared`)
as separate commands on one workspace: the same snapshotID as the one-process command, and nothing a hostile
pipeline leaves in the shared workspace (a poisoned DVC cache or hash cache, a forged account of its stages,
a rewritten DVC config) reaches the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from terrasnap.cli import main
from terrasnap.engine.fetch import fetch
from tests.engine.test_dvc_projects import _manifest, _source
from tests.engine.test_snapshot import snap
from tests.support import dvcproject as dp
from tests.support import sampledata as sd


def _step(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def split(source: str, store: str, work: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """The three steps as the Job runs them: fetch state and the snapshot's own directory outside the
    shared workspace. Returns the exit code of the first failing step (or 0) and its result document."""
    result = work.parent / f"{work.name}-result.json"
    state, private = work.parent / f"{work.name}-state" / "source.json", work.parent / f"{work.name}-private"
    for args in (["source", "fetch", source, "--workdir", str(work), "--state", str(state), "--store", store],
                 ["pipeline", "run", "--workdir", str(work)],
                 ["snapshot", "--prepared", str(state), "--workdir", str(work), "--private", str(private),
                  "--store", store, *extra]):
        code, _out = _step(*args, "--result-file", str(result))
        if code != 0:
            return code, json.loads(result.read_text())
        assert not result.exists() or args[0] == "snapshot", "a first step wrote a result on success"
    return 0, json.loads(result.read_text())


def test_the_three_steps_give_the_id_of_the_one_process_command(tmp_path: Path, file_store: str) -> None:
    (tmp_path / "team-remote").mkdir()
    dp.make_team_repo(tmp_path / "repo", str(tmp_path / "team-remote"))
    code, one, err = snap(_source(tmp_path / "repo"), file_store, tmp=tmp_path)
    assert code == 0, (one, err)
    code, three = split(_source(tmp_path / "repo"), file_store, tmp_path / "work")
    assert code == 0, three
    assert three["snapshotID"] == one["snapshotID"]
    assert three["manifest"] == one["manifest"]
    assert three["stats"]["stages"] == one["stats"]["stages"]
    assert three["source"]["commit"] == one["source"]["commit"]
    # and a plain directory (no DVC): the fetch step has nothing to fetch, the pipeline nothing to run
    demo = sd.make_demo(tmp_path / "demo")
    code, one, err = snap(demo, file_store, "--invalid-geometry", "repair", tmp=tmp_path)
    assert code == 0, (one, err)
    code, three = split(str(demo), file_store, tmp_path / "work2", "--invalid-geometry", "repair")
    assert code == 0, three
    assert three["snapshotID"] == one["snapshotID"]


HOSTILE = '''"""A stage that does its job and then tries to make the snapshot step publish lies."""
import json
import os
from pathlib import Path

work = Path(os.environ["WORK"])
Path("out").mkdir(exist_ok=True)
Path("out/result.json").write_text(json.dumps({"features": 3}) + "\\n")
# 1. every file the snapshot will hash: the right md5 but a forged SHA-256 in the workspace's hash cache
cache = {}
for p in Path(".").rglob("*"):
    if p.is_file() and ".dvc" not in p.parts and ".git" not in p.parts:
        st = p.stat()
        import hashlib
        cache[f"{st.st_dev}:{st.st_ino}"] = [st.st_mtime_ns, st.st_size, "0" * 64,
                                             hashlib.md5(p.read_bytes()).hexdigest()]
(work / ".terrasnap").mkdir(exist_ok=True)
(work / ".terrasnap" / "hashes.json").write_text(json.dumps(cache))
# 2. every file object in the workspace's DVC cache: other bytes under the same address
for obj in (work / ".dvc-cache").rglob("*"):
    if obj.is_file() and not obj.name.endswith(".dir"):
        obj.chmod(0o644)
        obj.write_bytes(b"poison")
# 3. a DVC config naming a credential file and a cache of its choosing
Path(".dvc/config.local").write_text("[cache]\\n    dir = /tmp/evil-cache\\n")
'''


def _hostile_repo(repo: Path, remote: Path) -> None:
    """Annotations tracked by `dvc add` on the team's remote (so the fetch step fills the shared cache),
    and the hostile stage."""
    repo.mkdir(parents=True)
    remote.mkdir()
    dp.run(repo, "git", "init", "-q", "-b", "main")
    dp.run(repo, "dvc", "init", "-q")
    dp.add_remote(repo, "storage", str(remote), default=True)
    dp.write_annotations(repo)
    dp.run(repo, "dvc", "add", "-q", "data/raw/annotations")
    dp.run(repo, "dvc", "push", "-q")
    (repo / "hostile.py").write_text(HOSTILE)
    (repo / "dvc.yaml").write_text("stages:\n  hostile:\n    cmd: python hostile.py\n    deps: [hostile.py]\n"
                                   "    outs: [out]\n")
    dp.run(repo, "git", "add", "-A")
    dp.run(repo, "git", "commit", "-qm", "hostile")


def test_a_hostile_pipeline_cannot_make_the_snapshot_step_publish_its_lies(
        tmp_path: Path, file_store: str, monkeypatch: Any) -> None:
    repo = tmp_path / "repo"
    _hostile_repo(repo, tmp_path / "team-remote")
    work = tmp_path / "work"
    monkeypatch.setenv("WORK", str(work))  # the scrubbed environment keeps non-credential variables
    code, doc = split(f"git+file://{repo}@main", file_store, work)
    assert code == 0, doc
    assert doc["stats"]["stages"] == {"hostile": "ran"}
    poisoned = [p for p in (work / ".dvc-cache").rglob("*") if p.is_file() and p.read_bytes() == b"poison"]
    assert poisoned, "the stage did not poison the shared cache: this test would prove nothing"
    # every file fetched back by its DVC address has the SHA-256 the manifest names (fetch verifies both)
    fetched = tmp_path / "fetched"
    fetch(doc["manifest"], fetched)
    assert json.loads((fetched / "raw" / "out" / "result.json").read_text()) == {"features": 3}
    _, _, rows = _manifest(file_store, doc)
    assert all(r["sha256"] != "0" * 64 for r in rows)
    # the same repository in one process gives the same id: the lies changed nothing
    code, one, err = snap(f"git+file://{repo}@main", file_store, tmp=tmp_path)
    assert code == 0, (one, err)
    assert one["snapshotID"] == doc["snapshotID"]


def test_a_forged_account_of_the_stages_keeps_only_real_stage_names(tmp_path: Path, file_store: str) -> None:
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "data" / "in.geojson", sd.buildings(3))
    (repo / "dvc.yaml").write_text("stages:\n  count:\n    cmd: python -c \"open('n.txt','w').write('3')\"\n"
                                   "    outs: [n.txt]\n")
    dp.run(repo, "git", "init", "-q", "-b", "main")
    dp.run(repo, "dvc", "init", "-q")
    dp.run(repo, "git", "add", "-A")
    dp.run(repo, "git", "commit", "-qm", "count")
    work = tmp_path / "work"
    state, private = tmp_path / "state" / "source.json", tmp_path / "private"
    assert _step("source", "fetch", f"git+file://{repo}@main", "--workdir", str(work), "--state", str(state))[0] == 0
    assert _step("pipeline", "run", "--workdir", str(work))[0] == 0
    (work / ".terrasnap" / "pipeline.json").write_text(json.dumps(
        {"stages": {"count": "ran", "invented": "ran", "x": "evil"}}))
    result = tmp_path / "result.json"
    code, out = _step("snapshot", "--prepared", str(state), "--workdir", str(work), "--private", str(private),
                      "--store", file_store, "--result-file", str(result))
    assert code == 0, out
    assert json.loads(result.read_text())["stats"]["stages"] == {"count": "ran"}


def test_a_failing_stage_is_rejected_data_and_reported_by_the_pipeline_step(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sd.write_geojson(repo / "data" / "in.geojson", sd.buildings(3))
    (repo / "dvc.yaml").write_text("stages:\n  boom:\n    cmd: python -c \"raise SystemExit(4)\"\n"
                                   "    outs: [never.txt]\n")
    dp.run(repo, "git", "init", "-q", "-b", "main")
    dp.run(repo, "dvc", "init", "-q")
    dp.run(repo, "git", "add", "-A")
    dp.run(repo, "git", "commit", "-qm", "boom")
    work, result = tmp_path / "work", tmp_path / "result.json"
    assert _step("source", "fetch", f"git+file://{repo}@main", "--workdir", str(work))[0] == 0
    code, _ = _step("pipeline", "run", "--workdir", str(work), "--result-file", str(result))
    assert code == 1
    doc = json.loads(result.read_text())
    assert doc["ok"] is False and doc["error"]["reason"] == "ValidationFailed", doc
    assert "exited with 4" in doc["error"]["message"]
