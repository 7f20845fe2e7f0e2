"""``daetalker data track|push|pull|status|checkout|publish``: the dataset under DVC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RootOpt = Annotated[
    Path, typer.Option("--root", help="The git + DVC repository (default: the current folder).")
]
StateOpt = Annotated[
    Optional[Path],
    typer.Option("--state", envvar="DAETALKER_STATE", help="State folder; the local remote is STATE/dvc-remote."),
]


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help=(
            "Version the dataset with DVC. The remote is S3 when DAETALKER_S3_ENDPOINT and "
            "DAETALKER_S3_BUCKET are set (credentials from AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY), else the repo's default remote, else STATE/dvc-remote."
        ),
        no_args_is_help=True,
    )

    @group.command()
    def track(path: Annotated[Path, typer.Argument(help="File or folder to version.")], root: RootOpt = Path(".")) -> None:
        """Track PATH with DVC (writes PATH.dvc, staged in git) and print its md5."""
        from daetalker.versioning import dvc_repo

        dvc_repo.init_repo(root)
        typer.echo(dvc_repo.track(root, path))

    @group.command()
    def push(root: RootOpt = Path("."), state: StateOpt = None) -> None:
        """Upload the tracked data to the remote."""
        from daetalker.versioning import dvc_repo

        dvc_repo.init_repo(root)
        remote = dvc_repo.select_remote(root, state)
        n = dvc_repo.push(root, remote.name)
        typer.echo(f"{n} files pushed to {remote.describe()}")

    @group.command()
    def pull(root: RootOpt = Path("."), state: StateOpt = None) -> None:
        """Download the tracked data from the remote and check it out."""
        from daetalker.versioning import dvc_repo

        remote = dvc_repo.select_remote(root, state)
        n = dvc_repo.pull(root, remote.name)
        typer.echo(f"{n} files fetched from {remote.describe()}")

    @group.command()
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

    @group.command()
    def checkout(
        rev: Annotated[str, typer.Argument(help="Dataset revision: the md5 data.dvc records, e.g. d1a1...e220.dir.")],
        into: Annotated[Path, typer.Option("--into", help="Folder to make a git + DVC repo holding that data/.")],
        state: StateOpt = None,
    ) -> None:
        """Materialise one dataset revision from the remote into a folder (no git history needed)."""
        from daetalker.versioning import revision

        typer.echo(str(revision.checkout(into, rev, state)))

    @group.command()
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

    app.add_typer(group, name="data")
