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


def mlflow_wanted(flag: Optional[bool], cfg_flag: bool) -> bool:
    """--mlflow/--no-mlflow wins; by default log only when a tracking URI is configured."""
    if flag is not None:
        return flag
    return cfg_flag and bool(os.environ.get("MLFLOW_TRACKING_URI"))


def data_dvc_for(data: Path) -> Path | None:
    """The .dvc file that versions ``data`` (``<data>.dvc`` beside it), for the lineage tags."""
    candidate = data.resolve().with_name(data.resolve().name + ".dvc")
    return candidate if candidate.is_file() else None
