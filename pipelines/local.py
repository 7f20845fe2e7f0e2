"""Run the Kubeflow pipeline locally (kfp.local) or compile it to KFP YAML (locally or for a cluster).

Locally, each task runs as a subprocess of this interpreter
(``SubprocessRunner(use_venv=False)``), talks to the local MLflow server
through ``MLFLOW_TRACKING_URI`` and writes its data into the workspace.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daetalker.kubeflow.context import RunContext


@dataclass
class LocalRun:
    run_id: str  # MLflow parent run
    tracking_uri: str
    outputs: dict[str, Any]
    seconds: float
    pipeline_root: Path


def repo_root(start: Path | None = None) -> Path:
    """The git checkout that holds data.dvc (the default workspace)."""
    p = (start or Path.cwd()).resolve()
    for cand in (p, *p.parents):
        if (cand / ".git").exists():
            return cand
    return p


def run_local(
    out: Path,
    *,
    speaker: str = "synthetic",
    profile: str = "tiny",
    overrides: list[str] | None = None,
    workspace: Path | None = None,
    synth_minutes: float = 2.0,
    synth_seed: int = 0,
    enable_caching: bool = False,
) -> LocalRun:
    import kfp.local
    import mlflow

    from daetalker import tracking
    from daetalker.outputs import require_dir_target, write_text
    from daetalker.services.mlflow_server import ensure_tracking_uri
    from pipelines.train_speaker import train_speaker

    out = require_dir_target("--out", out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(workspace or repo_root()).resolve()
    uri = ensure_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri  # inherited by the task subprocesses

    ctx = RunContext(speaker=speaker, profile=profile, workspace=str(workspace),
                     overrides=tuple(overrides or ()))
    t0 = time.time()
    with tracking.start_run(
        experiment=ctx.experiment_name,
        run_name=f"pipeline-train-speaker-{time.strftime('%Y%m%d-%H%M%S')}",
        config=ctx.config(),
        tags={"daetalker.step": "pipeline", "daetalker.speaker": speaker,
              "daetalker.runner": "kfp.local"},
    ) as parent:
        ctx = RunContext(**{**ctx.__dict__, "parent_run_id": parent.info.run_id})
        kfp.local.init(
            runner=kfp.local.SubprocessRunner(use_venv=False),
            pipeline_root=str(out / "kfp"),
            enable_caching=enable_caching,
        )
        task = train_speaker(ctx=ctx.to_json(), synth_minutes=synth_minutes, synth_seed=synth_seed)
        outputs = json.loads(task.output)
        mlflow.log_dict(outputs, "pipeline_outputs.json")
        seconds = time.time() - t0
        mlflow.log_metric("pipeline_seconds", seconds)
    write_text(out / "pipeline_outputs.json", json.dumps(outputs, indent=2))
    return LocalRun(parent.info.run_id, uri, outputs, seconds, out / "kfp")


def compile_pipeline(path: Path, name: str = "train-speaker", cluster: bool = False) -> Path:
    """Write the KFP IR YAML of pipeline ``name`` (default: train-speaker as kfp.local runs it).

    ``cluster`` builds it for Kubeflow Pipelines on Kubernetes: the
    kfp-kubernetes settings of ``daetalker.kubeflow.cluster`` on every task.
    """
    from kfp import compiler

    import pipelines

    from daetalker import outputs

    path = outputs.require_file_target("--out", path, (".yaml", ".yml"))
    with outputs.atomic_path(path) as tmp:  # a failed compile leaves the previous YAML, not half of one
        compiler.Compiler().compile(pipelines.build(name, cluster), str(tmp))
    return path
