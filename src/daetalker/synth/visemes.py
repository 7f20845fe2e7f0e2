"""Phoneme timings -> per-frame mouth shape (opening, spread, teeth) and viseme labels.

Each espeak-ng phoneme maps to one viseme class (the 15-class set used by
lip-sync tools: sil, PP, FF, TH, DD, kk, CH, SS, nn, RR, aa, E, I, O, U);
diphthongs split into two halves. Each class has a target jaw/lip opening
(0 = lips together, 1 = wide open), lip spread (-1 rounded .. +1 wide) and
how much the upper teeth show (f/v tuck the lower lip under them; s, th and
spread vowels bare them).

Coarticulation: the targets form a step signal sampled at 1 kHz, smoothed by
a zero-phase, non-overshooting filter (a one-pole low-pass with the configured
time constant run forward and then backward; a causal critically damped filter
lagged the audio by ~100 ms), so a mouth shape is anticipated and carried over
into its neighbours. Bilabials (m/b/p) and silences must actually close the
lips, which a slow filter would never do between two vowels, so the smoothed
opening is multiplied by a fast-smoothed gate that is 0 during those phonemes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from daetalker.synth.speech import is_pause

CONTROL_RATE = 1000  # Hz of the internal mouth-shape signal

# class -> (opening 0..1, spread -1..1, teeth 0..1)
VISEME_TARGETS: dict[str, tuple[float, float, float]] = {
    "sil": (0.0, 0.0, 0.0),
    "PP": (0.0, -0.1, 0.0),
    "FF": (0.10, 0.15, 1.0),
    "TH": (0.20, 0.1, 0.7),
    "DD": (0.26, 0.2, 0.3),
    "nn": (0.20, 0.15, 0.2),
    "kk": (0.32, 0.0, 0.2),
    "CH": (0.22, -0.55, 0.5),
    "SS": (0.12, 0.55, 0.8),
    "RR": (0.25, -0.5, 0.1),
    "aa": (0.95, 0.1, 0.3),
    "E": (0.58, 0.45, 0.5),
    "I": (0.30, 0.85, 0.6),
    "O": (0.72, -0.75, 0.0),
    "U": (0.28, -1.0, 0.0),
}
VISEMES: tuple[str, ...] = tuple(VISEME_TARGETS)
_GATED = ("sil", "PP")  # classes whose lips are fully closed

_DIPHTHONGS: dict[str, tuple[str, str]] = {
    "aI": ("aa", "I"), "aI3": ("aa", "I"), "aI@": ("aa", "E"), "aU": ("aa", "U"),
    "eI": ("E", "I"), "oU": ("O", "U"), "OI": ("O", "I"), "e@": ("E", "E"),
    "i@": ("I", "E"), "i@3": ("I", "RR"), "U@": ("U", "E"), "O@": ("O", "RR"),
    "A@": ("aa", "RR"), "o@": ("O", "RR"),
}
# single phonemes by exact espeak mnemonic (en / en-us); digits and '#' are variants
_EXACT: dict[str, str] = {
    "p": "PP", "b": "PP", "m": "PP",
    "f": "FF", "v": "FF",
    "T": "TH", "D": "TH",
    "t": "DD", "d": "DD", "t#": "DD", "t2": "DD", "d#": "DD",
    "n": "nn", "l": "nn", "@L": "nn", "n-": "nn", "L": "nn",
    "k": "kk", "g": "kk", "N": "kk", "h": "kk", "x": "kk", "?": "kk",
    "S": "CH", "Z": "CH", "tS": "CH", "dZ": "CH", "j": "CH", ";": "CH",
    "s": "SS", "z": "SS",
    "r": "RR", "r-": "RR", "3:": "RR", "3": "RR", "R": "RR",
    "w": "U", "u:": "U", "U": "U", "u": "U",
    "a": "aa", "aa": "aa", "A:": "aa", "A": "aa", "a#": "aa", "V": "aa",
    "E": "E", "@": "E", "@2": "E", "@-": "E", "@5": "E", "e": "E",
    "i": "I", "i:": "I", "I": "I", "I#": "I", "I2": "I",
    "0": "O", "O:": "O", "O2": "O", "O": "O", "o": "O",
}


def phoneme_visemes(phoneme: str) -> tuple[str, ...]:
    """espeak mnemonic -> one or two viseme classes (diphthongs split in halves)."""
    if is_pause(phoneme):
        return ("sil",)
    if phoneme in _DIPHTHONGS:
        return _DIPHTHONGS[phoneme]
    if phoneme in _EXACT:
        return (_EXACT[phoneme],)
    # unknown variant: fall back on its first character, then a neutral vowel
    return (_EXACT.get(phoneme[0], "E"),)


@dataclass
class MouthTrack:
    opening: np.ndarray  # (N,) float32 in [0, 1], per video frame (mean over the frame)
    spread: np.ndarray  # (N,) float32 in [-1, 1]
    teeth: np.ndarray  # (N,) float32 in [0, 1]
    viseme: list[str]  # (N,) class active at the frame centre
    voiced: np.ndarray  # (N,) bool: speech (not a pause) at the frame centre


def segments_from_phonemes(
    phonemes: list[tuple[float, str]], end_s: float
) -> list[tuple[float, float, str]]:
    """(start_s, name) events -> (start_s, end_s, viseme) segments covering [0, end_s)."""
    segs: list[tuple[float, float, str]] = []
    cursor = 0.0
    for k, (t0, name) in enumerate(phonemes):
        t1 = phonemes[k + 1][0] if k + 1 < len(phonemes) else end_s
        t0, t1 = max(t0, cursor), min(max(t1, t0), end_s)
        if t0 > cursor:
            segs.append((cursor, t0, "sil"))
        if t1 <= t0:
            continue
        parts = phoneme_visemes(name)
        step = (t1 - t0) / len(parts)
        for j, v in enumerate(parts):
            segs.append((t0 + j * step, t0 + (j + 1) * step, v))
        cursor = t1
    if cursor < end_s:
        segs.append((cursor, end_s, "sil"))
    return segs


def _smooth(x: np.ndarray, tau_s: float, rate: int) -> np.ndarray:
    """Zero-phase smoothing that never overshoots: a one-pole low-pass run forward, then backward.

    The kernel is exp(-|t| / tau) / (2 tau): symmetric, so shapes are anticipated
    as much as carried over (no lag behind the audio) and nothing overshoots.
    """
    if tau_s <= 0:
        return x.copy()
    a = 1.0 - np.exp(-1.0 / (tau_s * rate))
    y, _ = lfilter([a], [1.0, -(1.0 - a)], x, zi=np.array([(1 - a) * x[0]]))  # start at rest
    y = y[::-1]
    y, _ = lfilter([a], [1.0, -(1.0 - a)], y, zi=np.array([(1 - a) * y[0]]))
    return y[::-1]


def mouth_track(
    segments: list[tuple[float, float, str]],
    n_frames: int,
    fps: int,
    tau_ms: float,
    emphasis: np.ndarray | None = None,
) -> MouthTrack:
    """Viseme segments -> per-frame mouth opening/spread/teeth with coarticulation.

    ``emphasis`` (one factor per segment) scales the opening so the same vowel
    is not identical every time (stress, loudness).
    """
    n_ctrl = int(round(n_frames / fps * CONTROL_RATE))
    open_t = np.zeros(n_ctrl, np.float64)  # (n_ctrl,) target opening at 1 kHz
    spread_t = np.zeros(n_ctrl, np.float64)
    teeth_t = np.zeros(n_ctrl, np.float64)
    gate_t = np.zeros(n_ctrl, np.float64)  # 1 where lips may part
    label = np.zeros(n_ctrl, np.int16)
    for k, (t0, t1, v) in enumerate(segments):
        i0, i1 = int(round(t0 * CONTROL_RATE)), int(round(t1 * CONTROL_RATE))
        o, s, th = VISEME_TARGETS[v]
        open_t[i0:i1] = o * (1.0 if emphasis is None else emphasis[k])
        spread_t[i0:i1] = s
        teeth_t[i0:i1] = th
        gate_t[i0:i1] = 0.0 if v in _GATED else 1.0
        label[i0:i1] = VISEMES.index(v)
    tau = tau_ms / 1000.0
    opening = _smooth(open_t, tau, CONTROL_RATE)
    opening *= _smooth(gate_t, tau / 3.0, CONTROL_RATE)
    spread = _smooth(spread_t, tau * 1.5, CONTROL_RATE)
    teeth = _smooth(teeth_t, tau, CONTROL_RATE)

    per = CONTROL_RATE // fps  # 40 control steps per frame at 25 fps
    opening = np.clip(opening[: n_frames * per].reshape(n_frames, per).mean(1), 0.0, 1.0)
    spread = np.clip(spread[: n_frames * per].reshape(n_frames, per).mean(1), -1.0, 1.0)
    teeth = np.clip(teeth[: n_frames * per].reshape(n_frames, per).mean(1), 0.0, 1.0)
    centre = np.arange(n_frames) * per + per // 2
    names = [VISEMES[i] for i in label[centre]]
    voiced = np.array([n != "sil" for n in names], bool)
    f32 = np.float32
    return MouthTrack(opening.astype(f32), spread.astype(f32), teeth.astype(f32), names, voiced)
