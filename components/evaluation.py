"""Components of the evaluation stages: lip-sync expert, metric suite + report."""

from kfp import dsl

from components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_syncnet(ctx: str, versioned: str, expert: dsl.Output[dsl.Model]) -> str:
    """Train the speaker's SyncNet expert (daetalker train-syncnet)."""
    import json

    from daetalker.stages.steps import train_syncnet_step

    expert.metadata["data_hash"] = json.loads(versioned)["data_hash"]
    return json.dumps(train_syncnet_step(ctx, expert.path))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate(ctx: str, packaged: str, syncnet: str, bundle: dsl.Input[dsl.Model], expert: dsl.Input[dsl.Model],
             report: dsl.Output[dsl.HTML]) -> str:
    """LSE-C/LSE-D, FID, pose and mouth metrics with an HTML report (daetalker evaluate)."""
    import json

    from daetalker.stages.steps import evaluate_step, in_artifact

    in_artifact(json.loads(packaged)["bundle"], bundle.path)
    in_artifact(json.loads(syncnet)["checkpoint"], expert.path)
    return json.dumps(evaluate_step(ctx, packaged, syncnet, report.path))
