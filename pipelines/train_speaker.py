"""train-speaker: onboard one speaker from footage to a registered, gated model.

The pipeline only wires components; every stage's logic lives in the
``daetalker`` package (one hop from each component).
"""

from kfp import dsl

from components.data import preprocess, synth_corpus, validate, version_data
from components.evaluation import evaluate, train_syncnet
from components.registry import package_model, register_and_gate
from components.training import extract_latents, train_dae, train_s2l


@dsl.pipeline(name="train-speaker",
              description="DAE-Talker: corpus -> preprocess -> validate -> DVC -> DAE -> latents -> "
                          "speech2latent -> bundle + sample video -> SyncNet + evaluate -> register + gate")
def train_speaker(ctx: str, synth_minutes: float = 2.0, synth_seed: int = 0) -> str:
    corpus = synth_corpus(ctx=ctx, minutes=synth_minutes, seed=synth_seed).set_display_name("synthesise corpus")
    data = preprocess(ctx=ctx, upstream=corpus.output).set_display_name("preprocess")
    checked = validate(ctx=ctx, upstream=data.output).set_display_name("validate")
    versioned = version_data(ctx=ctx, upstream=checked.output).set_display_name("version data (DVC)")
    dae = train_dae(ctx=ctx, versioned=versioned.output).set_display_name("train DAE")
    latents = extract_latents(ctx=ctx, trained=dae.outputs["Output"]).set_display_name("extract latents")
    s2l = train_s2l(ctx=ctx, extracted=latents.outputs["Output"]).set_display_name("train speech2latent")
    packaged = package_model(ctx=ctx, trained_dae=dae.outputs["Output"], extracted=latents.outputs["Output"],
                             trained_s2l=s2l.outputs["Output"]).set_display_name("bundle + sample video")
    expert = train_syncnet(ctx=ctx, versioned=versioned.output).set_display_name("train SyncNet expert")
    evaluated = evaluate(ctx=ctx, packaged=packaged.outputs["Output"],
                         syncnet=expert.outputs["Output"]).set_display_name("evaluate")
    release = register_and_gate(ctx=ctx, packaged=packaged.outputs["Output"],
                                evaluated=evaluated.outputs["Output"]).set_display_name("register + gate")
    return release.output
