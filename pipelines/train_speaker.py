"""train-speaker: onboard one speaker from footage to a registered model.

The pipeline only wires components; every stage's logic lives in the
``daetalker`` package (one hop from each component).
"""

from kfp import dsl

from components.data import synth_corpus, version_data


@dsl.pipeline(name="train-speaker", description="DAE-Talker: data -> DAE -> speech2latent -> evaluate -> register")
def train_speaker(ctx: str, synth_minutes: float = 2.0, synth_seed: int = 0) -> str:
    corpus = synth_corpus(ctx=ctx, minutes=synth_minutes, seed=synth_seed).set_display_name("synthesise corpus")
    versioned = version_data(ctx=ctx, upstream=corpus.output).set_display_name("version data (DVC)")
    return versioned.output
