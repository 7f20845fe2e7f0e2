"""``daetalker speaker add``: a new speaker's footage -> a versioned, published dataset revision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daetalker.cli.options import (ConfigOpt, MlflowOpt, ProfileOpt, SetOpt, mlflow_wanted, preprocess_progress,
                                   stage_config)

app = typer.Typer()
speaker_app = typer.Typer(help="Onboard speakers: their footage in, a dataset revision to train on out.",
                          no_args_is_help=True)  # fmt: skip


@speaker_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Speaker name: lower-case letters, digits, '-' or '_' "
                                        "(the registered model is talker-NAME).")],
    videos: Annotated[Path, typer.Option("--videos", help="Folder of the speaker's videos (searched recursively; "
                                         "symlinks followed, the bytes are copied in).")],
    root: Annotated[Path, typer.Option("--root", help="The git + DVC checkout (default: the current folder).")]
    = Path("."),
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    mlflow: MlflowOpt = None,
) -> None:
    """Copy NAME's videos into data/raw/NAME, preprocess, validate, version with DVC, push and publish.

    --set values are kept with the footage (data/raw/NAME/speaker.yaml, versioned with it) and every
    retrain-speaker run applies them; a later add's --set changes one key and keeps the others.
    Rerun it with more footage: unchanged files are not redone. Then train, evaluate and gate with
    `daetalker pipeline run --pipeline retrain-speaker --speaker NAME` (on a cluster: `pipeline
    submit` or `schedule`, which pick up the revision published here).
    """
    from rich.console import Console

    from daetalker.config.speaker import SETTINGS_FILE, merge_settings, read_settings
    from daetalker.kubeflow.context import RunContext
    from daetalker.registry.audit import current_actor
    from daetalker.registry.names import model_name
    from daetalker.stages.onboard import add_speaker

    speaker = model_name(name).removeprefix("talker-")
    raw_dir = RunContext(speaker=speaker, profile=profile, workspace=str(root)).raw_dir()
    settings = merge_settings(read_settings(raw_dir), overrides or [])  # an earlier add's --set, then this one's
    cfg = stage_config(profile, config, list(settings))
    done = add_speaker(speaker, videos, root, cfg, mlflow=mlflow_wanted(mlflow, True), settings=settings,
                       progress=preprocess_progress(Console(stderr=True)), actor=current_actor().name)  # fmt: skip
    if settings:
        typer.echo(f"{speaker}: settings kept in {raw_dir / SETTINGS_FILE} for every retrain: {' '.join(settings)}")
    typer.echo(f"{speaker}: {done.footage.copied} file(s) copied in, {done.footage.unchanged} unchanged; "
               f"{done.clips} clips ({done.usable_minutes:.2f} usable min), {done.quarantined} quarantined "
               f"(see {done.data_dir / 'quarantine.parquet'}); validation report {done.validation_report}")
    typer.echo(f"{speaker}: data revision {done.data_rev} pushed and published beside {done.remote}")
    typer.echo(f"next: daetalker pipeline run --pipeline retrain-speaker --speaker {speaker} --profile {profile}")


app.add_typer(speaker_app, name="speaker")
