"""Pipeline steps that train on N nodes x M GPUs as a PyTorchJob instead of in the task's own pod.

The job's pods mount the data-cache PVC that the pipeline's tasks mount (same
namespace), read the dataset from the run's workspace there and write their
run folder beside it, with ``--resume`` so a restarted pod continues from the
newest checkpoint. The step then copies the run into its output artifact, so
the next steps receive the same files as from the in-process step. A failed
job is kept for its logs (the operator removes it a day later); a stopped run
or a timeout deletes it.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

from daetalker.kubeflow import pytorchjob
from daetalker.kubeflow.cluster import ClusterSettings
from daetalker.kubeflow.context import RunContext

JOB_TIMEOUT_S = 7 * 24 * 3600.0


def _config_args(ctx: RunContext) -> list[str]:
    args = ["--profile", ctx.profile]
    for o in ctx.overrides:
        args += ["--set", o]
    return args + ["--resume", "--mlflow", "--experiment", ctx.experiment_name]


def _run_job(stage: str, ctx: RunContext, args_for: Any, out_dir: str, nodes: int, gpus_per_node: int,
             cluster_json: str, api: Any, namespace: str | None, timeout_s: float,
             poll_s: float) -> tuple[str, Path]:  # fmt: skip
    """Create (or adopt) the job for this task, wait for it; returns its name and run folder."""
    settings = ClusterSettings.from_json(cluster_json)
    name = pytorchjob.job_name(stage, out_dir)  # out_dir is unique per pipeline run and task
    run_dir = Path(ctx.workspace) / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    ns = namespace or pytorchjob.current_namespace()
    job = pytorchjob.render(settings, name=name, namespace=ns, args=args_for(run_dir), nodes=nodes,
                            gpus_per_node=gpus_per_node, labels={"daetalker.io/speaker": ctx.speaker})  # fmt: skip
    api = api or pytorchjob.custom_objects_api()
    pytorchjob.create(api, job)
    # A stopped pipeline run SIGTERMs this pod: take the job's GPUs down with it. A timed-out job
    # goes too; its checkpoints stay on the data cache, and a retry resumes from them.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        pytorchjob.wait(api, ns, name, timeout_s=timeout_s, poll_s=poll_s)
    except (pytorchjob.TrainingJobTimeout, SystemExit, KeyboardInterrupt):
        pytorchjob.delete(api, ns, name)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return name, run_dir


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _collect(run_dir: Path, out_dir: str) -> dict[str, Any]:
    """Copy the run (all but the numbered checkpoints) into the artifact; verify its checkpoint."""
    from daetalker import checkpoint as ckpt_io

    out = Path(out_dir)
    shutil.copytree(run_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("step_*.pt", "step_*.pt.sha256"))
    ckpt = out / "checkpoints" / ckpt_io.LATEST
    meta = ckpt_io.verify(ckpt)
    return {"checkpoint": str(ckpt), "step": int(meta["step"]), "sha256": meta["sha256"]}


def _stage_checkpoint(path: str, dest: Path) -> Path:
    """Copy a verified checkpoint and its .sha256 to ``dest`` on the data cache, where a job's pods read it."""
    from daetalker import checkpoint as ckpt_io

    ckpt_io.verify(Path(path))
    dest.mkdir(parents=True, exist_ok=True)
    for src in (Path(path), Path(f"{path}.sha256")):
        shutil.copy2(src, dest / src.name)
    return dest / Path(path).name


def train_dae_job_step(ctx_json: str, data_hash: str, nodes: int, gpus_per_node: int, cluster_json: str,
                       out_dir: str, *, autoencoder: str = "", api: Any = None, namespace: str | None = None,
                       timeout_s: float = JOB_TIMEOUT_S, poll_s: float = 30.0) -> dict[str, Any]:  # fmt: skip
    """``daetalker train-dae`` on ``nodes`` x ``gpus_per_node`` through torchrun; checkpoints land in ``out_dir``.

    ``autoencoder``: the first-stage checkpoint of a latent-space DAE ("" for pixel space), staged beside the run.
    """
    ctx = RunContext.from_json(ctx_json)

    def args(run_dir: Path) -> list[str]:
        first = []
        if autoencoder:
            staged = _stage_checkpoint(autoencoder, run_dir.parent / f"{run_dir.name}-autoencoder")
            first = ["--autoencoder", str(staged)]
        return ["train-dae", "--data", str(ctx.processed_dir()), "--out", str(run_dir), *first, *_config_args(ctx)]

    name, run_dir = _run_job("train-dae", ctx, args, out_dir, nodes, gpus_per_node, cluster_json, api, namespace,
                             timeout_s, poll_s)  # fmt: skip
    return {**_collect(run_dir, out_dir), "job": name, "data_hash": data_hash}


def train_s2l_job_step(ctx_json: str, latents_dir: str, nodes: int, gpus_per_node: int, cluster_json: str,
                       out_dir: str, *, api: Any = None, namespace: str | None = None,
                       timeout_s: float = JOB_TIMEOUT_S, poll_s: float = 30.0) -> dict[str, Any]:  # fmt: skip
    """``daetalker train-s2l`` as a job; the latents are copied next to the run, where its pods can read them."""
    ctx = RunContext.from_json(ctx_json)

    def args(run_dir: Path) -> list[str]:
        staged = run_dir.parent / f"{run_dir.name}-latents"
        shutil.copytree(latents_dir, staged, dirs_exist_ok=True)
        return ["train-s2l", "--data", str(ctx.processed_dir()), "--latents", str(staged), "--out", str(run_dir),
                *_config_args(ctx)]  # fmt: skip

    name, run_dir = _run_job("train-s2l", ctx, args, out_dir, nodes, gpus_per_node, cluster_json, api, namespace,
                             timeout_s, poll_s)  # fmt: skip
    return {**_collect(run_dir, out_dir), "job": name}
