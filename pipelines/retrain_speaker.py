"""retrain-speaker: a new dataset revision for a speaker -> every stage -> gate -> promote.

Also onboards a new speaker whose footage is in the revision (the gate then
has no champion to compare with). An empty ``data_rev`` (what a schedule
passes) means the speaker's published revision (``daetalker data publish``),
resolved by the first step. Every data step is cached on the revision (it is
in the run context they all take), so a rerun on the same revision repeats
only registration and the gate.
"""

from kfp import dsl

from components.data import open_workspace
from daetalker.kubeflow.cluster import ClusterSettings, apply_to_pipeline
from pipelines.stages import train_and_release

NAME = "retrain-speaker"


DESCRIPTION = ("DAE-Talker: dataset revision (DVC md5) -> preprocess -> validate -> DVC -> (autoencoder) -> DAE -> "
               "latents -> speech2latent -> bundle -> evaluate -> gate + promote")


def build(cluster: ClusterSettings | None = None):
    if cluster is None:
        @dsl.pipeline(name=NAME, description=DESCRIPTION + " (kfp.local)")
        def retrain_speaker_local(speaker: str, workspace_root: str, data_rev: str = "", profile: str = "tiny",
                                  overrides: str = "", code: str = "") -> str:
            """``daetalker pipeline run --pipeline retrain-speaker``: the workspace under the state folder."""
            ws = open_workspace(speaker=speaker, profile=profile, data_rev=data_rev, workspace_root=workspace_root,
                                pipeline=NAME, published_if_empty=True, overrides=overrides, code=code,
                                runner="kfp.local")  # fmt: skip
            ws.set_display_name("check out data revision").set_caching_options(False)
            return train_and_release(ws.outputs["ctx"], ws.outputs["versioned"], cluster=None,
                                     reason=f"pipeline {NAME}").output

        return retrain_speaker_local

    @dsl.pipeline(name=NAME, description=DESCRIPTION)
    def retrain_speaker(speaker: str, data_rev: str = "", profile: str = "base128", thresholds: str = "",
                        dae_nodes: int = 0, s2l_nodes: int = 0, gpus_per_node: int = 1,
                        workspace_root: str = cluster.workspace_root) -> str:
        ws = open_workspace(speaker=speaker, profile=profile, data_rev=data_rev, workspace_root=workspace_root,
                            pipeline=NAME, published_if_empty=True)
        ws.set_display_name("check out data revision").set_caching_options(False)  # idempotent; refills a wiped cache
        release = train_and_release(ws.outputs["ctx"], ws.outputs["versioned"], cluster=cluster,
                                    thresholds=thresholds, reason=f"pipeline {NAME}", dae_nodes=dae_nodes,
                                    s2l_nodes=s2l_nodes, gpus_per_node=gpus_per_node)  # fmt: skip
        apply_to_pipeline(cluster)
        return release.output

    return retrain_speaker
