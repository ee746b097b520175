"""The documents' DVC workflow as a real repository: annotations tracked with `dvc add`, a `dvc.yaml` whose
stage runs `scripts/validate_and_snapshot.py`, `dvc repro` + `dvc push` + `git commit`, done with the real
`git` and `dvc` commands the team would type."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import sampledata as sd

VALIDATE_AND_SNAPSHOT = '''"""Concatenate every annotation into one GeoParquet and describe it (deterministic: sorted, no clock)."""
import argparse
import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import yaml

ap = argparse.ArgumentParser()
ap.add_argument("--input", required=True)
ap.add_argument("--output", required=True)
args = ap.parse_args()
params = yaml.safe_load(Path("params.yaml").read_text())["snapshot"]
files = sorted(Path(args.input).glob("*.geojson"))
frames = []
for f in files:
    df = gpd.read_file(f)
    df["source_file"] = f.name
    frames.append(df)
gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs).to_crs(params["crs"])
out = Path(args.output)
out.mkdir(parents=True, exist_ok=True)
gdf.to_parquet(out / "latest_snapshot.parquet", index=False)
meta = {"files": [f.name for f in files], "features": len(gdf), "crs": params["crs"]}
(out / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\\n")
'''

CLASS_SUMMARY = '''import json
from pathlib import Path

import yaml

classes = yaml.safe_load(Path("params.yaml").read_text())["classes"]
Path("data/classes.json").write_text(json.dumps(sorted(classes)) + "\\n")
'''

DVC_YAML = """stages:
  validate_and_snapshot:
    cmd: python scripts/validate_and_snapshot.py --input data/raw/annotations/ --output data/snapshots/
    deps:
      - scripts/validate_and_snapshot.py
      - data/raw/annotations
    params:
      - snapshot.crs
    outs:
      - data/snapshots/latest_snapshot.parquet
      - data/snapshots/metadata.json
  class_summary:
    cmd: python scripts/class_summary.py
    deps:
      - scripts/class_summary.py
    params:
      - classes
    outs:
      - data/classes.json
"""

PARAMS = "snapshot:\n  crs: EPSG:4326\nclasses: [building, road]\n"


def env(scratch: Path) -> dict[str, str]:
    return dict(os.environ, DVC_NO_ANALYTICS="1", GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false",
                DVC_SITE_CACHE_DIR=str(scratch / "dvc-site"), PYTHONDONTWRITEBYTECODE="1",
                PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
                GIT_AUTHOR_NAME="team", GIT_AUTHOR_EMAIL="team@example.org", GIT_COMMITTER_NAME="team",
                GIT_COMMITTER_EMAIL="team@example.org")


def run(repo: Path, *args: str) -> str:
    """`git ...` or `dvc ...` in the repository, as the team runs them."""
    cmd = [sys.executable, "-m", "dvc", *args[1:]] if args[0] == "dvc" else list(args)
    proc = subprocess.run(cmd, cwd=repo, env=env(repo.parent), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


def add_remote(repo: Path, name: str, url: str, endpoint: str | None = None, default: bool = False) -> None:
    run(repo, "dvc", "remote", "add", *(["-d"] if default else []), name, url)
    if endpoint:
        run(repo, "dvc", "remote", "modify", name, "endpointurl", endpoint)
        if url.startswith("gs://"):
            run(repo, "dvc", "remote", "modify", name, "allow_anonymous_login", "true")


def write_annotations(repo: Path, n: int = 3, seed: int = 0) -> None:
    for i in range(n):
        sd.write_geojson(repo / "data" / "raw" / "annotations" / f"tile_{i}.geojson",
                         sd.buildings(6, seed=seed + i, lon0=7.40 + 0.01 * i))


def make_team_repo(repo: Path, remote: str, endpoint: str | None = None, pipeline: bool = True) -> str:
    """The team's repository after `dvc add`, `dvc repro`, `dvc push` and a commit; returns the commit."""
    repo.mkdir(parents=True)
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "dvc", "init", "-q")
    add_remote(repo, "storage", remote, endpoint, default=True)
    write_annotations(repo)
    run(repo, "dvc", "add", "-q", "data/raw/annotations")
    if pipeline:
        (repo / "scripts").mkdir()
        (repo / "scripts" / "validate_and_snapshot.py").write_text(VALIDATE_AND_SNAPSHOT)
        (repo / "scripts" / "class_summary.py").write_text(CLASS_SUMMARY)
        (repo / "params.yaml").write_text(PARAMS)
        (repo / "dvc.yaml").write_text(DVC_YAML)
        run(repo, "dvc", "repro", "-q")
    run(repo, "dvc", "push", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "annotations, pipeline, lock")
    return run(repo, "git", "rev-parse", "HEAD")


def change_one_annotation(repo: Path, push: bool = True) -> str:
    """Edit one annotation, `dvc repro` (or `dvc add` without a pipeline), optionally `dvc push`, commit."""
    sd.write_geojson(repo / "data" / "raw" / "annotations" / "tile_1.geojson", sd.buildings(7, seed=99))
    if (repo / "dvc.yaml").exists():
        run(repo, "dvc", "repro", "-q")
    else:
        run(repo, "dvc", "add", "-q", "data/raw/annotations")
    if push:
        run(repo, "dvc", "push", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "fix one annotation")
    return run(repo, "git", "rev-parse", "HEAD")
