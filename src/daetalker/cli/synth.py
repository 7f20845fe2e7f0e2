"""``daetalker synth``: write a synthetic one-speaker corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli.options import ConfigOpt, ExperimentOpt, MlflowOpt, ProfileOpt, SetOpt, stage_config, stage_run

app = typer.Typer()


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the clips and corpus.json.")],
    minutes: Annotated[float, typer.Option("--minutes", "-m", min=0.01, max=600.0, help="Total length of video to write.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", "-s", min=0, help="Seeds the speaker and every clip.")] = 0,
    size: Annotated[Optional[int], typer.Option("--size", min=32, max=2048, help="Frame side in px (overrides synth.size).")] = None,
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "data",
) -> None:
    """Write clips of ONE procedurally drawn speaker: clip_XXXX.mp4 (H.264+AAC, 25 fps),
    .wav (16 kHz mono) and .parquet (per-frame yaw/pitch/roll, mouth_open, viseme, blink,
    voiced), plus corpus.json. The same seed gives the same corpus."""
    from daetalker import outputs
    from daetalker.stages import data as stages

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--config": config})
    cfg = stage_config(profile, config, [*(overrides or []), *([f"synth.size={size}"] if size is not None else [])])
    result = stages.synth(stage_run(experiment, mlflow), out, cfg, minutes=minutes, seed=seed, progress=progress)
    typer.echo(result["corpus"])
