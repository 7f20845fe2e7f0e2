"""Components of the release stages: package + sample video, register + gate."""

from kfp import dsl

from components import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def package_model(ctx: str, trained_dae: str, extracted: str, trained_s2l: str,
                  bundle: dsl.Output[dsl.Model]) -> str:
    """Bundle the models (daetalker bundle) and render a held-out sentence (daetalker generate)."""
    import json

    from daetalker.pipeline.steps import package_step

    return json.dumps(package_step(ctx, json.loads(trained_dae)["checkpoint"], json.loads(trained_s2l)["checkpoint"],
                                   json.loads(extracted)["latents_dir"], bundle.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register_and_gate(ctx: str, packaged: str, evaluated: str) -> str:
    """Register talker-<speaker> and run the promotion gate (daetalker register / promote)."""
    import json

    from daetalker.pipeline.steps import register_step

    return json.dumps(register_step(ctx, packaged, evaluated))
