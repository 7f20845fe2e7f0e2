"""train-speaker: onboard one speaker from footage to a registered, gated model.

The pipeline only wires components; every stage's logic lives in the
``daetalker`` package (one hop from each component). Locally (``kfp.local``,
``daetalker pipeline run``) the caller prepares the run context: the checkout
as workspace and an MLflow parent run. On a cluster the first step opens a
workspace on the data cache.
"""

from kfp import dsl

from components.data import open_workspace, synth_corpus
from daetalker.kubeflow.cluster import ClusterSettings, apply_to_pipeline
from pipelines.stages import train_and_release

NAME = "train-speaker"
DESCRIPTION = ("DAE-Talker: corpus -> preprocess -> validate -> DVC -> (autoencoder) -> DAE -> latents -> "
               "speech2latent -> bundle + sample video -> SyncNet + evaluate -> register + gate")


def build(cluster: ClusterSettings | None = None):
    if cluster is None:
        @dsl.pipeline(name=NAME, description=DESCRIPTION)
        def train_speaker(ctx: str, synth_minutes: float = 2.0, synth_seed: int = 0) -> str:
            corpus = synth_corpus(ctx=ctx, minutes=synth_minutes, seed=synth_seed).set_display_name("synthesise corpus")
            corpus.set_caching_options(False)  # writes into the checkout; a rerun only checks its hashes
            return train_and_release(ctx, corpus.output, cluster=None).output

        return train_speaker

    @dsl.pipeline(name=NAME, description=DESCRIPTION + " (synthetic speaker; on a cluster)")
    def train_speaker_cluster(speaker: str = "synthetic", profile: str = "base128", synth_minutes: float = 2.0,
                              synth_seed: int = 0, thresholds: str = "", dae_nodes: int = 0, s2l_nodes: int = 0,
                              gpus_per_node: int = 1, workspace_root: str = cluster.workspace_root) -> str:
        ws = open_workspace(speaker=speaker, profile=profile, data_rev="", workspace_root=workspace_root,
                            pipeline=NAME, published_if_empty=False)
        ws.set_display_name("open workspace").set_caching_options(False)  # idempotent; refills a wiped cache
        ctx = ws.outputs["ctx"]
        corpus = synth_corpus(ctx=ctx, minutes=synth_minutes, seed=synth_seed).set_display_name("synthesise corpus")
        release = train_and_release(ctx, corpus.output, cluster=cluster, thresholds=thresholds, dae_nodes=dae_nodes,
                                    s2l_nodes=s2l_nodes, gpus_per_node=gpus_per_node)
        apply_to_pipeline(cluster)
        return release.output

    return train_speaker_cluster


train_speaker = build()  # the local pipeline (pipelines.local.run_local)
