"""``daetalker mlflow up|down|status``: the local MLflow tracking server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

StateOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--state",
        envvar="DAETALKER_STATE",
        help="State folder holding mlflow.db, artifacts/, pid, url and log (default: ./.state).",
    ),
]

app = typer.Typer()


mlflow_app = typer.Typer(help="Run the local MLflow tracking server (SQLite + artifact folder).", no_args_is_help=True)

@mlflow_app.command()
def up(
    state: StateOpt = None,
    port: Annotated[
        Optional[int],
        typer.Option(
            "--port",
            min=1024,
            max=65535,
            envvar="DAETALKER_MLFLOW_PORT",
            help="Port on 127.0.0.1 (default: 5000 if free, else a free port).",
        ),
    ] = None,
) -> None:
    """Start the server (no-op if it already runs) and print its URL."""
    from daetalker.services.mlflow_server import MlflowServer

    server = MlflowServer(state, port=port)
    was_up = server.pid is not None
    t0 = time.monotonic()
    url = server.start()
    if not was_up:
        typer.echo(f"MLflow started in {time.monotonic() - t0:.1f} s (log: {server.log_file})", err=True)
    elif port is not None and not url.endswith(f":{port}"):
        typer.echo(f"already running at {url}; `daetalker mlflow down` first to move it to port {port}", err=True)
    typer.echo(url)

@mlflow_app.command()
def down(state: StateOpt = None) -> None:
    """Stop the server (SIGTERM to its process mlflow_app, SIGKILL after 15 s)."""
    from daetalker.services.mlflow_server import MlflowServer

    stopped = MlflowServer(state).stop()
    typer.echo("stopped" if stopped else "not running")

@mlflow_app.command()
def status(state: StateOpt = None) -> None:
    """Print 'up URL' (exit 0) or 'down' (exit 1)."""
    from daetalker.services.mlflow_server import MlflowServer

    server = MlflowServer(state)
    if server.is_healthy():
        typer.echo(f"up {server.url}")
        return
    typer.echo("starting" if server.pid is not None else "down")
    raise typer.Exit(1)

app.add_typer(mlflow_app, name="mlflow")
