"""Reading the DAE's latent statistics file, ``latent_stats.npz``.

``train.latents.extract_latents`` writes it; speech2latent's dataset and the
model bundle read it: mean, std (latent_dim,) of the semantic latents over the
training split (s2l predicts normalised latents) and the reference frame whose
DDIM-inverted x_T generated videos start from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LATENT_STATS = "latent_stats.npz"


def load_latent_stats(out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 (latent_dim,) written by ``extract_latents``."""
    with np.load(Path(out_dir) / LATENT_STATS) as f:
        return f["mean"], f["std"]


def load_reference_frame(out_dir: Path) -> np.ndarray | None:
    """uint8 (R, R, 3) reference frame stored by ``extract_latents`` (None for statistics without one)."""
    with np.load(Path(out_dir) / LATENT_STATS) as f:
        return np.array(f["reference_frame"]) if "reference_frame" in f.files else None
