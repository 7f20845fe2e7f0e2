"""Components of the training stages: first-stage autoencoder, DAE, latent extraction, speech2latent.

``*_job`` variants train on N nodes x M GPUs as a PyTorchJob (cluster only);
they wait in a small CPU pod and hand on the same artifacts as the in-process ones.
"""

from kfp import dsl

from components import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_autoencoder(ctx: str, versioned: str, model: dsl.Output[dsl.Model]) -> str:
    """First stage of a latent-space DAE (daetalker train-autoencoder) into ``model``; skipped for pixel space."""
    import json

    from daetalker.stages.steps import train_autoencoder_step

    model.metadata["data_hash"] = json.loads(versioned)["data_hash"]
    return json.dumps(train_autoencoder_step(ctx, model.path))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_dae(ctx: str, versioned: str, first_stage: str, autoencoder: dsl.Input[dsl.Model],
              model: dsl.Output[dsl.Model]) -> str:
    """Train the diffusion autoencoder (daetalker train-dae); checkpoints land in ``model``.

    ``first_stage``: train_autoencoder's output; its checkpoint ("" when skipped) lies in ``autoencoder``."""
    import json

    from daetalker.stages.steps import in_artifact, train_dae_step

    data_hash = json.loads(versioned)["data_hash"]
    model.metadata["data_hash"] = data_hash
    checkpoint = json.loads(first_stage)["checkpoint"]
    checkpoint = checkpoint and in_artifact(checkpoint, autoencoder.path)
    return json.dumps(train_dae_step(ctx, model.path, data_hash, checkpoint))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_dae_job(ctx: str, versioned: str, first_stage: str, autoencoder: dsl.Input[dsl.Model], nodes: int,
                  gpus_per_node: int, cluster: str, model: dsl.Output[dsl.Model]) -> str:
    """train-dae under torchrun as a PyTorchJob of ``nodes`` x ``gpus_per_node``; checkpoints land in ``model``.

    ``first_stage`` / ``autoencoder``: as for train_dae; the checkpoint is staged where the job's pods read it."""
    import json

    from daetalker.kubeflow.distributed import train_dae_job_step
    from daetalker.stages.steps import in_artifact

    data_hash = json.loads(versioned)["data_hash"]
    model.metadata["data_hash"] = data_hash
    checkpoint = json.loads(first_stage)["checkpoint"]
    checkpoint = checkpoint and in_artifact(checkpoint, autoencoder.path)
    return json.dumps(train_dae_job_step(ctx, data_hash, nodes, gpus_per_node, cluster, model.path,
                                         autoencoder=checkpoint))  # fmt: skip


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_latents(ctx: str, trained: str, dae: dsl.Input[dsl.Model], latents: dsl.Output[dsl.Dataset]) -> str:
    """EMA encoder over every frame (daetalker extract-latents)."""
    import json

    from daetalker.stages.steps import extract_latents_step, in_artifact

    checkpoint = in_artifact(json.loads(trained)["checkpoint"], dae.path)
    return json.dumps(extract_latents_step(ctx, checkpoint, latents.path))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_s2l(ctx: str, extracted: str, latents: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model]) -> str:
    """Train speech2latent with pose modelling (daetalker train-s2l)."""
    import json

    from daetalker.stages.steps import in_artifact, train_s2l_step

    return json.dumps(train_s2l_step(ctx, in_artifact(json.loads(extracted)["latents_dir"], latents.path), model.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_s2l_job(ctx: str, extracted: str, latents: dsl.Input[dsl.Dataset], nodes: int, gpus_per_node: int,
                  cluster: str, model: dsl.Output[dsl.Model]) -> str:
    """train-s2l under torchrun as a PyTorchJob of ``nodes`` x ``gpus_per_node``."""
    import json

    from daetalker.kubeflow.distributed import train_s2l_job_step
    from daetalker.stages.steps import in_artifact

    latents_dir = in_artifact(json.loads(extracted)["latents_dir"], latents.path)
    return json.dumps(train_s2l_job_step(ctx, latents_dir, nodes, gpus_per_node, cluster, model.path))
