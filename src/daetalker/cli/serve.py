"""``daetalker serve``: the champion over HTTP on this machine (audio bytes in, mp4 bytes out)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer()


@app.command("serve")
def serve_cmd(
    model: Annotated[str, typer.Option("--model", help="models:/talker-NAME@champion (followed on reload), "
                                       "models:/NAME/VERSION, or a bundle folder.")] = "models:/talker-synthetic@champion",
    port: Annotated[Optional[int], typer.Option("--port", min=0, max=65535, help="TCP port; default serve.port (8090).")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to bind; default 127.0.0.1. Another address "
                                                "only behind an authenticating proxy.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with a serve: section.")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="serve.KEY=VALUE, e.g. --set serve.max_queue=8 "
                                                           "(repeatable).")] = None,
) -> None:
    """Serve a registered talker: POST /invocations (base64 audio -> base64 mp4), GET /health, GET /version,
    POST /reload (follow the alias after a promotion or rollback). Limits come from the serve config."""
    from dataclasses import replace

    from daetalker.config.serve import load_serve_config
    from daetalker.serve.server import serve

    cfg = load_serve_config(config, overrides or [])
    cfg = replace(cfg, port=cfg.port if port is None else port, host=cfg.host if host is None else host)
    serve(model, cfg)
