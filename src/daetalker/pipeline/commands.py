"""``daetalker pipeline run|compile``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

pipeline_app = typer.Typer(help="Run the Kubeflow pipeline locally (kfp.local) or compile it.",
                           no_args_is_help=True)


@pipeline_app.command("run")
def run(
    out: Annotated[Path, typer.Option(help="Folder for the local pipeline root and outputs.")] = Path("demo-out"),
    profile: Annotated[str, typer.Option("--profile", "-p", help="tiny, base128 or paper256.")] = "tiny",
    speaker: Annotated[str, typer.Option(help="Speaker name (registered model talker-<speaker>).")] = "synthetic",
    minutes: Annotated[float, typer.Option(help="Minutes of synthetic speech to generate.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic speaker.")] = 0,
    workspace: Annotated[Optional[Path], typer.Option(help="DVC repo holding data/ (default: this git checkout).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Config override KEY=VALUE (repeatable).")] = None,
    local: Annotated[bool, typer.Option("--local/--no-local", help="Run with kfp.local (the only runner here).")] = True,
) -> None:
    """Run train-speaker end to end on this machine, logging every step to MLflow."""
    from rich.console import Console

    from daetalker.pipeline.runner import run_local

    result = run_local(out, speaker=speaker, profile=profile, overrides=set_ or [],
                       workspace=workspace, synth_minutes=minutes, synth_seed=seed)
    c = Console()
    c.print(f"[bold green]pipeline finished[/] in {result.seconds:.0f} s")
    c.print(f"MLflow: {result.tracking_uri}  (parent run {result.run_id})")
    for k, v in result.outputs.items():
        c.print(f"  {k}: {v}")


@pipeline_app.command("compile")
def compile_(out: Annotated[Path, typer.Option(help="Output YAML path.")] = Path("pipelines/train-speaker.yaml")) -> None:
    """Write the Kubeflow Pipelines YAML of train-speaker."""
    from daetalker.pipeline.runner import compile_pipeline

    typer.echo(compile_pipeline(out))


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
