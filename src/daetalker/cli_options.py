"""Typer options shared by every command that reads a stage config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ProfileOpt = Annotated[
    str, typer.Option("--profile", "-p", help="Named profile: tiny (CPU), base128, paper256.")
]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML file layered over the profile.")
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override one key, e.g. --set dae.lr=2e-4 (repeatable)."),
]


def stage_config(profile: str, config: Optional[Path], overrides: Optional[list[str]]):
    """Defaults <- profile <- YAML file <- --set overrides, as one typed Config."""
    from daetalker.config import load_config

    return load_config(profile, config, overrides or [])
