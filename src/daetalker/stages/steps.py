"""The pipeline's steps: what a Kubeflow component calls, one line over a stage adapter.

Each step turns the run context (JSON) into the stage's paths, typed config and
:class:`~daetalker.stages.run.StageRun`, and calls the same adapter the CLI
calls, so both log the same MLflow run. Steps return small JSON-able dicts;
bulk data stays in the workspace (DVC) or in the step's output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daetalker.kubeflow.context import RunContext
from daetalker.stages import data as data_stages
from daetalker.stages import training
from daetalker.stages.run import StageRun


def stage_run(ctx: RunContext) -> StageRun:
    """The run context as the stages see it: the pipeline's experiment, parent run and tags."""
    tags = dict(ctx.tags)
    runner = tags.pop("daetalker.runner", "kfp.local")
    return StageRun(ctx.experiment_name, runner=runner, speaker=ctx.speaker, parent_run_id=ctx.pipeline_run_id,
                    tags=tags)


def synth_step(ctx_json: str, minutes: float, seed: int) -> dict[str, Any]:
    """Write the synthetic speaker's corpus into the workspace's raw data folder."""
    ctx = RunContext.from_json(ctx_json)
    return data_stages.synth(stage_run(ctx), ctx.raw_dir(), ctx.config(), minutes=minutes, seed=seed)


def preprocess_step(ctx_json: str, upstream: str = "") -> dict[str, Any]:
    """Raw footage -> the training dataset (docs/dataset.md); bad files go to quarantine."""
    ctx = RunContext.from_json(ctx_json)
    s = data_stages.preprocess(stage_run(ctx), ctx.raw_dir(), ctx.processed_dir(), ctx.config())
    return {"data_dir": str(ctx.processed_dir()), "clips": s.n_clips, "quarantined": s.n_quarantined,
            "frames": s.frames, "split_strategy": s.split_strategy}


def validate_step(ctx_json: str, upstream: str = "") -> dict[str, Any]:
    """great-expectations suites on the dataset; the step fails when the dataset does."""
    ctx = RunContext.from_json(ctx_json)
    result = data_stages.validate(stage_run(ctx), ctx.processed_dir(), ctx.config())
    result.raise_for_failure()
    return {"validation": str(result.json_path), "report": str(result.html_path),
            "usable_minutes": result.usable_minutes}


def version_step(ctx_json: str, upstream: str = "") -> dict[str, Any]:
    """Track the workspace's data/ folder with DVC and push it to the configured remote.

    ``upstream`` is the previous step's output, passed only to order the tasks.
    """
    ctx = RunContext.from_json(ctx_json)
    return data_stages.version(stage_run(ctx), Path(ctx.workspace), ctx.data_root.name, ctx.config())


def train_autoencoder_step(ctx_json: str, out_dir: str) -> dict[str, Any]:
    """Train the first-stage autoencoder when the run's DAE diffuses its latent grid (``dae.space: latent``).

    A pixel-space run skips it at once: ``checkpoint`` is "" and nothing is trained or logged.
    Resumes if ``out_dir`` has checkpoints.
    """
    ctx = RunContext.from_json(ctx_json)
    cfg = ctx.config()
    if cfg.dae.space != "latent":
        skipped = {"checkpoint": "", "skipped": f"dae.space is {cfg.dae.space!r}: the DAE uses no autoencoder"}
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # the task's output artifact exists either way
        (Path(out_dir) / "skipped.json").write_text(json.dumps(skipped))
        return skipped
    return training.train_autoencoder(stage_run(ctx), ctx.processed_dir(), Path(out_dir), cfg)


def train_dae_step(ctx_json: str, out_dir: str, data_hash: str = "", first_stage: str = "") -> dict[str, Any]:
    """Train the diffusion autoencoder on the versioned dataset (resumes if ``out_dir`` has checkpoints).

    ``first_stage``: the autoencoder checkpoint of a latent-space DAE ("" for a pixel-space one).
    """
    ctx = RunContext.from_json(ctx_json)
    return training.train_dae(stage_run(ctx), ctx.processed_dir(), Path(out_dir), ctx.config(),
                              first_stage=first_stage or None)


def extract_latents_step(ctx_json: str, checkpoint: str, out_dir: str) -> dict[str, Any]:
    """EMA encoder over every frame: one latent array per clip plus normalisation statistics."""
    ctx = RunContext.from_json(ctx_json)
    return training.extract_latents(stage_run(ctx), ctx.processed_dir(), Path(checkpoint), Path(out_dir), ctx.config())


def train_s2l_step(ctx_json: str, latents_dir: str, out_dir: str) -> dict[str, Any]:
    """Train speech2latent (Conformer + pose adaptor) on log-mel -> normalised latents."""
    ctx = RunContext.from_json(ctx_json)
    return training.train_s2l(stage_run(ctx), ctx.processed_dir(), Path(latents_dir), Path(out_dir), ctx.config())


def package_step(ctx_json: str, dae_ckpt: str, s2l_ckpt: str, latents_dir: str, out_dir: str) -> dict[str, Any]:
    """Bundle DAE + speech2latent + latent statistics, and render a held-out sentence with it."""
    ctx = RunContext.from_json(ctx_json)
    out = Path(out_dir)
    return training.package(stage_run(ctx), Path(dae_ckpt), Path(s2l_ckpt), Path(latents_dir), out / "bundle",
                            ctx.config(), data_dir=ctx.processed_dir(),
                            sample_audio=training.held_out_audio(ctx.processed_dir()),
                            sample_video=out / "sample.mp4", meta={"speaker": ctx.speaker, "profile": ctx.profile})


def train_syncnet_step(ctx_json: str, out_dir: str) -> dict[str, Any]:
    """Train the speaker's lip-sync expert (the SyncNet every LSE value of this run names)."""
    ctx = RunContext.from_json(ctx_json)
    return training.train_syncnet(stage_run(ctx), ctx.processed_dir(), Path(out_dir), ctx.config(), progress=False)


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
    """Generate every held-out clip (val and test: no model trained on them) from its own audio; LSE, FID,
    pose, M-LMD against ground truth; report."""
    from daetalker.registry.names import GATE_METRICS
    from daetalker.stages.evaluation import evaluate

    ctx = RunContext.from_json(ctx_json)
    cfg = ctx.config()
    result = evaluate(stage_run(ctx), json.loads(packaged)["bundle"], ctx.processed_dir(), Path(out_dir), cfg,
                      syncnet_weights=Path(json.loads(syncnet)["checkpoint"]),
                      champion_metrics=champion_metrics(ctx.speaker), split="heldout",
                      max_clips=cfg.evaluate.max_clips or None)  # fmt: skip
    keep = ("eval_run_id", "metrics", "report", *GATE_METRICS)
    return {k: result.get(k) for k in keep}


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

    from daetalker.registry.promote import aliases, promote
    from daetalker.registry.register import DuplicateBundle, register_model

    ctx = RunContext.from_json(ctx_json)
    pkg, ev = json.loads(packaged), json.loads(evaluated)
    out = {"sample_video": pkg["sample_video"], "report": ev["report"], "metrics": ev["metrics"]}
    try:
        version = register_model(pkg["bundle_run_id"], ctx.speaker, eval_run_id=ev["eval_run_id"],
                                 pipeline_run_id=ctx.pipeline_run_id,
                                 validation_report=str(ctx.processed_dir() / "validation.html"))  # fmt: skip
    except DuplicateBundle as e:  # retrained to the same bytes: that version stands, its decision too
        return {"model": e.name, "version": e.version, "passed": None, "aliases": aliases(ctx.speaker),
                "registered": f"identical to v{e.version}", **out}
    if not version.created:  # the bundle's run was registered before (a cached package step)
        return {"model": version.name, "version": version.version, "passed": None, "aliases": aliases(ctx.speaker),
                "registered": f"already v{version.version}", **out}
    result = promote(ctx.speaker, version.version, reason=reason, thresholds=thresholds_file(thresholds),
                     origin="pipeline", pipeline_run_id=ctx.pipeline_run_id)
    with stage_run(ctx).open("register-promote", ctx.config(), ctx.processed_dir()):
        mlflow.log_text(result.format(), "decision.txt")
        mlflow.set_tags({"registered_model": version.name, "registered_version": version.version,
                         "gate_passed": str(result.passed).lower()})
    return {"model": version.name, "version": version.version, "passed": result.passed,
            "aliases": result.aliases_after, "registered": "new", **out}


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
