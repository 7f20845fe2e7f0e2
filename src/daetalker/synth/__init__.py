"""Synthetic speaker corpus (``daetalker synth``): espeak-ng speech, visemes, head motion
and a ray-cast 3-D face, written like real recordings of one person.

Entry points: :func:`daetalker.synth.corpus.write_corpus` / ``synth_corpus`` (write a
corpus), :func:`daetalker.synth.corpus.make_clip` and
:func:`daetalker.synth.corpus.render_clip` (one clip in memory).
"""
