"""``daetalker register``, ``daetalker promote`` and ``daetalker registry history|rollback|reconcile|verify``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

SpeakerOpt = Annotated[str, typer.Option("--speaker", "-s", help="Speaker name; the registered model is talker-<speaker>.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (stored in the audit trail; required).")]
NameArg = Annotated[str, typer.Argument(help="Speaker or model name (synth or talker-synth).")]
StateOpt = Annotated[
    Optional[Path],
    typer.Option("--state", envvar="DAETALKER_STATE", help="State folder holding the local audit log and locks (default: ./.state)."),
]

app = typer.Typer()


@app.command("register")
def register_cmd(
    run: Annotated[str, typer.Option("--run", help="MLflow run that logged the 'bundle' folder and the metrics.")],
    speaker: SpeakerOpt,
    eval_run: Annotated[str, typer.Option("--eval-run", help="Evaluation run whose metrics to use (default: the run's eval_run_id tag).")] = "",
    report: Annotated[str, typer.Option("--report", help="Location of the validation report (default: the run's tag).")] = "",
    pipeline_run: Annotated[str, typer.Option("--pipeline-run", help="Pipeline run id (default: the run's tag or parent run).")] = "",
) -> None:
    """Register a run's model bundle as a new version of talker-<speaker> (idempotent per run)."""
    from daetalker.registry.register import register_model

    v = register_model(run, speaker, eval_run_id=eval_run, validation_report=report, pipeline_run_id=pipeline_run)
    typer.echo(f"{v.name} v{v.version}" + ("" if v.created else " (already registered from this run)"))
    for k in sorted(v.tags):
        typer.echo(f"  {k} = {v.tags[k]}")

@app.command("promote")
def promote_cmd(
    speaker: SpeakerOpt,
    version: Annotated[str, typer.Option("--version", "-v", help="Version to put through the gate.")],
    reason: ReasonOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the decision; move and record nothing.")] = False,
    thresholds: Annotated[
        Optional[Path], typer.Option("--thresholds", help="Gate rules YAML (default: the packaged thresholds.yaml).")
    ] = None,
    origin: Annotated[str, typer.Option("--origin", help="manual or pipeline (recorded).")] = "manual",
    pipeline_run: Annotated[str, typer.Option("--pipeline-run", help="Pipeline run id, when a pipeline promotes.")] = "",
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when the gate rejects the candidate.")] = False,
    state: StateOpt = None,
) -> None:
    """Gate a version: it becomes challenger, and champion only if every threshold holds. Audited."""
    from daetalker.registry.promote import promote

    result = promote(speaker, version, reason, thresholds=thresholds, dry_run=dry_run, origin=origin,
                     pipeline_run_id=pipeline_run, state_dir=state)  # fmt: skip
    typer.echo(result.format())
    if strict and not result.passed:
        raise typer.Exit(1)

registry_app = typer.Typer(help="Model registry: history of alias moves, rollback, integrity.", no_args_is_help=True)

@registry_app.command("history")
def history_cmd(
    name: NameArg,
    at: Annotated[Optional[str], typer.Option("--at", help="Also print which version was champion at this ISO time (UTC if no zone).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event.")] = False,
    state: StateOpt = None,
) -> None:
    """Who moved which alias to which version, when and why (every decision, pass or fail)."""
    from daetalker.registry.history import champion_at, format_history, history, verify_local_log

    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise typer.BadParameter(f"{at!r} is not an ISO time, e.g. 2026-03-01T12:00 or 2026-03-01",
                                     param_hint="--at") from None
    events = history(name)
    if as_json:
        for e in events:
            typer.echo(json.dumps(asdict(e)))
    else:
        typer.echo(format_history(events))
    path, n = verify_local_log(name, state)
    if n:
        typer.echo(f"local audit log {path}: {n} entries, hash chain intact", err=True)
    if at:
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        typer.echo(f"champion at {when.isoformat()}: {champion_at(events, when) or 'none'}")

@registry_app.command("rollback")
def rollback_cmd(
    name: NameArg,
    to: Annotated[str, typer.Option("--to", help="Version to make champion again.")],
    reason: ReasonOpt,
    force: Annotated[bool, typer.Option("--force", help="Allow a version that was never champion.")] = False,
    state: StateOpt = None,
) -> None:
    """Move champion back to an earlier champion, bypassing the gate. Audited."""
    from daetalker.registry.promote import rollback

    typer.echo(rollback(name, to, reason, force=force, state_dir=state).format())

@registry_app.command("reconcile")
def reconcile_cmd(name: NameArg, state: StateOpt = None) -> None:
    """Record the outcome of decisions an outage interrupted (promote and rollback do this first)."""
    from daetalker.registry.promote import reconcile

    done = reconcile(name, state_dir=state)
    for record, outcome in done:
        typer.echo(f"{record.action} v{record.version} ({record.id[:8]}): {outcome.status}, applied {outcome.applied or 'nothing'}")
    if not done:
        typer.echo("nothing to reconcile")

@registry_app.command("verify")
def verify_cmd(
    name: NameArg,
    ref: Annotated[str, typer.Option("--ref", help="Alias (champion, challenger) or version number.")] = "champion",
) -> None:
    """Download a version and check every bundled file against its registered hashes."""
    import tempfile

    from daetalker.bundle import read_manifest
    from daetalker.registry.log_model import fetch_bundle
    from daetalker.registry.names import model_name

    uri = f"models:/{model_name(name)}/{ref}" if ref.isdigit() else f"models:/{model_name(name)}@{ref}"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = fetch_bundle(uri, tmp)
        files = read_manifest(bundle).files
    typer.echo(f"{uri}: {len(files)} files match their registered sha256")

app.add_typer(registry_app, name="registry")
