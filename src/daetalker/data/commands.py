"""``daetalker preprocess`` and ``daetalker validate``: videos in, validated dataset out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli_options import ConfigOpt, ProfileOpt, SetOpt, stage_config


def register(app: typer.Typer) -> None:
    @app.command()
    def preprocess(
        in_dir: Annotated[Path, typer.Option("--in", help="Folder of speaker videos (searched recursively).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Dataset folder to write (see docs/dataset.md).")],
        profile: ProfileOpt = "tiny",
        config: ConfigOpt = None,
        overrides: SetOpt = None,
        workers: Annotated[Optional[int], typer.Option("--workers", "-j",
                                                       help="Clips processed in parallel (default: preprocess.workers).")] = None,
    ) -> None:
        """Cut every video into fixed face crops at 25 fps with 16 kHz audio, log-mel, pose and mouth labels.

        Bad inputs go to OUT/quarantine.parquet with the reason; unchanged sources are skipped on a rerun.
        Exits 2 when no clip is kept (the reports are still written).
        """
        from rich.console import Console

        from daetalker.data.dataset import PER_SOURCE
        from daetalker.data.preprocess import preprocess_dataset

        from daetalker import outputs

        outputs.require_dir_target("--out", out_dir)
        outputs.refuse_inputs("--out", out_dir, {"--in": in_dir, "--config": config})
        cfg = stage_config(profile, config, overrides).preprocess
        console = Console(stderr=True)

        def progress(rel: str, r) -> None:
            mark = {"ok": "[green]ok[/]", "partial": "[yellow]partial[/]"}.get(r.status, "[red]quarantined[/]")
            why = "; ".join(f"{q.reason}: {q.detail}" for q in r.quarantine)
            console.print(f"{mark} {rel}{' (unchanged)' if r.reused else ''}{' - ' + why if why else ''}",
                          highlight=False, markup=True)

        s = preprocess_dataset(in_dir, out_dir, cfg, workers=workers or cfg.workers, progress=progress)
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
    ) -> None:
        """Check the dataset with great-expectations; write validation.json/.html beside it; exit 2 if it fails."""
        from daetalker.data.validate import validate_dataset

        cfg = stage_config(profile, config, overrides).preprocess
        result = validate_dataset(data, cfg, log_mlflow=mlflow)
        typer.echo(f"{result.evaluated - len(result.failed)}/{result.evaluated} expectations passed on "
                   f"{result.n_clips} clips ({result.usable_minutes:.2f} usable min); report {result.html_path}")
        result.raise_for_failure()
