"""The snapshot Job's first two steps, one container each (docs/contracts.md, "The Job's three steps").

1. `terrasnap source fetch SOURCE --workdir W --state S`: the source's own credentials only (git token, DVC
   remotes, a bucket's key). Writes what it fetched to `W/.terrasnap/source.json` (for the pipeline step)
   and to S, a place the pipeline container cannot write (for the snapshot step).
2. `terrasnap pipeline run --workdir W`: a DVC project's own stages, with no credentials at all.
3. `terrasnap snapshot --prepared S --workdir W --private P ...` (engine/snapshot.py): validates, hashes,
   pushes and publishes, from what it re-hashes itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from terrasnap.engine.errors import UsageError
from terrasnap.engine.snapshot import pipeline_state, stderr_progress
from terrasnap.engine.source import fetch_source, load_fetched, parse_source, save_fetched


def shared_state(workdir: Path) -> Path:
    """The fetch step's state in the shared workspace: read by the pipeline step only (it can rewrite it)."""
    return workdir / ".terrasnap" / "source.json"


def fetch_step(source: str, workdir: Path, state: Path | None, store_url: str | None,
               endpoint: str | None) -> dict[str, Any]:
    from terrasnap.engine.store import Store

    workdir.mkdir(parents=True, exist_ok=True)
    store = Store.from_url(store_url, endpoint) if store_url else None
    spec = parse_source(source)
    stderr_progress(f"fetching source {spec.describe()['uri']}")
    mat = fetch_source(spec, workdir, endpoint or (store.endpoint if store else None), store=store,
                       progress=stderr_progress)
    save_fetched(mat, shared_state(workdir))
    if state is not None and state.resolve() != shared_state(workdir).resolve():
        save_fetched(mat, state)
    pipeline = bool(mat.fetched and mat.fetched.plan)
    return {"ok": True, "step": "fetch", "source": {"commit": mat.commit}, "pipeline": pipeline,
            "stats": {"objectsFetched": mat.fetched.fetched if mat.fetched else 0}}


def pipeline_step(workdir: Path) -> dict[str, Any]:
    from terrasnap.engine import dvcsource

    path = shared_state(workdir)
    if not path.is_file():
        raise UsageError(f"{path}: nothing fetched here (run `terrasnap source fetch` first)")
    mat = load_fetched(path)
    stages: dict[str, str] = {}
    if mat.fetched is not None and mat.fetched.plan:
        stages = dvcsource.run_pipeline(mat.fetched, workdir, stderr_progress)
    out = pipeline_state(workdir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stages": stages}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return {"ok": True, "step": "pipeline", "stats": {"stages": stages}}
