"""Run the Kubeflow pipeline locally (kfp.local) or compile it to KFP YAML (locally or for a cluster).

Locally, each task runs as a subprocess of this interpreter
(``SubprocessRunner(use_venv=False)``), or with ``containers`` in the image
that ``make image`` built (kfp.local's ``DockerRunner`` against podman, see
:mod:`pipelines.containers`); either way it talks to the local MLflow server
through ``MLFLOW_TRACKING_URI`` and writes its data into the workspace.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daetalker.errors import DaetalkerError
from daetalker.kubeflow.context import RunContext

LOCAL_PIPELINES = ("train-speaker", "retrain-speaker")


@dataclass
class LocalRun:
    run_id: str  # MLflow parent run
    tracking_uri: str
    outputs: dict[str, Any]
    seconds: float
    pipeline_root: Path
    steps: dict[str, int]  # status -> number of steps (ok, cached, FAILED)


def repo_root(start: Path | None = None) -> Path:
    """The git checkout that holds data.dvc (the default workspace)."""
    p = (start or Path.cwd()).resolve()
    for cand in (p, *p.parents):
        if (cand / ".git").exists():
            return cand
    return p


def code_version() -> str:
    """sha256 over the sources every task runs (the package, components, pipelines, profiles and gate rules):
    part of every task's input, so changed code is never served from the cache."""
    import hashlib

    import components
    import daetalker

    digest = hashlib.sha256()
    runner_only = {Path(__file__).name, "progress.py", "containers.py"}  # run in this process, not in the tasks
    for top in (Path(daetalker.__file__).parent, Path(components.__file__).parent, Path(__file__).parent):
        for path in sorted(p for p in top.rglob("*") if p.suffix in (".py", ".yaml", ".txt") and p.is_file()):
            if top == Path(__file__).parent and path.name in runner_only:
                continue
            digest.update(str(path.relative_to(top.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _task_runner(stack: ExitStack, containers: bool, workspace: Path, run_id: str) -> Any:
    """SubprocessRunner (this interpreter), or DockerRunner in the image through a podman service
    that ``stack`` stops, with the run's containers that still run (an interrupted run's step)."""
    import kfp.local

    if not containers:
        return kfp.local.SubprocessRunner(use_venv=False)
    from components import CPU_IMAGE
    from daetalker.services import default_state_dir
    from pipelines.containers import (ContainerTasks, PodmanService, podman_gone_container_is_not_found,
                                      require_image, stop_containers, warn_if_stale)  # fmt: skip

    service = stack.enter_context(PodmanService(default_state_dir()))
    stack.callback(stop_containers, service.url, run_id)
    stack.enter_context(podman_gone_container_is_not_found())
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = service.url  # kfp's DockerTaskHandler calls docker.from_env()
    stack.callback(lambda: os.environ.update(DOCKER_HOST=previous) if previous else os.environ.pop("DOCKER_HOST"))
    warn_if_stale(CPU_IMAGE, require_image(service.url, CPU_IMAGE), Path(__file__).resolve().parent)
    return ContainerTasks(CPU_IMAGE, workspace, default_state_dir(), run_id).runner()


def run_local(
    out: Path,
    *,
    speaker: str = "synthetic",
    profile: str = "tiny",
    overrides: list[str] | None = None,
    workspace: Path | None = None,
    synth_minutes: float = 2.0,
    synth_seed: int = 0,
    enable_caching: bool = True,
    show_bar: bool | None = None,
    containers: bool = False,
    pipeline: str = "train-speaker",
    data_rev: str = "",
) -> LocalRun:
    """Run ``pipeline`` with kfp.local: one line per step on the terminal, each step's output in
    ``out/logs/``; with ``containers`` every task runs in the image (:mod:`pipelines.containers`). With
    ``enable_caching`` a task whose inputs (run context with the code version, upstream outputs and
    artifacts) match an earlier run's is served from kfp.local's cache.

    train-speaker synthesises its corpus into ``workspace`` (the checkout). retrain-speaker trains
    ``speaker`` on dataset revision ``data_rev`` (default: the one ``daetalker speaker add`` or
    ``data publish`` published), checked out of the DVC remote into STATE/workspaces/.
    """
    import kfp.local
    import mlflow

    from daetalker import tracking
    from daetalker.kubeflow.context import PARENT_RUN_ENV
    from daetalker.outputs import require_dir_target, write_text
    from daetalker.services.mlflow_server import default_state_dir, ensure_tracking_uri
    from pipelines.progress import StepConsole

    if pipeline not in LOCAL_PIPELINES:
        raise DaetalkerError(f"--pipeline {pipeline}: runs locally are {', '.join(LOCAL_PIPELINES)} "
                             "(evaluate-promote runs on a cluster: `daetalker pipeline submit`)")  # fmt: skip
    if containers and pipeline != "train-speaker":
        raise DaetalkerError(f"--containers --pipeline {pipeline}: only train-speaker runs in containers locally "
                             "(fix: drop --containers; the cluster runs every pipeline in the image)")  # fmt: skip
    if containers:  # before the components are imported: they read the image names then
        from pipelines.containers import one_image_for_every_task

        one_image_for_every_task()

    out = require_dir_target("--out", out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(workspace or repo_root()).resolve()
    uri = ensure_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri  # inherited by the task subprocesses
    ctx = RunContext(speaker=speaker, profile=profile, workspace=str(workspace), overrides=tuple(overrides or ()),
                     code=code_version())  # fmt: skip
    t0 = time.time()
    console = StepConsole(out / "logs", bar=show_bar)
    with tracking.start_run(
        experiment=ctx.experiment_name,
        run_name=f"pipeline-{pipeline}-{time.strftime('%Y%m%d-%H%M%S')}",
        config=ctx.config(),
        tags={"daetalker.step": "pipeline", "daetalker.speaker": speaker, "daetalker.code_version": ctx.code,
              "daetalker.runner": "kfp.local.DockerRunner" if containers else "kfp.local"},
    ) as parent, ExitStack() as stack:
        os.environ[PARENT_RUN_ENV] = parent.info.run_id  # not in ctx: ctx must not change from run to run
        stack.callback(os.environ.pop, PARENT_RUN_ENV, None)
        if "DAETALKER_STATE" not in os.environ:  # where the tasks find the DVC remote `speaker add` pushed to
            os.environ["DAETALKER_STATE"] = str(default_state_dir())
            stack.callback(os.environ.pop, "DAETALKER_STATE", None)
        kfp.local.init(runner=_task_runner(stack, containers, workspace, parent.info.run_id),
                       pipeline_root=str(out / "kfp"),
                       enable_caching=enable_caching, cache_root=str(out / "kfp-cache"))  # fmt: skip
        with console:
            task = _start(pipeline, ctx, synth_minutes=synth_minutes, synth_seed=synth_seed, data_rev=data_rev)
        outputs = json.loads(task.output)
        mlflow.log_dict(outputs, "pipeline_outputs.json")
        seconds = time.time() - t0
        steps = console.summary()
        mlflow.log_metrics({"pipeline_seconds": seconds, "steps_cached": steps.get("cached", 0),
                            "steps_run": steps.get("ok", 0)})  # fmt: skip
        mlflow.log_artifacts(str(out / "logs"), "logs")
    write_text(out / "pipeline_outputs.json", json.dumps(outputs, indent=2))
    return LocalRun(parent.info.run_id, uri, outputs, seconds, out / "kfp", steps)


def _start(pipeline: str, ctx: RunContext, *, synth_minutes: float, synth_seed: int, data_rev: str) -> Any:
    """Run the pipeline's tasks (kfp.local runs a pipeline when it is called); returns its final task."""
    if pipeline == "train-speaker":
        from pipelines.train_speaker import train_speaker

        return train_speaker(ctx=ctx.to_json(), synth_minutes=synth_minutes, synth_seed=synth_seed)
    from daetalker.services.mlflow_server import default_state_dir
    from pipelines.retrain_speaker import build

    return build(None)(speaker=ctx.speaker, workspace_root=str(default_state_dir() / "workspaces"), data_rev=data_rev,
                       profile=ctx.profile, overrides="\n".join(ctx.overrides), code=ctx.code)  # fmt: skip


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
