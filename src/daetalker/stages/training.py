"""The training stages as the CLI and the pipeline run them: first-stage autoencoder, DAE, latents,
speech2latent, bundle, SyncNet.

Each adapter opens the stage's MLflow run (:class:`~daetalker.stages.run.StageRun`),
calls the library, logs what the stage made and returns a small JSON-able dict.
Under ``torchrun`` only rank 0 logs.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from daetalker.config import Config
from daetalker.stages.run import StageRun


def _rank0(run: StageRun) -> StageRun:
    return run if int(os.environ.get("RANK", "0")) == 0 else replace(run, mlflow=False)


def train_autoencoder(run: StageRun, data_dir: Path, out_dir: Path, cfg: Config, *, resume: bool | None = None,
                      device: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Train the first-stage autoencoder a latent-space DAE diffuses in, then score it on held-out frames.

    ``resume=None`` resumes when ``out_dir`` holds a checkpoint (a retried task). The held-out
    report (PSNR, SSIM, mouth r: ``evaluate.first_stage``) joins ``result.json`` as ``held_out``.
    """
    import json

    from daetalker import checkpoint as ckpt_io
    from daetalker.evaluate.first_stage import finite_metrics, score_first_stage
    from daetalker.models.device import pick_device
    from daetalker.models.loading import load_first_stage
    from daetalker.outputs import write_text
    from daetalker.train.autoencoder_trainer import train_autoencoder as train

    out_dir = Path(out_dir)
    if resume is None:
        resume = (out_dir / "checkpoints" / ckpt_io.LATEST).is_file()
    with run.open("train-autoencoder", cfg, data_dir):
        result = train(Path(data_dir), out_dir, cfg, resume=resume, device=device)
        model, acfg, sha = load_first_stage(result.checkpoint, pick_device(0, device))
        held_out = score_first_stage(model, Path(data_dir), frames=acfg.eval_frames, pcfg=cfg.preprocess)
        summary = {**json.loads((out_dir / "result.json").read_text()), "sha256": sha, "held_out": held_out,
                   "latent_shift": model.shift.tolist(), "latent_scale": model.scale.tolist()}
        write_text(out_dir / "result.json", json.dumps(summary, indent=2))
        if run.mlflow:
            import mlflow

            mlflow.log_metrics(finite_metrics(held_out), step=result.final_step)
            mlflow.set_tag("first_stage_sha256", sha)
            mlflow.log_artifact(str(out_dir / "metrics.jsonl"))
            mlflow.log_artifact(str(out_dir / "result.json"))
    return {"checkpoint": str(result.checkpoint), "final_step": result.final_step, "sha256": sha,
            "metrics": {k: float(v) for k, v in result.metrics.items()}, "held_out": held_out}


def train_dae(run: StageRun, data_dir: Path, out_dir: Path, cfg: Config, *, resume: bool | None = None,
              device: str | None = None, first_stage: Path | str | None = None) -> dict[str, Any]:  # fmt: skip
    """Train the DAE; ``resume=None`` resumes when ``out_dir`` holds a checkpoint (a retried task).

    ``first_stage``: the ``train-autoencoder`` checkpoint a ``dae.space: latent`` DAE diffuses in
    (None or "" for a pixel-space DAE); recorded on the run as ``first_stage``.
    """
    from daetalker import checkpoint as ckpt_io
    from daetalker.train.dae_trainer import train_dae as train

    out_dir = Path(out_dir)
    if resume is None:
        resume = (out_dir / "checkpoints" / ckpt_io.LATEST).is_file()
    first = Path(first_stage) if first_stage else None
    run = _rank0(run)
    with run.open("train-dae", cfg, data_dir, {"first_stage": str(first) if first else "none"}):
        result = train(Path(data_dir), out_dir, cfg, resume=resume, device=device, first_stage=first)
        if run.mlflow:
            import mlflow

            mlflow.log_artifact(str(out_dir / "metrics.jsonl"))
    meta = ckpt_io.verify(result.checkpoint)
    return {"checkpoint": str(result.checkpoint), "final_step": result.final_step, "sha256": meta.get("sha256", ""),
            "metrics": {k: float(v) for k, v in result.metrics.items()}}


def extract_latents(run: StageRun, data_dir: Path, checkpoint: Path, out_dir: Path, cfg: Config | None = None, *,
                    batch_size: int = 64, device: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The EMA encoder over every frame: one latent array per clip plus normalisation statistics."""
    import json

    from daetalker.train.latents import extract_latents as extract

    with run.open("extract-latents", cfg, data_dir, {"dae_checkpoint": str(checkpoint)}):
        out = extract(Path(data_dir), Path(checkpoint), Path(out_dir), batch_size=batch_size, device=device)
        if run.mlflow:
            import mlflow

            index = json.loads((out / "latents.json").read_text())
            mlflow.log_dict(index, "latents.json")
            mlflow.log_metric("clips", len(index.get("clips", [])))
    return {"latents_dir": str(out)}


def train_s2l(run: StageRun, data_dir: Path, latents_dir: Path, out_dir: Path, cfg: Config, *,
              resume: bool | None = None, device: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Train speech2latent (Conformer + pose adaptor) on log-mel -> normalised latents."""
    from daetalker import checkpoint as ckpt_io
    from daetalker.train.s2l_trainer import train_s2l as train

    out_dir = Path(out_dir)
    if resume is None:
        resume = (out_dir / "checkpoints" / ckpt_io.LATEST).is_file()
    run = _rank0(run)
    with run.open("train-s2l", cfg, data_dir, {"latents_dir": str(latents_dir)}):
        result = train(Path(data_dir), Path(latents_dir), out_dir, cfg, resume=resume, device=device)
    return {"checkpoint": str(result.checkpoint), "final_step": result.final_step,
            "metrics": {k: float(v) for k, v in result.metrics.items()}}


def held_out_audio(data_dir: Path) -> Path:
    """The audio of the first test clip (else val, else any): speech the models never trained on."""
    from daetalker.errors import DaetalkerError
    from daetalker.train.frames_dataset import read_manifest

    manifest = read_manifest(data_dir)
    for split in ("test", "val", "train"):
        rows = manifest[manifest["split"] == split].sort_values("clip_id")
        if len(rows):
            return Path(data_dir) / "clips" / str(rows.iloc[0]["clip_id"]) / "audio.wav"
    raise DaetalkerError(f"{Path(data_dir) / 'manifest.parquet'}: lists no clips (fix: re-run `daetalker preprocess`)")


def package(run: StageRun, dae_ckpt: Path, s2l_ckpt: Path, latents_dir: Path, bundle_dir: Path,
            cfg: Config | None = None, *, data_dir: Path | None = None, sample_audio: Path | None = None,
            sample_video: Path | None = None, meta: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Bundle DAE + speech2latent + latent statistics into ``bundle_dir``; render ``sample_audio`` to ``sample_video``.

    The run holds the bundle (artifact ``bundle``, what ``register`` turns into a
    model version) and the sample video; ``data_dir``, the dataset the models were
    trained on, gives it (and so the registered version) its data lineage.
    """
    from daetalker.bundle.build import bundle_from_training

    with run.open("package", cfg, data_dir, {"dae_checkpoint": str(dae_ckpt), "s2l_checkpoint": str(s2l_ckpt)}) as active:
        bundle = bundle_from_training(Path(dae_ckpt), Path(s2l_ckpt), Path(latents_dir), Path(bundle_dir), meta=meta)
        if run.mlflow:
            import mlflow

            mlflow.log_artifacts(str(bundle), "bundle")
        result: dict[str, Any] = {"bundle": str(bundle), "bundle_run_id": active.info.run_id if active else ""}
        if sample_audio is not None and sample_video is not None:
            result.update(_sample_video(run, bundle, Path(sample_audio), Path(sample_video), cfg))
    return result


def _sample_video(run: StageRun, bundle: Path, audio: Path, out: Path, cfg: Config | None) -> dict[str, Any]:
    """Render ``audio`` with the new bundle: the video a person looks at first."""
    from daetalker.generate.video import generate_video

    video = generate_video(bundle, audio, out, steps=cfg.dae.sample_steps if cfg else None, seed=0, progress=False)
    if run.mlflow:
        import mlflow

        mlflow.log_artifact(str(video.path), "samples")
        mlflow.log_metrics({"sample_frames": video.n_frames, "sample_decode_fps": video.fps_decode})
        mlflow.set_tag("sample_audio", str(audio))
    return {"sample_video": str(video.path), "sample_frames": video.n_frames}


def train_syncnet(run: StageRun, data_dir: Path, out_dir: Path, cfg: Config, *,
                  progress: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """Train the speaker's lip-sync expert (the SyncNet every LSE value of its evaluations names)."""
    from daetalker.evaluate.syncnet_train import result_dict
    from daetalker.evaluate.syncnet_train import train_syncnet as train

    with run.open("train-syncnet", cfg, data_dir):
        result = train(Path(data_dir), Path(out_dir), cfg.syncnet, progress=progress)
        if run.mlflow:
            import mlflow

            mlflow.set_tag("syncnet_sha256", result.sha256)
            mlflow.log_artifact(str(result.report), "syncnet")
    return result_dict(result)
