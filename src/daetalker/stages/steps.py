"""The pipeline's steps as plain functions: the Kubeflow components call these.

Each step rebuilds the typed config from the run context, does its stage's
work through the library, and records itself as a nested MLflow run under the
pipeline's parent run. Steps return small JSON-able dicts; bulk data stays in
the workspace (DVC) or in the step's output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daetalker.kubeflow.context import RunContext


def _run(ctx: RunContext, name: str, extra_tags: dict[str, str] | None = None):
    from daetalker import tracking

    tags = {**ctx.tags, "daetalker.step": name, "daetalker.speaker": ctx.speaker, **(extra_tags or {})}
    dvc_file = Path(ctx.workspace) / "data.dvc"
    return tracking.start_run(
        experiment=ctx.experiment_name,
        run_name=name,
        config=ctx.config(),
        tags=tags,
        parent_run_id=ctx.parent_run_id or None,
        repo_root=ctx.workspace,
        data_dvc=dvc_file if dvc_file.is_file() else None,  # lineage: the data this step read
    )


def synth_step(ctx_json: str, minutes: float, seed: int) -> dict[str, Any]:
    """Write the synthetic speaker's corpus into the workspace's raw data folder."""
    import mlflow

    from daetalker.synth.corpus import write_corpus

    ctx = RunContext.from_json(ctx_json)
    cfg = ctx.config()
    out = ctx.raw_dir()
    with _run(ctx, "synth"):
        clips = write_corpus(out, minutes=minutes, seed=seed, cfg=cfg.synth)
        seconds = sum(c.duration_s for c in clips)
        mlflow.log_params({"synth.minutes": minutes, "synth.seed": seed})
        mlflow.log_metrics({"clips": len(clips), "seconds": seconds})
        mlflow.log_artifact(str(out / "corpus.json"))
    return {"raw_dir": str(out), "clips": len(clips), "seconds": seconds}


def preprocess_step(ctx_json: str, upstream: str = "") -> dict[str, Any]:
    """Raw footage -> the training dataset (docs/dataset.md); bad files go to quarantine."""
    import mlflow

    from daetalker.data.preprocess import preprocess_dataset

    ctx = RunContext.from_json(ctx_json)
    cfg = ctx.config()
    src, out = ctx.raw_dir(), ctx.processed_dir()
    with _run(ctx, "preprocess"):
        s = preprocess_dataset(src, out, cfg.preprocess, workers=cfg.preprocess.workers)
        mlflow.log_metrics({
            "sources": s.n_sources, "clips_kept": s.n_clips, "quarantined": s.n_quarantined,
            "frames": s.frames, "seconds_of_video": s.seconds, "wall_seconds": s.wall_s,
            "realtime_factor": s.source_seconds / max(s.wall_s, 1e-9), "peak_rss_mb": s.peak_rss_mb,
        })
        mlflow.log_artifact(str(s.manifest), "dataset")
        mlflow.log_artifact(str(s.quarantine), "dataset")
    return {"data_dir": str(out), "clips": s.n_clips, "quarantined": s.n_quarantined, "frames": s.frames}


def validate_step(ctx_json: str, upstream: str = "") -> dict[str, Any]:
    """great-expectations suites on the dataset; the step fails when the dataset does."""
    import mlflow

    from daetalker.data.validate import validate_dataset

    ctx = RunContext.from_json(ctx_json)
    cfg = ctx.config()
    data = ctx.processed_dir()
    with _run(ctx, "validate"):
        result = validate_dataset(data, cfg.preprocess)
        mlflow.log_metrics({"clips": result.n_clips, "usable_minutes": result.usable_minutes,
                            "expectations_failed": len(result.failed),
                            "validation_success": float(result.success)})
        mlflow.log_artifact(str(result.json_path), "validation")
        mlflow.log_artifact(str(result.html_path), "validation")
        mlflow.set_tag("validation_report", str(result.html_path))
        result.raise_for_failure()
    return {"validation": str(result.json_path), "report": str(result.html_path),
            "usable_minutes": result.usable_minutes}


def version_step(ctx_json: str, upstream: str = "") -> dict[str, Any]:
    """Track the workspace's data/ folder with DVC and push it to the configured remote.

    ``upstream`` is the previous step's output, passed only to order the tasks.
    """
    import mlflow

    from daetalker.versioning import dvc_repo

    ctx = RunContext.from_json(ctx_json)
    root = Path(ctx.workspace)
    with _run(ctx, "version-data"):
        dvc_repo.init_repo(root)
        remote = dvc_repo.configure_remote(root)
        data_hash = dvc_repo.track(root, ctx.data_root)
        dvc_repo.push(root)
        mlflow.set_tags({"dvc.data_hash": data_hash, "dvc.remote": remote.describe()})
        mlflow.log_artifact(str(root / "data.dvc"))
    return {"data_hash": data_hash, "remote": remote.url}


def train_dae_step(ctx_json: str, out_dir: str, data_hash: str = "") -> dict[str, Any]:
    """Train the diffusion autoencoder on the versioned dataset (resumes if ``out_dir`` has checkpoints)."""
    from daetalker.train import checkpoint as ckpt_io
    from daetalker.train.dae_trainer import train_dae

    ctx = RunContext.from_json(ctx_json)
    out = Path(out_dir)
    resume = (out / "checkpoints" / "latest.pt").is_file()
    with _run(ctx, "train-dae", {"dvc.data_hash": data_hash}):
        result = train_dae(ctx.processed_dir(), out, ctx.config(), resume=resume)
    meta = ckpt_io.verify(result.checkpoint)
    return {"checkpoint": str(result.checkpoint), "step": result.final_step,
            "sha256": meta.get("sha256", ""), **{k: float(v) for k, v in result.metrics.items()}}


def extract_latents_step(ctx_json: str, checkpoint: str, out_dir: str) -> dict[str, Any]:
    """EMA encoder over every frame: one latent array per clip plus normalisation statistics."""
    import mlflow

    from daetalker.train.latents import extract_latents

    ctx = RunContext.from_json(ctx_json)
    with _run(ctx, "extract-latents"):
        out = extract_latents(ctx.processed_dir(), Path(checkpoint), Path(out_dir))
        index = read_json(out / "latents.json")
        mlflow.log_dict(index, "latents.json")
        mlflow.log_metric("clips", len(index.get("clips", [])))
    return {"latents_dir": str(out)}


def train_s2l_step(ctx_json: str, latents_dir: str, out_dir: str) -> dict[str, Any]:
    """Train speech2latent (Conformer + pose adaptor) on log-mel -> normalised latents."""
    from daetalker.train.s2l_trainer import train_s2l

    ctx = RunContext.from_json(ctx_json)
    out = Path(out_dir)
    resume = (out / "checkpoints" / "latest.pt").is_file()
    with _run(ctx, "train-s2l"):
        result = train_s2l(ctx.processed_dir(), Path(latents_dir), out, ctx.config(), resume=resume)
    return {"checkpoint": str(result.checkpoint), "step": result.final_step,
            **{k: float(v) for k, v in result.metrics.items()}}


def held_out_audio(data_dir: Path) -> Path:
    """The audio of the first test clip (else val, else any): speech the models never trained on."""
    import pandas as pd

    manifest = pd.read_parquet(Path(data_dir) / "manifest.parquet")
    for split in ("test", "val", "train"):
        rows = manifest[manifest["split"] == split].sort_values("clip_id")
        if len(rows):
            return Path(data_dir) / "clips" / str(rows.iloc[0]["clip_id"]) / "audio.wav"
    raise FileNotFoundError(f"{data_dir}/manifest.parquet lists no clips")


def package_step(ctx_json: str, dae_ckpt: str, s2l_ckpt: str, latents_dir: str, out_dir: str) -> dict[str, Any]:
    """Bundle DAE + speech2latent + latent statistics, and render a held-out sentence with it.

    The step's MLflow run holds the bundle (artifact ``bundle``) that
    ``register`` turns into a model version, and the sample video.
    """
    import mlflow

    from daetalker.generate.model import bundle_from_training
    from daetalker.generate.video import generate_video

    ctx = RunContext.from_json(ctx_json)
    cfg = ctx.config()
    out = Path(out_dir)
    with _run(ctx, "package") as run:
        bundle = bundle_from_training(Path(dae_ckpt), Path(s2l_ckpt), Path(latents_dir), out / "bundle",
                                      meta={"speaker": ctx.speaker, "profile": ctx.profile})
        mlflow.log_artifacts(str(bundle), "bundle")
        audio = held_out_audio(ctx.processed_dir())
        video = generate_video(bundle, audio, out / "sample.mp4", steps=cfg.dae.sample_steps, seed=0,
                               progress=False)
        mlflow.log_artifact(str(video.path), "samples")
        mlflow.log_metrics({"sample_frames": video.n_frames, "sample_decode_fps": video.fps_decode})
        mlflow.set_tag("sample_audio", str(audio))
        run_id = run.info.run_id
    return {"bundle": str(bundle), "bundle_run_id": run_id, "sample_video": str(video.path),
            "sample_frames": video.n_frames}


def train_syncnet_step(ctx_json: str, out_dir: str) -> dict[str, Any]:
    """Train the speaker's lip-sync expert (the SyncNet every LSE value of this run names)."""
    import mlflow

    from daetalker.evaluate.syncnet_train import train_syncnet

    ctx = RunContext.from_json(ctx_json)
    with _run(ctx, "train-syncnet"):
        result = train_syncnet(ctx.processed_dir(), Path(out_dir), ctx.config().syncnet, progress=False)
        mlflow.set_tag("syncnet_sha256", result.sha256)
        mlflow.log_artifact(str(result.report), "syncnet")
    return {"checkpoint": str(result.checkpoint), "sha256": result.sha256, "steps": result.steps}


def champion_metrics(speaker: str) -> dict[str, float] | None:
    """The gate metrics of the current champion of talker-<speaker>, if there is one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from daetalker.registry.names import METRIC_TAG, model_name

    from daetalker.services.mlflow_server import ensure_tracking_uri

    client = MlflowClient(ensure_tracking_uri())
    try:
        version = client.get_registered_model(model_name(speaker)).aliases.get("champion")
    except MlflowException:
        return None
    if version is None:
        return None
    tags = client.get_model_version(model_name(speaker), str(version)).tags
    return {k.removeprefix(METRIC_TAG): float(v) for k, v in tags.items() if k.startswith(METRIC_TAG)}


def evaluate_step(ctx_json: str, packaged: str, syncnet: str, out_dir: str) -> dict[str, Any]:
    """Generate every test clip from its own audio; LSE, FID, pose, M-LMD against ground truth; report."""
    from daetalker.evaluate.evaluate import evaluate_model

    ctx = RunContext.from_json(ctx_json)
    bundle = json.loads(packaged)["bundle"]
    weights = json.loads(syncnet)["checkpoint"]
    with _run(ctx, "evaluate") as run:
        result = evaluate_model(bundle, ctx.processed_dir(), Path(out_dir), syncnet_weights=Path(weights),
                                cfg=ctx.config(), champion_metrics=champion_metrics(ctx.speaker))
        run_id = run.info.run_id
    gate = {k: result.metrics.get(k) for k in ("lse_c", "lse_d", "fid", "pose_mae")}
    return {"eval_run_id": run_id, "metrics": str(result.metrics_path), "report": str(result.report_path), **gate}


def thresholds_file(text: str) -> Path | None:
    """Gate rules given as YAML text (a pipeline parameter) as a file, or None for the packaged rules.

    The file lives in the registry's state folder, named by its content, so the
    path every audit record names stays readable (on a cluster: the data cache).
    """
    import hashlib

    from daetalker.registry.promote import registry_dir

    if not text.strip():
        return None
    path = registry_dir() / f"thresholds-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def register_step(ctx_json: str, packaged: str, evaluated: str, thresholds: str = "",
                  reason: str = "pipeline train-speaker") -> dict[str, Any]:  # fmt: skip
    """Register the bundle as a version of talker-<speaker>, then gate it (challenger / champion).

    Registry calls run outside this step's MLflow run: they open their own
    register and audit runs. ``thresholds``: gate rules as YAML text (empty:
    the packaged rules).
    """
    import mlflow

    from daetalker.registry.promote import promote
    from daetalker.registry.register import register_model

    ctx = RunContext.from_json(ctx_json)
    pkg, ev = json.loads(packaged), json.loads(evaluated)
    version = register_model(pkg["bundle_run_id"], ctx.speaker, eval_run_id=ev["eval_run_id"],
                             pipeline_run_id=ctx.parent_run_id,
                             validation_report=str(ctx.processed_dir() / "validation.html"))
    result = promote(ctx.speaker, version.version, reason=reason, thresholds=thresholds_file(thresholds),
                     origin="pipeline", pipeline_run_id=ctx.parent_run_id)
    with _run(ctx, "register-promote"):
        mlflow.log_text(result.format(), "decision.txt")
        mlflow.set_tags({"registered_model": version.name, "registered_version": version.version,
                         "gate_passed": str(result.passed).lower()})
    return {"model": version.name, "version": version.version, "passed": result.passed,
            "aliases": result.aliases_after, "sample_video": pkg["sample_video"], "report": ev["report"],
            "metrics": ev["metrics"]}


def fetch_model_step(ctx_json: str, version: str, out_dir: str) -> dict[str, Any]:
    """Download registered version ``version`` of talker-<speaker> and verify its bundle (for evaluate)."""
    from daetalker.registry.log_model import fetch_bundle
    from daetalker.registry.names import model_name

    ctx = RunContext.from_json(ctx_json)
    name = model_name(ctx.speaker)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    bundle = fetch_bundle(f"models:/{name}/{version}", Path(out_dir))
    return {"bundle": str(bundle), "model": name, "version": str(version)}


def promote_version_step(ctx_json: str, version: str, evaluated: str, thresholds: str = "",
                         reason: str = "pipeline evaluate-promote") -> dict[str, Any]:  # fmt: skip
    """Make this evaluation the one the gate reads for ``version``, then gate it (challenger / champion)."""
    from daetalker.registry.promote import promote
    from daetalker.registry.register import record_evaluation

    ctx = RunContext.from_json(ctx_json)
    ev = json.loads(evaluated)
    record_evaluation(ctx.speaker, version, ev["eval_run_id"], data_hash=ctx.tags.get("daetalker.data_rev", ""))
    result = promote(ctx.speaker, version, reason=reason, thresholds=thresholds_file(thresholds), origin="pipeline")
    return {"model": result.model, "version": result.version, "passed": result.passed,
            "aliases": result.aliases_after, "report": ev["report"], "metrics": ev["metrics"]}  # fmt: skip


def in_artifact(path: str, artifact_dir: str) -> str:
    """``path`` (recorded by an upstream step), checked to lie in an input artifact of this task.

    On a cluster only declared input artifacts reach a task's pod (the KFP
    launcher downloads each to the path its producer wrote it at), so a path
    outside them would name a file in another pod.
    """
    if not Path(path).is_relative_to(artifact_dir):
        raise ValueError(f"{path} is not inside input artifact {artifact_dir}: declare its artifact as an input")
    return path


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
