"""The `terrasnap` command: thin click wrappers around library functions (docs/contracts.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from terrasnap import __version__
from terrasnap.api import contract
from terrasnap.api.contract import RESULT_LIMIT
from terrasnap.api.policy import POLICY_FILE_FLAG, RULE_FLAG
from terrasnap.engine.errors import TerrasnapError, UsageError


def compact_result(doc: dict[str, Any]) -> str:
    """The result as JSON of at most RESULT_LIMIT bytes: long messages are shortened, never the identifiers."""
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) <= RESULT_LIMIT:
        return text
    doc = json.loads(text)
    for key in contract.DROPPABLE_KEYS:
        doc.pop(key, None)
    err = doc.get("error")
    if isinstance(err, dict):
        msg = str(err.get("message", ""))
        while len(json.dumps(doc, separators=(",", ":")).encode()) > RESULT_LIMIT and msg:
            msg = msg[: max(0, len(msg) - 256)]
            err["message"] = msg + "…"
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    return text.encode()[:RESULT_LIMIT].decode(errors="ignore")  # the limit is in bytes


def _write_result(path: str | None, doc: dict[str, Any]) -> None:
    if not path:
        return
    text = compact_result(doc)
    try:
        Path(path).write_text(text)
    except OSError as exc:
        click.echo(f"terrasnap: cannot write result file {path}: {exc}", err=True)


def _load_policy_file(path: str) -> dict[str, Any]:
    """A --policy file: YAML or JSON holding exactly the CRD's spec.validation object."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{POLICY_FILE_FLAG} {path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise UsageError(f"{POLICY_FILE_FLAG} {path}: not YAML or JSON: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"{POLICY_FILE_FLAG} {path}: expected an object (a DatasetSnapshot's spec.validation), "
                         f"not {type(doc).__name__}")
    return doc


def _policy(policy_file: str | None, rules: tuple[str, ...], **fields: str | None) -> Any:
    """The engine's Policy: defaults < the --policy file < the flags (--target-crs etc., then --rule)."""
    from terrasnap.api import policy as schema
    from terrasnap.engine.validate.policy import Policy

    try:
        spec = _load_policy_file(policy_file) if policy_file else {}
        schema.check_spec_fields(spec, f"{POLICY_FILE_FLAG} {policy_file}")
        spec = dict(spec)
        for f in schema.FIELDS:
            value = fields.get(_param_name(f.flag))
            if value is not None:
                spec[f.name] = value
        levels = dict(spec.get(schema.RULES_FIELD) or {})
        for text in rules:
            rule, level = schema.parse_rule_flag(text)
            levels[rule] = level
        spec[schema.RULES_FIELD] = levels
        return Policy.from_spec(spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _param_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def policy_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The policy's options, from its one definition (api/policy.py); all default to None so that a flag
    given overrides the --policy file and an absent one does not."""
    from terrasnap.api import policy as schema

    f = click.option(RULE_FLAG, "rules", multiple=True, metavar="RULE=LEVEL",
                     help=f"set a rule's level ({', '.join(schema.LEVELS)}); repeatable; `terrasnap rules` "
                          "lists the rules")(f)
    for fld in reversed(schema.FIELDS):
        f = click.option(fld.flag, _param_name(fld.flag), default=None,
                         type=click.Choice(fld.choices) if fld.choices else None,
                         help=f"{fld.description} [default: {fld.default}]")(f)
    f = click.option(POLICY_FILE_FLAG, "policy_file", default=None, metavar="FILE",
                     help="YAML/JSON file holding a DatasetSnapshot's spec.validation object; flags override it")(f)
    return f


def _run(result_file: str | None, fn: Callable[[], dict[str, Any]],
         show: Callable[[dict[str, Any]], str] | None = None, errors_only: bool = False) -> None:
    """Run an engine call, map errors to the exit-code contract, always write the result file (with
    `errors_only`, only a failure's: the Job's first steps report nothing when they succeed). `show`
    renders the result for people (default: JSON)."""
    from terrasnap.engine.redact import redact  # every message passes here: no userinfo, token or password

    try:
        result = fn()
    except TerrasnapError as exc:
        msg = redact(exc.message)
        click.echo(f"terrasnap: error: {exc.reason}: {msg}", err=True)
        _write_result(result_file, {"ok": False, "error": {"reason": exc.reason, "message": msg}})
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the contract promises a result document even for bugs
        msg = redact(f"{type(exc).__name__}: {exc}")
        click.echo(f"terrasnap: internal error: {msg}", err=True)
        _write_result(result_file, {"ok": False, "error": {"reason": contract.INTERNAL_ERROR, "message": msg}})
        sys.exit(contract.exit_code(contract.INTERNAL_ERROR))
    if not errors_only or result.get("ok") is False:
        _write_result(result_file, result)
    click.echo(show(result) if show else json.dumps(result, indent=1, sort_keys=True))
    if result.get("ok") is False:  # finished, but not fully (a GC whose deletes partly failed)
        sys.exit(contract.exit_code(str((result.get("error") or {}).get("reason", contract.INTERNAL_ERROR))))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="terrasnap")
def main() -> None:
    """terrasnap: validated, content-addressed snapshots of geospatial training data."""


@main.command()
@click.argument("source", required=False)
@click.option("--store", required=True, help="file:///path or gs://bucket/prefix")
@click.option("--endpoint", default=None, help="store endpoint (emulators); also TERRASNAP_STORE_ENDPOINT")
@click.option("--name", default=None, help="snapshot name (default: the source's last path part)")
@click.option("--namespace", default="default", show_default=True)
@policy_options
@click.option("--result-file", default=None, help="write the JSON result here (≤ 4 KB), e.g. /dev/termination-log")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="keep the DVC project here between runs (re-snapshots then re-read nothing)")
@click.option("--prepared", type=click.Path(path_type=Path), default=None,
              help="the state file of `terrasnap source fetch` (then SOURCE may be left out): snapshot what the "
                   "fetch and pipeline steps left in --workdir, trusting none of the pipeline's files")
@click.option("--private", type=click.Path(path_type=Path), default=None,
              help="with --prepared: a directory only this step writes (its DVC project and caches)")
def snapshot(source: str | None, store: str, endpoint: str | None, name: str | None, namespace: str,
             result_file: str | None, workdir: Path | None, prepared: Path | None, private: Path | None,
             policy_file: str | None, rules: tuple[str, ...], **policy_fields: str | None) -> None:
    """Validate SOURCE, snapshot it into STORE, and print the result."""

    def go() -> dict[str, Any]:
        from terrasnap.engine.interrupt import sigterm_raises
        from terrasnap.engine.snapshot import SnapshotRequest, run_snapshot

        _check_names(name, namespace)
        if source is None and prepared is None:
            raise UsageError("terrasnap snapshot needs SOURCE (or --prepared STATE with --workdir)")
        if prepared is not None and workdir is None:
            raise UsageError("--prepared needs --workdir (where `terrasnap source fetch` fetched the source)")
        if private is not None and prepared is None:
            raise UsageError("--private is for --prepared only")
        req = SnapshotRequest(source=source or "", store=store, endpoint=endpoint, name=name, namespace=namespace,
                              policy=_policy(policy_file, rules, **policy_fields), workdir=workdir,
                              prepared=prepared, private=private)
        with sigterm_raises("snapshot"):  # a stopped pod releases its in-flight registration
            return run_snapshot(req)

    _run(result_file, go)


def _check_names(name: str | None, namespace: str) -> None:
    """--name and --namespace become store folders (terrasnap/manifests/NS/NAME/): Kubernetes rules only."""
    try:
        if name is not None:
            contract.check_object_name(name)
        contract.check_namespace(namespace)
    except ValueError as exc:
        flag = "--namespace" if "namespace" in str(exc) else "--name"
        raise UsageError(f"{flag} {exc}") from None


@main.group("source")
def source_group() -> None:
    """The Job's first step: fetch a source (with its own credentials only)."""


@source_group.command("fetch")
@click.argument("source")
@click.option("--workdir", required=True, type=click.Path(path_type=Path), help="where to fetch it")
@click.option("--state", type=click.Path(path_type=Path), default=None,
              help="write what was fetched here too (default: only WORKDIR/.terrasnap/source.json); "
                   "`terrasnap snapshot --prepared` reads it")
@click.option("--store", default=None, help="the store's URL: a DVC remote that is the store is read with its "
                                            "endpoint (never with its credentials here)")
@click.option("--endpoint", default=None, help="the store's endpoint (emulators); also TERRASNAP_STORE_ENDPOINT")
@click.option("--result-file", default=None, help="on failure, write the JSON result here")
def source_fetch(source: str, workdir: Path, state: Path | None, store: str | None, endpoint: str | None,
                 result_file: str | None) -> None:
    """Fetch SOURCE into WORKDIR: a checkout, a bucket prefix, a DVC project's tracked data. Runs none of
    the source's own code."""

    def go() -> dict[str, Any]:
        from terrasnap.engine.steps import fetch_step

        return fetch_step(source, workdir, state, store, endpoint)

    _run(result_file, go, errors_only=True)


@main.group("pipeline")
def pipeline_group() -> None:
    """The Job's second step: the source repository's own DVC pipeline (no credentials)."""


@pipeline_group.command("run")
@click.option("--workdir", required=True, type=click.Path(path_type=Path),
              help="what `terrasnap source fetch` fetched")
@click.option("--result-file", default=None, help="on failure, write the JSON result here")
def pipeline_run(workdir: Path, result_file: str | None) -> None:
    """`dvc repro` of the fetched DVC project's stages the snapshot needs (nothing to do for other sources)."""

    def go() -> dict[str, Any]:
        from terrasnap.engine.steps import pipeline_step

        return pipeline_step(workdir)

    _run(result_file, go, errors_only=True)


@main.command()
@click.argument("source")
@policy_options
@click.option("--endpoint", default=None)
@click.option("--report", "report_file", default=None, help="write the full JSON report here")
def validate(source: str, endpoint: str | None, report_file: str | None, policy_file: str | None,
             rules: tuple[str, ...], **policy_fields: str | None) -> None:
    """Validate SOURCE without pushing anything; exit 1 on errors (a CI gate for pull requests)."""

    def go() -> dict[str, Any]:
        from terrasnap.engine.stage import validate_source

        return validate_source(source, _policy(policy_file, rules, **policy_fields), endpoint,
                               Path(report_file) if report_file else None)

    _run(None, go)


@main.command("rules")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
def rules_command(as_json: bool) -> None:
    """Print the validation rules: name, default level, whether it can be downgraded, what it checks."""
    from terrasnap.api.policy import rule_table

    table = rule_table()
    if as_json:
        click.echo(json.dumps(table, indent=1))
        return
    width = max(len(r["name"]) for r in table)
    click.echo(f"{'RULE':<{width}}  {'DEFAULT':<7}  {'DOWNGRADE':<9}  CHECKS")
    for r in table:
        click.echo(f"{r['name']:<{width}}  {r['default']:<7}  {'yes' if r['downgradable'] else 'no':<9}  {r['checks']}")
        if r["note"]:
            click.echo(f"{'':<{width}}  {'':<7}  {'':<9}  {'why not: ' if not r['downgradable'] else 'note: '}{r['note']}")


@main.command()
@click.argument("manifest_uri")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--endpoint", default=None)
@click.option("--role", type=click.Choice(["raw", "normalized"]), default=None, help="only these files")
@click.option("--expect", "expect", default=None, metavar="SNAPSHOT_ID",
              help="recompute the snapshotID from the manifest and fail (exit 1) unless it is this one")
def fetch(manifest_uri: str, dest: Path, endpoint: str | None, role: str | None, expect: str | None) -> None:
    """Download a snapshot's files by DVC address and verify every SHA-256 (no git, no DVC project)."""

    def go() -> dict[str, Any]:
        from terrasnap.engine.fetch import fetch as do_fetch

        return do_fetch(manifest_uri, dest, endpoint, role, expect=expect)

    _run(None, go)


@main.command()
@click.argument("manifest_uri")
@click.option("--endpoint", default=None, help="store endpoint (emulators); also TERRASNAP_STORE_ENDPOINT")
@click.option("--deep", is_flag=True, help="read every object back (also checks sha256 against the manifest)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def verify(manifest_uri: str, endpoint: str | None, deep: bool, as_json: bool) -> None:
    """Check a published snapshot in its store, read-only: every object it references exists and has the
    right md5. Exit 0 when intact, 1 naming each missing or corrupt object and its files."""
    from terrasnap.engine.verify import render, verify_snapshot

    _run(None, lambda: verify_snapshot(manifest_uri, endpoint, deep), show=None if as_json else render)


@main.command()
@click.option("--store", required=True, help="a SnapshotStore name (in a cluster) or a store URL (with --root)")
@click.option("--endpoint", default=None)
@click.option("--root", "roots", multiple=True, help="manifest URI of a snapshot to keep (local mode)")
@click.option("--dry-run", is_flag=True, help="decide and report, delete nothing")
@click.option("--grace", default=None,
              help="never delete objects younger than this (e.g. 24h, 90d) [default: 24h, or the "
                   "SnapshotStore's spec.gc.gracePeriod]")
@click.option("--result-file", default=None, help="write the JSON summary here (≤ 4 KB)")
def gc(store: str, endpoint: str | None, roots: tuple[str, ...], dry_run: bool, grace: str | None,
       result_file: str | None) -> None:
    """Delete store objects no live snapshot needs — and never one that any does."""
    _run(result_file, lambda: gc_summary(store, endpoint, list(roots), dry_run, grace))


def gc_summary(store: str, endpoint: str | None, roots: list[str], dry_run: bool, grace: str | None
               ) -> dict[str, Any]:
    """`terrasnap gc`: local mode (a store URL and explicit roots) or cluster mode (a SnapshotStore name).
    Returns the run's summary; a run whose deletes partly failed says so in `error` (exit 3)."""
    from terrasnap.api.durations import parse_duration

    try:
        grace_td = parse_duration(grace) if grace is not None else None
    except ValueError as exc:
        raise UsageError(f"--grace: {exc}") from None
    if "://" not in store:
        from terrasnap.engine.gc.cluster import run_cluster_gc

        summary = run_cluster_gc(store, dry_run=dry_run, grace=grace_td, endpoint=endpoint)
    else:
        from terrasnap.engine.gc.run import DEFAULT_GRACE, run_gc
        from terrasnap.engine.store import Store

        if not roots:
            raise UsageError(
                "terrasnap gc --store URL needs at least one --root MANIFEST_URI "
                "(an empty root set would make every old object garbage)"
            )
        st = Store.from_url(store, endpoint)
        st.check_reachable()
        summary = run_gc(st, roots, grace=DEFAULT_GRACE if grace_td is None else grace_td, dry_run=dry_run).summary()
    if not summary.get("ok", True):
        errors = [str(e) for e in summary.get("errors") or []]
        summary["error"] = {"reason": contract.GC_INCOMPLETE,
                            "message": "; ".join(errors[:5]) or "some deletes failed"}
    return summary


@main.group(hidden=True)
def stage() -> None:
    """Commands DVC stages run (see the project's dvc.yaml)."""


@stage.command("validate")
@click.option("--policy", "policy_file", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--report", "report_file", required=True, type=click.Path(path_type=Path))
@click.argument("raw", type=click.Path(path_type=Path, exists=True))
@click.argument("out", type=click.Path(path_type=Path))
def stage_validate(policy_file: Path, report_file: Path, raw: Path, out: Path) -> None:
    """Validate RAW, write normalized GeoParquet to OUT and the report; exit 1 if rejected."""
    from terrasnap.engine.stage import run_stage

    sys.exit(run_stage(policy_file, report_file, raw, out))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def operator(ctx: click.Context) -> None:
    """Run the operator against the current kubeconfig (kopf)."""
    from terrasnap.controller.run import main as run_operator

    sys.exit(run_operator(list(ctx.args)))


if __name__ == "__main__":
    main()
