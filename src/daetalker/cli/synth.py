"""``daetalker synth``: write a synthetic one-speaker corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer()


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the clips and corpus.json.")],
    minutes: Annotated[float, typer.Option("--minutes", "-m", min=0.05, max=600.0, help="Total length of video to write.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", "-s", min=0, help="Seeds the speaker and every clip.")] = 0,
    size: Annotated[Optional[int], typer.Option("--size", min=32, max=2048, help="Frame side in px (overrides synth.size).")] = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Named profile: tiny, base128, paper256.")
    ] = "tiny",
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", help="YAML file layered over the profile.")
    ] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override one key, e.g. --set synth.crf=20 (repeatable).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Write clips of ONE procedurally drawn speaker: clip_XXXX.mp4 (H.264+AAC, 25 fps),
    .wav (16 kHz mono) and .parquet (per-frame yaw/pitch/roll, mouth_open, viseme, blink,
    voiced), plus corpus.json. The same seed gives the same corpus."""
    from daetalker import outputs
    from daetalker.config import load_config
    from daetalker.synth.corpus import synth_corpus

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--config": config})
    sets = list(overrides or [])
    if size is not None:
        sets.append(f"synth.size={size}")
    cfg = load_config(profile, config, sets)
    path = synth_corpus(out, minutes, seed, cfg.synth, progress=progress)
    typer.echo(str(path))
