"""Components of the release stages: package + sample video, register + gate, fetch, re-gate."""

from kfp import dsl

from components import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def package_model(ctx: str, trained_dae: str, extracted: str, trained_s2l: str, dae: dsl.Input[dsl.Model],
                  latents: dsl.Input[dsl.Dataset], s2l: dsl.Input[dsl.Model], bundle: dsl.Output[dsl.Model]) -> str:
    """Bundle the models (daetalker bundle) and render a held-out sentence (daetalker generate)."""
    import json

    from daetalker.stages.steps import in_artifact, package_step

    return json.dumps(package_step(ctx, in_artifact(json.loads(trained_dae)["checkpoint"], dae.path),
                                   in_artifact(json.loads(trained_s2l)["checkpoint"], s2l.path),
                                   in_artifact(json.loads(extracted)["latents_dir"], latents.path), bundle.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register_and_gate(ctx: str, packaged: str, evaluated: str, thresholds: str = "",
                      reason: str = "pipeline train-speaker") -> str:
    """Register talker-<speaker> and run the promotion gate (daetalker register / promote)."""
    import json

    from daetalker.stages.steps import register_step

    return json.dumps(register_step(ctx, packaged, evaluated, thresholds, reason))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_model(ctx: str, version: str, bundle: dsl.Output[dsl.Model]) -> str:
    """Download a registered version of talker-<speaker> and verify its bundle."""
    import json

    from daetalker.stages.steps import fetch_model_step

    return json.dumps(fetch_model_step(ctx, version, bundle.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promote_version(ctx: str, version: str, evaluated: str, thresholds: str = "",
                    reason: str = "pipeline evaluate-promote") -> str:
    """Record a new evaluation on a registered version and gate it (daetalker promote)."""
    import json

    from daetalker.stages.steps import promote_version_step

    return json.dumps(promote_version_step(ctx, version, evaluated, thresholds, reason))
