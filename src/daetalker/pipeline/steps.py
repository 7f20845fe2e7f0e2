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

from daetalker.pipeline.context import RunContext


def _run(ctx: RunContext, name: str, extra_tags: dict[str, str] | None = None):
    from daetalker import tracking

    tags = {**ctx.tags, "daetalker.step": name, "daetalker.speaker": ctx.speaker, **(extra_tags or {})}
    return tracking.start_run(
        experiment=ctx.experiment_name,
        run_name=name,
        config=ctx.config(),
        tags=tags,
        parent_run_id=ctx.parent_run_id or None,
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
        mlflow.set_tags({"dvc.data_hash": data_hash, "dvc.remote": str(remote)})
        mlflow.log_artifact(str(root / "data.dvc"))
    return {"data_hash": data_hash, "remote": str(remote)}


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
