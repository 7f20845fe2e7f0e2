"""The synthetic speaker's identity: colours and proportions, drawn once per corpus."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Reflectances in [0, 1] (sRGB-ish), from light to deep skin tones.
_SKIN = np.array(
    [[0.96, 0.80, 0.69], [0.91, 0.72, 0.59], [0.80, 0.58, 0.44], [0.62, 0.42, 0.30], [0.45, 0.30, 0.21]]
)
_HAIR = np.array(
    [[0.08, 0.06, 0.05], [0.22, 0.14, 0.08], [0.38, 0.25, 0.14], [0.62, 0.48, 0.30], [0.45, 0.20, 0.10],
     [0.55, 0.54, 0.52]]
)
_IRIS = np.array([[0.30, 0.18, 0.10], [0.20, 0.35, 0.55], [0.28, 0.40, 0.25], [0.45, 0.33, 0.18]])


@dataclass
class Speaker:
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    shirt: tuple[float, float, float]
    wall: tuple[float, float, float]
    face_width: float  # x scale of the jaw (1 = average)
    jaw_length: float  # y scale of the jaw
    nose_size: float
    eye_spacing: float  # half distance between the eyes, cm
    mouth_width: float  # half width of the closed mouth, cm
    hairline: float  # y of the hairline above the eyes' level, cm
    brow_thickness: float  # cm
    texture_seed: int  # seeds skin, hair and background textures

    def to_dict(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> tuple[float, float, float]:
    """Blend two neighbouring palette entries and jitter: a continuum, not a few presets."""
    i = rng.uniform(0, len(palette) - 1)
    lo = int(np.floor(i))
    hi = min(lo + 1, len(palette) - 1)
    c = palette[lo] * (1 - (i - lo)) + palette[hi] * (i - lo)
    c = np.clip(c * (1 + rng.normal(0, jitter, 3)), 0.02, 0.98)
    return tuple(float(v) for v in c)


def draw_speaker(rng: np.random.Generator) -> Speaker:
    skin = _pick(rng, _SKIN, 0.03)
    # lips: the skin tone, redder and darker (a red offset scaled by the skin's lightness)
    base = np.array(skin)
    lips = tuple(float(v) for v in np.clip(base * [0.8, 0.48, 0.5] + base.mean() * np.array([0.1, 0.0, 0.01]), 0, 1))
    hsv_shirt = (rng.uniform(0, 1), rng.uniform(0.25, 0.7), rng.uniform(0.25, 0.75))
    hsv_wall = (rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(0.55, 0.85))
    return Speaker(
        skin=skin,
        hair=_pick(rng, _HAIR, 0.05),
        iris=_pick(rng, _IRIS, 0.05),
        lips=lips,
        shirt=_hsv(*hsv_shirt),
        wall=_hsv(*hsv_wall),
        face_width=float(rng.uniform(0.94, 1.06)),
        jaw_length=float(rng.uniform(0.95, 1.05)),
        nose_size=float(rng.uniform(0.9, 1.1)),
        eye_spacing=float(rng.uniform(3.0, 3.3)),
        mouth_width=float(rng.uniform(2.2, 2.5)),
        hairline=float(rng.uniform(6.3, 7.3)),
        brow_thickness=float(rng.uniform(0.35, 0.55)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(float(c) for c in rgb)
