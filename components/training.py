"""Components of the training stages: DAE, latent extraction."""

from kfp import dsl

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_dae(ctx: str, versioned: str, model: dsl.Output[dsl.Model]) -> str:
    """Train the diffusion autoencoder (daetalker train-dae); checkpoints land in ``model``."""
    import json

    from daetalker.pipeline.steps import train_dae_step

    data_hash = json.loads(versioned)["data_hash"]
    model.metadata["data_hash"] = data_hash
    return json.dumps(train_dae_step(ctx, model.path, data_hash))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_latents(ctx: str, trained: str, latents: dsl.Output[dsl.Dataset]) -> str:
    """EMA encoder over every frame (daetalker extract-latents)."""
    import json

    from daetalker.pipeline.steps import extract_latents_step

    return json.dumps(extract_latents_step(ctx, json.loads(trained)["checkpoint"], latents.path))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_s2l(ctx: str, extracted: str, model: dsl.Output[dsl.Model]) -> str:
    """Train speech2latent with pose modelling (daetalker train-s2l)."""
    import json

    from daetalker.pipeline.steps import train_s2l_step

    return json.dumps(train_s2l_step(ctx, json.loads(extracted)["latents_dir"], model.path))
