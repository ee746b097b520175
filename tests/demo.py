"""`make demo`: snapshot the sample data set into the embedded file:// store, fetch it back, verify it.

Runs the real `terrasnap` command (the same one a Job pod runs) twice to show the snapshotID is stable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.sampledata import make_demo

TERRASNAP = str(Path(sys.executable).parent / "terrasnap")


def run(*args: str) -> dict:
    proc = subprocess.run([TERRASNAP, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"terrasnap {args[0]} failed with exit code {proc.returncode}")
    result: dict = json.loads(proc.stdout)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", type=Path, default=Path(".state/demo"))
    args = ap.parse_args()
    state = args.state.resolve()
    data = make_demo(state / "sample-data")
    store = f"file://{state / 'store'}"
    print(f"sample data:  {data}  (labels with a bow-tie polygon and a null geometry, two GeoTIFFs)")
    print(f"store:        {store}")

    first = run("snapshot", str(data), "--store", store, "--name", "demo", "--namespace", "demo",
                "--invalid-geometry", "repair", "--workdir", str(state / "work"))
    s = first["summary"]
    print(f"snapshotID:   {first['snapshotID']}")
    print(f"summary:      {s['files']} files, {s['features']} features, {s['rasters']} rasters, "
          f"{s['bytes']} bytes, {s['repaired']} repaired, {s['rejected']} dropped, {s['warnings']} warnings")
    print(f"manifest:     {first['manifest']}")

    dest = state / "fetched"
    shutil.rmtree(dest, ignore_errors=True)
    fetched = run("fetch", first["manifest"], str(dest))
    print(f"fetched:      {fetched['files']} files into {dest}, every SHA-256 verified")

    second = run("snapshot", str(data), "--store", store, "--name", "demo", "--namespace", "demo",
                 "--invalid-geometry", "repair", "--workdir", str(state / "work"))
    same = second["snapshotID"] == first["snapshotID"]
    print(f"second run:   {second['snapshotID']} ({'same id' if same else 'DIFFERENT id'}; "
          f"{second['stats']['bytesHashed']} bytes re-hashed)")
    print(f"pull it with plain DVC: dvc remote add -d store {state / 'store'} && dvc pull  (dvc.lock is next to the manifest)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
