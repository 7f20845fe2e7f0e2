"""``daetalker generate``, ``daetalker train-s2l`` and ``daetalker bundle``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli_options import ConfigOpt, ProfileOpt, SetOpt

DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1; default: auto.")]


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_cmd(
        audio: Annotated[Path, typer.Option("--audio", help="Speech: any audio (or video) file ffmpeg reads.")],
        model: Annotated[str, typer.Option("--model", help="Bundle folder or models:/NAME@ALIAS.")],
        out: Annotated[Path, typer.Option("--out", help="Output .mp4 (H.264 + AAC, 25 fps).")],
        pose: Annotated[str, typer.Option("--pose", help="predicted | constant:Y,P,R | reference:CLIP_DIR | FILE.csv")] = "predicted",
        steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="DDIM steps; default dae.sample_steps.")] = None,
        seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the one shared x_T (--noise random).")] = 0,
        noise: Annotated[str, typer.Option("--noise", help="Shared x_T: reference (the bundle's reference frame, "
                                           "DDIM-inverted) or random.")] = "reference",
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Frames decoded per DDIM batch.")] = 16,
        chunk_seconds: Annotated[float, typer.Option("--chunk-seconds", min=0.2, max=600.0, help="Audio per speech2latent pass.")] = 10.0,
        size: Annotated[Optional[int], typer.Option("--size", min=16, max=2048, help="Side of the written frames in px; default "
                                                    "256 or the DAE's size if larger.")] = None,
        crf: Annotated[int, typer.Option("--crf", min=0, max=51, help="x264 quality, 0-51 (lower is better).")] = 10,
        device: DeviceOpt = None,
    ) -> None:
        """Render a talking-face video of AUDIO with a trained talker (one shared x_T, batched DDIM)."""
        from daetalker import outputs
        from daetalker.generate.video import generate_video

        outputs.require_file_target("--out", out, (".mp4",))
        outputs.refuse_inputs("--out", out, {"--audio": audio, "--model": model})

        r = generate_video(model, audio, out, pose=pose, steps=steps, seed=seed, noise=noise, batch_size=batch_size,
                           chunk_seconds=chunk_seconds, video_size=size, crf=crf,
                           device=device)  # fmt: skip
        typer.echo(json.dumps({"path": str(r.path), "n_frames": r.n_frames, "seconds": round(r.seconds, 3),
                               "fps_decode": round(r.fps_decode, 2)}))  # fmt: skip

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
