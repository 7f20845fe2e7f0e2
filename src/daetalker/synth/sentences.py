"""What the speaker says in one clip: random sentences, spoken by espeak-ng in a fresh process.

espeak-ng carries state from one synthesis to the next (the library calls
libc ``rand()`` and keeps internal state; re-seeding with ``srand`` does not
make repeats identical, and ``espeak_Terminate`` + re-initialising deadlocks),
so the same text spoken twice in one process gives different samples, though
the same sequence of calls in a fresh process always gives the same ones. Each clip's speech is therefore synthesised in a new Python process
(``python -m daetalker.synth.sentences``, ~0.1 s), where the library starts
from the state it has after ``espeak_Initialize``: a seed always gives the
same bytes. A subprocess, not multiprocessing: spawn/forkserver re-import the
caller's ``__main__`` and fork copies whatever state espeak already has.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from daetalker.config.synth import SynthConfig
from daetalker.errors import DaetalkerError
from daetalker.synth.speech import synthesize
from daetalker.synth.words import WORDS


@dataclass
class Spoken:
    text: str
    samples: np.ndarray  # (S,) int16 at sample_rate
    sample_rate: int
    phonemes: list[tuple[float, str]]  # (start_s within this sentence, espeak mnemonic)
    gain: float  # loudness factor applied when the clip is mixed
    pause_after: float  # seconds of silence after this sentence


@dataclass
class Script:
    lead: float  # seconds of silence before the first sentence
    spoken: list[Spoken]  # the last one's pause_after is the trailing silence


def draw_sentence(rng: np.random.Generator, cfg: SynthConfig) -> str:
    n = int(rng.integers(cfg.words_per_sentence[0], cfg.words_per_sentence[1] + 1))
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), n)]
    if n >= 6 and rng.random() < 0.4:  # a comma gives a short pause inside the sentence
        words[int(rng.integers(2, n - 2))] += ","
    text = " ".join(words)
    return text[0].upper() + text[1:] + ("?" if rng.random() < 0.15 else ".")


def speak_clip_here(cfg: SynthConfig, seed: np.random.SeedSequence | int, target_seconds: float) -> Script:
    """Sentences until ``target_seconds`` of speech and pauses (runs in the calling process)."""
    rng = np.random.default_rng(seed)
    lead = float(rng.uniform(*cfg.edge_silence_seconds))
    spoken: list[Spoken] = []
    total = lead
    while True:
        text = draw_sentence(rng, cfg)
        utt = synthesize(
            text, cfg.voice,
            rate_wpm=int(rng.integers(cfg.rate_wpm[0], cfg.rate_wpm[1] + 1)),
            pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
            pitch_range=int(rng.integers(40, 71)),
        )
        gain = float(10 ** (rng.uniform(-2.0, 2.0) / 20))  # sentences differ in loudness
        total += len(utt.samples) / utt.sample_rate
        done = total >= target_seconds
        pause = float(rng.uniform(*(cfg.edge_silence_seconds if done else cfg.pause_seconds)))
        spoken.append(Spoken(text, utt.samples, utt.sample_rate, utt.phonemes, gain, pause))
        total += pause
        if done:
            return Script(lead, spoken)


def speak_clip(cfg: SynthConfig, seed: np.random.SeedSequence | int, target_seconds: float) -> Script:
    """:func:`speak_clip_here` in a fresh process, so the result depends on the seed only."""
    # pickle only crosses between this process and its own child: trusted data
    proc = subprocess.run(
        [sys.executable, "-m", "daetalker.synth.sentences"],
        input=pickle.dumps((cfg, seed, target_seconds)), capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise DaetalkerError(
            f"espeak-ng speech worker failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-800:]}"
        )
    return pickle.loads(proc.stdout)


def _worker() -> None:
    cfg, seed, target = pickle.loads(sys.stdin.buffer.read())
    # keep the result channel clean: anything the C library prints goes to stderr
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    script = speak_clip_here(cfg, seed, target)
    result.write(pickle.dumps(script))
    result.close()


if __name__ == "__main__":
    # import by name, so pickled results refer to daetalker.synth.sentences, not __main__
    from daetalker.synth.sentences import _worker as worker

    worker()
