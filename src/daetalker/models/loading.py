"""Networks from verified checkpoints: the DAE (EMA weights) and speech2latent, ready to run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from daetalker import checkpoint as ckpt_io
from daetalker.config.base import from_dict
from daetalker.config.dae import DAEConfig
from daetalker.config.s2l import S2LConfig
from daetalker.errors import CheckpointError
from daetalker.models.autoencoder import DiffusionAutoencoder
from daetalker.models.speech2latent import Speech2Latent


def dae_config_from_checkpoint(state: dict[str, Any]) -> DAEConfig:
    saved = dict(state["dae_config"])
    saved.setdefault("latent_norm", False)  # checkpoints older than these options
    saved.setdefault("prediction", "eps")
    return from_dict(DAEConfig, saved)


def load_dae(path: Path, device: str | torch.device = "cpu") -> tuple[DiffusionAutoencoder, DAEConfig]:
    """The EMA autoencoder of a verified checkpoint, in eval mode (sampling and extraction use EMA)."""
    state = ckpt_io.load_checkpoint(Path(path))
    cfg = dae_config_from_checkpoint(state)
    model = DiffusionAutoencoder.from_config(cfg)
    model.load_state_dict(state["ema"]["model"])
    return model.to(device).eval().requires_grad_(False), cfg


def build_s2l(cfg: S2LConfig, dims: dict[str, int]) -> Speech2Latent:
    """``dims``: feature_dim, frames_per_video_frame, latent_dim (stored in every checkpoint)."""
    return Speech2Latent.from_config(cfg, **dims)


def load_s2l(path: Path, device: str | torch.device = "cpu") -> tuple[Speech2Latent, S2LConfig, dict[str, Any]]:
    """A verified s2l checkpoint in eval mode, its config and its ``dims``."""
    state = ckpt_io.load_checkpoint(Path(path))
    if "s2l_config" not in state:
        raise CheckpointError(f"{path}: not a speech2latent checkpoint (no s2l_config); pass one from `train-s2l`")
    cfg = from_dict(S2LConfig, state["s2l_config"])
    model = build_s2l(cfg, state["dims"])
    model.load_state_dict(state["model"])
    return model.to(device).eval().requires_grad_(False), cfg, dict(state["dims"])
