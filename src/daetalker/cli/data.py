"""``daetalker preprocess`` and ``validate`` (videos in, validated dataset out) and ``daetalker data ...`` (DVC)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli.options import (ConfigOpt, ExperimentOpt, MlflowOpt, ProfileOpt, SetOpt, preprocess_progress,
                                   stage_config, stage_run)

RootOpt = Annotated[
    Path, typer.Option("--root", help="The git + DVC repository (default: the current folder).")
]
StateOpt = Annotated[
    Optional[Path],
    typer.Option("--state", envvar="DAETALKER_STATE", help="State folder; the local remote is STATE/dvc-remote."),
]

app = typer.Typer()


@app.command()
def preprocess(
    in_dir: Annotated[Path, typer.Option("--in", help="Folder of speaker videos (searched recursively).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset folder to write (see docs/dataset.md).")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-j", min=1,
                                                   help="Clips processed in parallel (default: preprocess.workers).")] = None,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "data",
) -> None:
    """Cut every video into fixed face crops at 25 fps with 16 kHz audio, log-mel, pose and mouth labels.

    Bad inputs go to OUT/quarantine.parquet with the reason; unchanged sources are skipped on a rerun.
    Exits 2 when no clip is kept (the reports are still written).
    """
    from rich.console import Console

    from daetalker import outputs
    from daetalker.data.dataset import PER_SOURCE
    from daetalker.stages import data as stages

    outputs.require_dir_target("--out", out_dir)
    outputs.refuse_inputs("--out", out_dir, {"--in": in_dir, "--config": config})
    cfg = stage_config(profile, config, overrides)
    s = stages.preprocess(stage_run(experiment, mlflow), in_dir, out_dir, cfg, workers=workers,
                          progress=preprocess_progress(Console(stderr=True)))
    rtf = s.source_seconds / s.wall_s if s.wall_s else 0.0
    typer.echo(f"{s.n_clips} clips ({s.frames} frames, {s.seconds / 60:.2f} min) in {s.manifest}; "
               f"{s.n_quarantined} quarantined in {s.quarantine}; {s.n_reused} source(s) unchanged; "
               f"{s.source_seconds:.1f} s of video in {s.wall_s:.1f} s ({rtf:.1f}x real time)")
    typer.echo(f"splits {s.split_strategy}: " + ", ".join(f"{k} {v}" for k, v in s.splits.items())
               + ("" if s.split_strategy == PER_SOURCE else
                  " (too few recordings to split by source: each segment's end is held out)"))


@app.command()
def validate(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder written by `daetalker preprocess`.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the report to MLflow.")] = True,
    experiment: ExperimentOpt = "data",
) -> None:
    """Check the dataset with great-expectations; write validation.json/.html beside it; exit 2 if it fails."""
    from daetalker.stages import data as stages

    result = stages.validate(stage_run(experiment, mlflow), data, stage_config(profile, config, overrides))
    typer.echo(f"{result.evaluated - len(result.failed)}/{result.evaluated} expectations passed on "
               f"{result.n_clips} clips ({result.usable_minutes:.2f} usable min); report {result.html_path}")
    result.raise_for_failure()


data_app = typer.Typer(
    help=(
        "Version the dataset with DVC. The remote is S3 when DAETALKER_S3_ENDPOINT and "
        "DAETALKER_S3_BUCKET are set (credentials from AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY), else the repo's default remote, else STATE/dvc-remote."
    ),
    no_args_is_help=True,
)

@data_app.command()
def track(path: Annotated[Path, typer.Argument(help="File or folder to version.")], root: RootOpt = Path(".")) -> None:
    """Track PATH with DVC (writes PATH.dvc, staged in git) and print its md5."""
    from daetalker.versioning import dvc_repo

    dvc_repo.init_repo(root)
    typer.echo(dvc_repo.track(root, path))

@data_app.command()
def push(root: RootOpt = Path("."), state: StateOpt = None) -> None:
    """Upload the tracked data to the remote."""
    from daetalker.versioning import dvc_repo

    dvc_repo.init_repo(root)
    remote = dvc_repo.select_remote(root, state)
    n = dvc_repo.push(root, remote.name)
    typer.echo(f"{n} files pushed to {remote.describe()}")

@data_app.command()
def pull(root: RootOpt = Path("."), state: StateOpt = None) -> None:
    """Download the tracked data from the remote and check it out."""
    from daetalker.versioning import dvc_repo

    remote = dvc_repo.select_remote(root, state)
    n = dvc_repo.pull(root, remote.name)
    typer.echo(f"{n} files fetched from {remote.describe()}")

@data_app.command()
def status(root: RootOpt = Path("."), state: StateOpt = None) -> None:
    """Show what the remote lacks or holds beyond the local cache (exit 1 if out of sync)."""
    from daetalker.versioning import dvc_repo

    remote = dvc_repo.select_remote(root, state)
    changes = dvc_repo.status(root, remote.name)["changes"]
    if not changes:
        typer.echo(f"in sync with {remote.describe()}")
        return
    for target, states in changes.items():
        typer.echo(f"{target}: {states}")
    raise typer.Exit(1)

@data_app.command()
def checkout(
    rev: Annotated[str, typer.Argument(help="Dataset revision: the md5 data.dvc records, e.g. d1a1...e220.dir.")],
    into: Annotated[Path, typer.Option("--into", help="Folder to make a git + DVC repo holding that data/.")],
    state: StateOpt = None,
) -> None:
    """Materialise one dataset revision from the remote into a folder (no git history needed)."""
    from daetalker.versioning import revision

    typer.echo(str(revision.checkout(into, rev, state)))

@data_app.command()
def publish(
    speaker: Annotated[str, typer.Option("--speaker", "-s", help="Speaker whose scheduled retraining should use it.")],
    rev: Annotated[Optional[str], typer.Option("--rev", help="Dataset revision (default: the md5 in ROOT/data.dvc).")] = None,
    root: RootOpt = Path("."),
    state: StateOpt = None,
) -> None:
    """Point SPEAKER's scheduled retraining at a dataset revision (push the data first)."""
    from daetalker.registry.audit import current_actor
    from daetalker.registry.names import model_name
    from daetalker.versioning import dvc_repo, revision

    speaker = model_name(speaker).removeprefix("talker-")
    remote = dvc_repo.select_remote(root, state)
    record = revision.publish(remote, speaker, rev or dvc_repo.data_hash(root), current_actor().name)
    typer.echo(f"{speaker}: {record['rev']} published beside {remote.describe()}")

app.add_typer(data_app, name="data")
