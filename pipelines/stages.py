"""Stage wiring the speaker pipelines share, for kfp.local (``cluster=None``) and for a cluster.

On a cluster the DAE and speech2latent steps branch on ``*_nodes``: 0 trains
in the task's own GPU pod, N >= 1 as a PyTorchJob of N pods x ``gpus_per_node``
(the same ``daetalker train-*`` command under torchrun). ``dsl.OneOf`` hands
the branch that ran to the next steps.
"""

from dataclasses import replace
from typing import Any

from kfp import dsl

from components.data import preprocess, validate, version_data
from components.evaluation import evaluate, train_syncnet
from components.registry import package_model, register_and_gate
from components.training import (extract_latents, train_autoencoder, train_dae, train_dae_job, train_s2l,
                                 train_s2l_job)
from daetalker.kubeflow.cluster import ClusterSettings


def _trained(local: Any, job: Any | None) -> tuple[Any, Any]:
    """(result JSON, model artifact) of whichever training task ran."""
    if job is None:
        return local.outputs["Output"], local.outputs["model"]
    return (dsl.OneOf(job.outputs["Output"], local.outputs["Output"]),
            dsl.OneOf(job.outputs["model"], local.outputs["model"]))  # fmt: skip


def _job_settings(cluster: ClusterSettings) -> str:
    """What a job launcher passes on to training pods (the task sizes are not needed there)."""
    return replace(cluster, tasks={}).to_json()


def first_stage_stage(ctx: Any, versioned: Any) -> Any:
    """The first-stage autoencoder a latent-space DAE diffuses in.

    The task is in every graph (the profile, and so ``dae.space``, is a run parameter) and trains
    only when the run's config says ``dae.space: latent``; otherwise it returns at once with no
    checkpoint, and train-dae trains in pixel space.
    """
    return train_autoencoder(ctx=ctx, versioned=versioned).set_display_name("train autoencoder (latent DAE)")


def train_dae_stage(ctx: Any, versioned: Any, first_stage: Any, cluster: ClusterSettings | None, nodes: Any,
                    gpus_per_node: Any) -> tuple[Any, Any]:  # fmt: skip
    first = {"first_stage": first_stage.outputs["Output"], "autoencoder": first_stage.outputs["model"]}
    if cluster is None:
        return _trained(train_dae(ctx=ctx, versioned=versioned, **first).set_display_name("train DAE"), None)
    with dsl.If(nodes > 0, "DAE as a PyTorchJob"):
        job = train_dae_job(ctx=ctx, versioned=versioned, nodes=nodes, gpus_per_node=gpus_per_node,
                            cluster=_job_settings(cluster), **first).set_display_name("train DAE (PyTorchJob)")
    with dsl.Else("DAE in this pod"):
        local = train_dae(ctx=ctx, versioned=versioned, **first).set_display_name("train DAE")
    return _trained(local, job)


def train_s2l_stage(ctx: Any, extracted: Any, latents: Any, cluster: ClusterSettings | None, nodes: Any,
                    gpus_per_node: Any) -> tuple[Any, Any]:  # fmt: skip
    if cluster is None:
        return _trained(train_s2l(ctx=ctx, extracted=extracted, latents=latents)
                        .set_display_name("train speech2latent"), None)  # fmt: skip
    with dsl.If(nodes > 0, "speech2latent as a PyTorchJob"):
        job = train_s2l_job(ctx=ctx, extracted=extracted, latents=latents, nodes=nodes, gpus_per_node=gpus_per_node,
                            cluster=_job_settings(cluster))
        job.set_display_name("train speech2latent (PyTorchJob)")
    with dsl.Else("speech2latent in this pod"):
        local = train_s2l(ctx=ctx, extracted=extracted, latents=latents).set_display_name("train speech2latent")
    return _trained(local, job)


def train_and_release(ctx: Any, raw: Any, *, cluster: ClusterSettings | None, thresholds: Any = "",
                      reason: str = "pipeline train-speaker", dae_nodes: Any = 0, s2l_nodes: Any = 0,
                      gpus_per_node: Any = 1) -> Any:  # fmt: skip
    """preprocess -> validate -> DVC -> (autoencoder) -> DAE -> latents -> speech2latent -> bundle -> SyncNet +
    evaluate -> gate.

    ``raw`` is the output of the step that put the footage into the workspace.
    Returns the register + gate task (never cached: it changes the registry).
    """
    data = preprocess(ctx=ctx, upstream=raw).set_display_name("preprocess")
    checked = validate(ctx=ctx, upstream=data.output).set_display_name("validate")
    versioned = version_data(ctx=ctx, upstream=checked.output).set_display_name("version data (DVC)")
    if cluster is None:  # locally these act on the checkout, which may have changed: rerun (they reuse their work)
        for task in (data, checked, versioned):
            task.set_caching_options(False)
    first_stage = first_stage_stage(ctx, versioned.output)
    trained_dae, dae_model = train_dae_stage(ctx, versioned.output, first_stage, cluster, dae_nodes, gpus_per_node)
    latents = extract_latents(ctx=ctx, trained=trained_dae, dae=dae_model).set_display_name("extract latents")
    trained_s2l, s2l_model = train_s2l_stage(ctx, latents.outputs["Output"], latents.outputs["latents"], cluster,
                                             s2l_nodes, gpus_per_node)  # fmt: skip
    packaged = package_model(ctx=ctx, trained_dae=trained_dae, extracted=latents.outputs["Output"],
                             trained_s2l=trained_s2l, dae=dae_model, latents=latents.outputs["latents"],
                             s2l=s2l_model).set_display_name("bundle + sample video")  # fmt: skip
    expert = train_syncnet(ctx=ctx, versioned=versioned.output).set_display_name("train SyncNet expert")
    evaluated = evaluate(ctx=ctx, packaged=packaged.outputs["Output"], syncnet=expert.outputs["Output"],
                         bundle=packaged.outputs["bundle"], expert=expert.outputs["expert"])
    evaluated.set_display_name("evaluate")
    release = register_and_gate(ctx=ctx, packaged=packaged.outputs["Output"], evaluated=evaluated.outputs["Output"],
                                thresholds=thresholds, reason=reason).set_display_name("register + gate")
    return release.set_caching_options(False)
