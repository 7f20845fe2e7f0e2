"""evaluate-promote: score a registered version on a dataset revision, then gate and promote it.

The new evaluation becomes the one the gate reads for that version
(``record_evaluation``); the version becomes challenger, and champion only if
every threshold holds. Evaluation is cached on (revision, version); the gate
never is. An empty ``data_rev`` means the speaker's published revision.
"""

from kfp import dsl

from components.data import open_workspace, validate
from components.evaluation import evaluate, train_syncnet
from components.registry import fetch_model, promote_version
from daetalker.kubeflow.cluster import ClusterSettings, apply_to_pipeline

NAME = "evaluate-promote"


def build(cluster: ClusterSettings | None = None):
    @dsl.pipeline(name=NAME, description="DAE-Talker: registered version + dataset revision -> SyncNet expert "
                                         "-> evaluate -> gate + promote")
    def evaluate_promote(speaker: str, version: str, data_rev: str = "", profile: str = "base128",
                         thresholds: str = "", reason: str = f"pipeline {NAME}",
                         workspace_root: str = cluster.workspace_root if cluster else ".state/workspaces") -> str:
        ws = open_workspace(speaker=speaker, profile=profile, data_rev=data_rev, workspace_root=workspace_root,
                            pipeline=NAME, published_if_empty=True)
        ws.set_display_name("check out data revision").set_caching_options(False)  # idempotent; refills a wiped cache
        ctx, versioned = ws.outputs["ctx"], ws.outputs["versioned"]
        checked = validate(ctx=ctx, upstream=versioned).set_display_name("validate")
        model = fetch_model(ctx=ctx, version=version).set_display_name("fetch registered version")
        expert = train_syncnet(ctx=ctx, versioned=versioned).after(checked).set_display_name("train SyncNet expert")
        evaluated = evaluate(ctx=ctx, packaged=model.outputs["Output"], syncnet=expert.outputs["Output"],
                             bundle=model.outputs["bundle"], expert=expert.outputs["expert"])
        evaluated.set_display_name("evaluate")
        gate = promote_version(ctx=ctx, version=version, evaluated=evaluated.outputs["Output"],
                               thresholds=thresholds, reason=reason)
        gate.set_display_name("gate + promote").set_caching_options(False)  # it changes the registry
        apply_to_pipeline(cluster)
        return gate.output

    return evaluate_promote
