"""Typer options shared by every command that reads a stage config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import os

import typer

ProfileOpt = Annotated[
    str, typer.Option("--profile", "-p", help="Named profile: tiny (CPU), base128, paper256.")
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML file layered over the profile.")
]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1; default: auto.")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override one key, e.g. --set dae.lr=2e-4 (repeatable)."),
]


def stage_config(profile: str, config: Optional[Path], overrides: Optional[list[str]]):
    """Defaults <- profile <- YAML file <- --set overrides, as one typed Config."""
    from daetalker.config import load_config

    return load_config(profile, config, overrides or [])


MlflowOpt = Annotated[
    Optional[bool],
    typer.Option("--mlflow/--no-mlflow", help="Log to MLflow; default: only when MLFLOW_TRACKING_URI is set."),
]
ExperimentOpt = Annotated[str, typer.Option("--experiment", help="MLflow experiment.")]


def mlflow_wanted(flag: Optional[bool], cfg_flag: bool) -> bool:
    """--mlflow/--no-mlflow wins; by default log only when a tracking URI is configured."""
    if flag is not None:
        return flag
    return cfg_flag and bool(os.environ.get("MLFLOW_TRACKING_URI"))


def stage_run(experiment: str, flag: Optional[bool], cfg_flag: bool = True):
    """The :class:`~daetalker.stages.run.StageRun` of a command: its experiment, MLflow on or off."""
    from daetalker.stages.run import StageRun

    return StageRun(experiment, runner="cli", mlflow=mlflow_wanted(flag, cfg_flag))


def echo_json(result: dict) -> None:
    """A stage's result on stdout, for people and scripts (``| jq``)."""
    import json

    typer.echo(json.dumps(result, indent=2, default=str))


def preprocess_progress(console):
    """The per-source line ``preprocess`` and ``speaker add`` print: ok / partial / quarantined, and why."""

    def progress(rel: str, r) -> None:
        mark = {"ok": "[green]ok[/]", "partial": "[yellow]partial[/]"}.get(r.status, "[red]quarantined[/]")
        why = "; ".join(f"{q.reason}: {q.detail}" for q in r.quarantine)
        console.print(f"{mark} {rel}{' (unchanged)' if r.reused else ''}{' - ' + why if why else ''}",
                      highlight=False, markup=True)

    return progress
