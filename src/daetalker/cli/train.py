"""The training stages: ``train-autoencoder``, ``train-dae``, ``extract-latents``, ``train-s2l``, ``bundle`` and
``train-syncnet``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli.options import (ConfigOpt, DeviceOpt, ExperimentOpt, MlflowOpt, ProfileOpt, SetOpt, echo_json,
                                   stage_config, stage_run)

app = typer.Typer()


DataOpt = Annotated[Path, typer.Option("--data", help="Preprocessed dataset (manifest.parquet + clips/).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest intact checkpoint in OUT/checkpoints.")]


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 prints


@app.command("train-autoencoder")
def train_autoencoder_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, samples/, metrics.jsonl, "
                                                    "result.json.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "daetalker-autoencoder",
    device: DeviceOpt = None,
) -> None:
    """Train the first-stage autoencoder a latent-space DAE (dae.space=latent) diffuses in.

    Checkpoints land in OUT/checkpoints (latest.pt + numbered), written atomically, each
    with the latent shift/scale set; --resume continues bit-exactly from the newest intact one.
    At the end it scores held-out frames (PSNR, SSIM, mouth r): the ceiling of the talker.
    Pass OUT/checkpoints/latest.pt to `train-dae --autoencoder`.
    """
    from daetalker import outputs
    from daetalker.stages import training

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--config": config})
    cfg = stage_config(profile, config, set_)
    echo_json(training.train_autoencoder(stage_run(experiment, mlflow, cfg.autoencoder.mlflow), data, out, cfg,
                                         resume=resume, device=device))  # fmt: skip


@app.command("train-dae")
def train_dae_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, samples/, metrics.jsonl.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    autoencoder: Annotated[Optional[Path], typer.Option(
        "--autoencoder", help="First-stage checkpoint (train-autoencoder OUT/checkpoints/latest.pt) of a "
                              "dae.space=latent DAE.")] = None,
    resume: ResumeOpt = False,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "daetalker-dae",
    device: DeviceOpt = None,
) -> None:
    """Train the diffusion autoencoder. Launch with `torchrun --nproc_per_node N` for DDP.

    Checkpoints land in OUT/checkpoints (latest.pt + numbered), written atomically;
    --resume continues bit-exactly from the newest intact one.
    """
    from daetalker import outputs
    from daetalker.stages import training

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--config": config, "--autoencoder": autoencoder})
    cfg = stage_config(profile, config, set_)
    result = training.train_dae(stage_run(experiment, mlflow, cfg.dae.mlflow), data, out, cfg, resume=resume,
                                device=device, first_stage=autoencoder)  # fmt: skip
    if _is_main():
        echo_json(result)


@app.command("extract-latents")
def extract_latents_cmd(
    data: DataOpt,
    model: Annotated[Path, typer.Option("--model", help="DAE checkpoint, e.g. RUN/checkpoints/latest.pt.")],
    out: Annotated[Path, typer.Option("--out", help="Output: latents/<clip>.npy, latent_stats.npz, latents.json.")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Frames per encoder batch.")] = 64,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "daetalker-dae",
    device: DeviceOpt = None,
) -> None:
    """Encode every frame with the EMA encoder: one latent array per clip, aligned to frames."""
    from daetalker import outputs
    from daetalker.stages import training

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--model": model})
    result = training.extract_latents(stage_run(experiment, mlflow), data, model, out, batch_size=batch_size,
                                      device=device)  # fmt: skip
    typer.echo(result["latents_dir"])


@app.command("train-s2l")
def train_s2l_cmd(
    data: DataOpt,
    latents: Annotated[Path, typer.Option("--latents", help="Output of `daetalker extract-latents`.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints/, metrics.jsonl.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "daetalker-s2l",
    device: DeviceOpt = None,
) -> None:
    """Train speech2latent (with pose adaptor) on DATA's mel and LATENTS. `torchrun` for DDP."""
    from daetalker import outputs
    from daetalker.stages import training

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--latents": latents, "--config": config})
    cfg = stage_config(profile, config, set_)
    result = training.train_s2l(stage_run(experiment, mlflow, cfg.s2l.mlflow), data, latents, out, cfg,
                                resume=resume, device=device)  # fmt: skip
    if _is_main():
        echo_json(result)


@app.command("bundle")
def bundle_cmd(
    dae: Annotated[Path, typer.Option("--dae", help="DAE checkpoint (train-dae OUT/checkpoints/latest.pt).")],
    s2l: Annotated[Path, typer.Option("--s2l", help="s2l checkpoint (train-s2l OUT/checkpoints/latest.pt).")],
    latents: Annotated[Path, typer.Option("--latents", help="extract-latents folder (latent_stats.npz).")],
    out: Annotated[Path, typer.Option("--out", help="New bundle folder.")],
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "daetalker-bundle",
) -> None:
    """Write a verified model bundle (what `generate` and the registry load)."""
    from daetalker import outputs
    from daetalker.stages import training

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--dae": dae, "--s2l": s2l, "--latents": latents})
    typer.echo(training.package(stage_run(experiment, mlflow), dae, s2l, latents, out)["bundle"])


@app.command("train-syncnet")
def train_syncnet_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Output: latest.pt (+ .sha256), syncnet_report.json.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "daetalker-syncnet",
) -> None:
    """Train a SyncNet lip-sync expert from scratch on the speaker's data (Wav2Lip's recipe).

    Held-out (val/test) pair accuracy and LSE go to OUT/syncnet_report.json with the
    sha256 of the weights; LSE values are only comparable under the same hash.
    """
    from daetalker import outputs
    from daetalker.stages import training

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--data": data, "--config": config})
    cfg = stage_config(profile, config, set_)
    echo_json(training.train_syncnet(stage_run(experiment, mlflow, cfg.syncnet.mlflow), data, out, cfg))
