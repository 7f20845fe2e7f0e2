"""The training stages: ``train-dae``, ``extract-latents``, ``train-s2l``, ``bundle`` and ``train-syncnet``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli.options import ConfigOpt, DeviceOpt, ProfileOpt, SetOpt
from daetalker.cli.options import data_dvc_for as _data_dvc
from daetalker.cli.options import mlflow_wanted as _mlflow_wanted

app = typer.Typer()


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
    device: DeviceOpt = None,
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
    device: DeviceOpt = None,
) -> None:
    """Encode every frame with the EMA encoder: one latent array per clip, aligned to frames."""
    from daetalker import outputs
    from daetalker.train.latents import extract_latents

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--model": model})
    path = extract_latents(data, model, out, batch_size=batch_size, device=device)
    typer.echo(str(path))


@app.command("train-s2l")
def train_s2l_cmd(
    data: Annotated[Path, typer.Option("--data", help="Preprocessed dataset (manifest.parquet + clips/).")],
    latents: Annotated[Path, typer.Option("--latents", help="Output of `daetalker extract-latents`.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, metrics.jsonl.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest intact checkpoint.")] = False,
    mlflow: Annotated[
        Optional[bool],
        typer.Option("--mlflow/--no-mlflow", help="Log to MLflow; default: only when MLFLOW_TRACKING_URI is set."),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "daetalker-s2l",
    device: DeviceOpt = None,
) -> None:
    """Train speech2latent (with pose adaptor) on DATA's mel and LATENTS. `torchrun` for DDP."""
    from daetalker.config import load_config
    from daetalker.train.loop import NullLogger
    from daetalker.train.s2l_trainer import train_s2l

    from daetalker import outputs

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--latents": latents, "--config": config})
    cfg = load_config(profile, config, set_ or [])
    is_main = int(os.environ.get("RANK", "0")) == 0
    wanted = mlflow if mlflow is not None else cfg.s2l.mlflow and bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if wanted and is_main:
        from daetalker import tracking
        from daetalker.train.loop import MlflowLogger

        with tracking.start_run(experiment, "train-s2l", config=cfg,
                                tags={"daetalker.step": "train-s2l", "data_dir": str(data)}):  # fmt: skip
            result = train_s2l(data, latents, out, cfg, resume=resume, logger=MlflowLogger(), device=device)
    else:
        result = train_s2l(data, latents, out, cfg, resume=resume, logger=NullLogger(), device=device)
    if is_main:
        typer.echo(json.dumps({"checkpoint": str(result.checkpoint), "final_step": result.final_step,
                               "metrics": result.metrics}, indent=2))  # fmt: skip

@app.command("bundle")
def bundle_cmd(
    dae: Annotated[Path, typer.Option("--dae", help="DAE checkpoint (train-dae OUT/checkpoints/latest.pt).")],
    s2l: Annotated[Path, typer.Option("--s2l", help="s2l checkpoint (train-s2l OUT/checkpoints/latest.pt).")],
    latents: Annotated[Path, typer.Option("--latents", help="extract-latents folder (latent_stats.npz).")],
    out: Annotated[Path, typer.Option("--out", help="New bundle folder.")],
) -> None:
    """Write a verified model bundle (what `generate` and the registry load)."""
    from daetalker import outputs
    from daetalker.generate.model import bundle_from_training

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--dae": dae, "--s2l": s2l, "--latents": latents})

    typer.echo(str(bundle_from_training(dae, s2l, latents, out)))


@app.command("train-syncnet")
def train_syncnet_cmd(
    data: Annotated[Path, typer.Option("--data", help="Preprocessed dataset (manifest.parquet + clips/).")],
    out: Annotated[Path, typer.Option("--out", help="Output: latest.pt (+ .sha256), syncnet_report.json.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    mlflow: Annotated[
        Optional[bool],
        typer.Option("--mlflow/--no-mlflow", help="Log to MLflow; default: only when MLFLOW_TRACKING_URI is set."),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "daetalker-syncnet",
) -> None:
    """Train a SyncNet lip-sync expert from scratch on the speaker's data (Wav2Lip's recipe).

    Held-out (val/test) pair accuracy and LSE go to OUT/syncnet_report.json with the
    sha256 of the weights; LSE values are only comparable under the same hash.
    """
    from daetalker import outputs
    from daetalker.config import load_config
    from daetalker.evaluate.syncnet_train import result_dict, train_syncnet
    from daetalker.train.loop import NullLogger

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--config": config})
    cfg = load_config(profile, config, set_ or [])
    if _mlflow_wanted(mlflow, cfg.syncnet.mlflow):
        import mlflow as mlflow_mod

        from daetalker import tracking
        from daetalker.train.loop import MlflowLogger

        with tracking.start_run(experiment, "train-syncnet", config=cfg, data_dvc=_data_dvc(data),
                                tags={"daetalker.step": "train-syncnet", "data_dir": str(data)}):
            result = train_syncnet(data, out, cfg.syncnet, logger=MlflowLogger())
            mlflow_mod.set_tag("syncnet_sha256", result.sha256)
            mlflow_mod.log_artifact(str(result.report))
    else:
        result = train_syncnet(data, out, cfg.syncnet, logger=NullLogger())
    typer.echo(json.dumps(result_dict(result), indent=2))
