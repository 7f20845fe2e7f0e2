"""``daetalker train-dae`` and ``daetalker extract-latents``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli_options import ConfigOpt, ProfileOpt, SetOpt
from daetalker.cli_options import data_dvc_for as _data_dvc
from daetalker.cli_options import mlflow_wanted as _mlflow_wanted


def register(app: typer.Typer) -> None:
    @app.command("train-dae")
    def train_dae_cmd(
        data: Annotated[Path, typer.Option("--data", help="Preprocessed dataset (manifest.parquet + clips/).")],
        out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, samples/, metrics.jsonl.")],
        profile: ProfileOpt = "tiny",
        config: ConfigOpt = None,
        set_: SetOpt = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue from the newest intact checkpoint in OUT/checkpoints.")
        ] = False,
        mlflow: Annotated[
            Optional[bool],
            typer.Option("--mlflow/--no-mlflow", help="Log to MLflow; default: only when MLFLOW_TRACKING_URI is set."),
        ] = None,
        experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "daetalker-dae",
        device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1; default: auto.")] = None,
    ) -> None:
        """Train the diffusion autoencoder. Launch with `torchrun --nproc_per_node N` for DDP.

        Checkpoints land in OUT/checkpoints (latest.pt + numbered), written atomically;
        --resume continues bit-exactly from the newest intact one.
        """
        from daetalker import outputs
        from daetalker.config import load_config
        from daetalker.train.dae_trainer import train_dae

        outputs.require_dir_target("--out", out)
        outputs.refuse_inputs("--out", out, {"--data": data, "--config": config})
        cfg = load_config(profile, config, set_ or [])
        is_main = int(os.environ.get("RANK", "0")) == 0
        if _mlflow_wanted(mlflow, cfg.dae.mlflow) and is_main:
            from daetalker import tracking
            from daetalker.train.loop import MlflowLogger

            with tracking.start_run(
                experiment, "train-dae", config=cfg, tags={"daetalker.step": "train-dae", "data_dir": str(data)},
                data_dvc=_data_dvc(data),
            ):
                result = train_dae(data, out, cfg, resume=resume, logger=MlflowLogger(), device=device)
                import mlflow as mlflow_mod

                mlflow_mod.log_artifact(str(out / "metrics.jsonl"))
        else:
            from daetalker.train.loop import NullLogger

            result = train_dae(data, out, cfg, resume=resume, logger=NullLogger(), device=device)
        if is_main:
            typer.echo(json.dumps({"checkpoint": str(result.checkpoint), "final_step": result.final_step,
                                   "metrics": result.metrics}, indent=2))

    @app.command("extract-latents")
    def extract_latents_cmd(
        data: Annotated[Path, typer.Option("--data", help="Preprocessed dataset (manifest.parquet + clips/).")],
        model: Annotated[Path, typer.Option("--model", help="DAE checkpoint, e.g. RUN/checkpoints/latest.pt.")],
        out: Annotated[Path, typer.Option("--out", help="Output: latents/<clip>.npy, latent_stats.npz, latents.json.")],
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Frames per encoder batch.")] = 64,
        device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda; default: auto.")] = None,
    ) -> None:
        """Encode every frame with the EMA encoder: one latent array per clip, aligned to frames."""
        from daetalker import outputs
        from daetalker.train.latents import extract_latents

        outputs.require_dir_target("--out", out)
        outputs.refuse_inputs("--out", out, {"--data": data, "--model": model})
        path = extract_latents(data, model, out, batch_size=batch_size, device=device)
        typer.echo(str(path))
