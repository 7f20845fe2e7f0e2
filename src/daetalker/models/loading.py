"""Networks from verified checkpoints: the first-stage autoencoder, the DAE (EMA weights) and speech2latent,
ready to run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from daetalker import checkpoint as ckpt_io
from daetalker.config.autoencoder import AutoencoderConfig
from daetalker.config.base import from_dict
from daetalker.config.dae import DAEConfig
from daetalker.config.s2l import S2LConfig
from daetalker.errors import CheckpointError
from daetalker.models.autoencoder import DiffusionAutoencoder
from daetalker.models.first_stage import FirstStage
from daetalker.models.speech2latent import Speech2Latent


def dae_config_from_checkpoint(state: dict[str, Any]) -> DAEConfig:
    saved = dict(state["dae_config"])
    saved.setdefault("latent_norm", False)  # checkpoints older than these options
    saved.setdefault("prediction", "eps")
    saved.setdefault("space", "pixel")
    return from_dict(DAEConfig, saved)


def dae_from_state(state: dict[str, Any], weights: dict[str, torch.Tensor]) -> DiffusionAutoencoder:
    """A DAE shaped by a checkpoint's config (and, in latent space, its first stage's), holding ``weights``.

    A latent-space DAE's state dict holds its frozen first stage (``first_stage.*``); the checkpoint's
    ``first_stage`` entry holds that autoencoder's config and sha256.
    """
    cfg = dae_config_from_checkpoint(state)
    first = None
    if cfg.space == "latent":
        if "first_stage" not in state:
            raise CheckpointError("a latent-space DAE checkpoint without its first_stage entry (written by a "
                                  "broken run); retrain with `daetalker train-dae --autoencoder ...`")
        first = FirstStage.from_config(autoencoder_config(state["first_stage"]["autoencoder_config"]))
    model = DiffusionAutoencoder.from_config(cfg, first)
    model.load_state_dict(weights)
    return model


def load_dae(path: Path, device: str | torch.device = "cpu") -> tuple[DiffusionAutoencoder, DAEConfig]:
    """The EMA autoencoder of a verified checkpoint, in eval mode (sampling and extraction use EMA)."""
    state = ckpt_io.load_checkpoint(Path(path))
    cfg = dae_config_from_checkpoint(state)
    model = dae_from_state(state, state["ema"]["model"])
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


def autoencoder_config(saved: dict[str, Any]) -> AutoencoderConfig:
    """A checkpoint's ``autoencoder_config``; ``channels_last`` of the first ones is dropped (it always is now)."""
    return from_dict(AutoencoderConfig, {k: v for k, v in saved.items() if k != "channels_last"})


def first_stage_from_state(state: dict[str, Any]) -> tuple[FirstStage, AutoencoderConfig]:
    """The autoencoder of a checkpoint dict: ``autoencoder_config`` + ``model`` (its state dict, shift/scale included)."""
    cfg = autoencoder_config(state["autoencoder_config"])
    model = FirstStage.from_config(cfg)
    model.load_state_dict(state["model"])
    return model.eval().requires_grad_(False), cfg


def load_first_stage(path: Path, device: str | torch.device = "cpu") -> tuple[FirstStage, AutoencoderConfig, str]:
    """A verified ``train-autoencoder`` checkpoint in eval mode, its config and its sha256."""
    path = Path(path)
    meta = ckpt_io.verify(path)
    state = ckpt_io.load_checkpoint(path)
    if "autoencoder_config" not in state:
        raise CheckpointError(f"{path}: not an autoencoder checkpoint (no autoencoder_config); pass the "
                              "checkpoints/latest.pt that `daetalker train-autoencoder` writes")
    model, cfg = first_stage_from_state(state)
    return model.to(device), cfg, str(meta["sha256"])
