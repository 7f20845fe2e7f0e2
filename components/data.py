"""Components of the data stages: workspace at a revision, synthetic corpus, preprocessing, validation, DVC."""

from typing import NamedTuple

from kfp import dsl

from components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def open_workspace(speaker: str, profile: str, data_rev: str, workspace_root: str, pipeline: str,
                   published_if_empty: bool, overrides: str = "", code: str = "",
                   runner: str = "kfp") -> NamedTuple("Workspace", [("ctx", str), ("versioned", str)]):
    """Check dataset revision ``data_rev`` out of the DVC remote into the data cache (daetalker data checkout)."""
    from collections import namedtuple

    from daetalker.kubeflow.workspace import open_workspace_step

    opened = open_workspace_step(speaker, profile, data_rev, workspace_root, pipeline, published_if_empty,
                                 overrides, code, runner)  # fmt: skip
    return namedtuple("Workspace", ["ctx", "versioned"])(*opened)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def synth_corpus(ctx: str, minutes: float, seed: int) -> str:
    """Write the synthetic speaker's clips into the workspace (daetalker synth)."""
    import json

    from daetalker.stages.steps import synth_step

    return json.dumps(synth_step(ctx, minutes, seed))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preprocess(ctx: str, upstream: str) -> str:
    """Raw footage -> fixed-crop frames, labels, log-mel (daetalker preprocess)."""
    import json

    from daetalker.stages.steps import preprocess_step

    return json.dumps(preprocess_step(ctx, upstream))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate(ctx: str, upstream: str) -> str:
    """great-expectations suites; fails the pipeline when the dataset fails (daetalker validate)."""
    import json

    from daetalker.stages.steps import validate_step

    return json.dumps(validate_step(ctx, upstream))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def version_data(ctx: str, upstream: str) -> str:
    """dvc add data/ and push it to the configured remote; returns the data hash."""
    import json

    from daetalker.stages.steps import version_step

    return json.dumps(version_step(ctx, upstream))
