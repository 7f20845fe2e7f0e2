"""The talker a generation runs, loaded from a verified bundle folder.

A registered model (``models:/NAME@ALIAS``) is the caller's to resolve into a
folder first (``daetalker.registry.log_model.local_bundle``; the CLI does it):
generation does not read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from daetalker import bundle as bundle_io
from daetalker.config import Config
from daetalker.config.base import from_dict, load_yaml
from daetalker.config.dae import DAEConfig
from daetalker.errors import DaetalkerError
from daetalker.features import check_features_record
from daetalker.models import DiffusionAutoencoder
from daetalker.models.device import pick_device
from daetalker.models.latent_stats import load_latent_stats, load_reference_frame
from daetalker.models.loading import load_dae, load_s2l
from daetalker.models.speech2latent import Speech2Latent


@dataclass
class Talker:
    dae: DiffusionAutoencoder
    dae_cfg: DAEConfig
    s2l: Speech2Latent
    latent_mean: torch.Tensor  # (D,)
    latent_std: torch.Tensor  # (D,)
    config: Config
    source: str
    reference_frame: np.ndarray | None = None  # uint8 (R, R, 3): the frame whose x_T videos start from


def bundle_folder(source: str | Path) -> Path:
    """``source`` as a verified bundle folder; a clear error for a ``models:/`` URI or a missing folder."""
    text = str(source)
    if text.startswith("models:/"):
        raise DaetalkerError(f"--model {text}: a registered model must be fetched into a folder first (fix: "
                             "daetalker.registry.log_model.local_bundle(uri), as `daetalker generate --model "
                             "models:/NAME@ALIAS` does)")  # fmt: skip
    path = Path(text)
    if not path.is_dir():
        raise DaetalkerError(f"--model {path}: no such bundle folder (fix: pass a folder written by "
                             "`daetalker bundle` or a models:/NAME@ALIAS URI)")  # fmt: skip
    bundle_io.verify_bundle(path)
    return path


def load_talker(bundle_dir: Path, device: torch.device, source: str = "") -> Talker:
    """The networks, statistics and config of a bundle folder on ``device`` (not verified: see :func:`load_bundle`)."""
    bundle_dir = Path(bundle_dir)
    dae, dae_cfg = load_dae(bundle_dir / bundle_io.DAE, device)
    s2l, _, dims = load_s2l(bundle_dir / bundle_io.S2L, device)
    if dims["latent_dim"] != dae_cfg.latent_dim:
        raise DaetalkerError(f"{bundle_dir}: s2l predicts {dims['latent_dim']}-d latents, the DAE takes "
                             f"{dae_cfg.latent_dim} (fix: bundle an s2l trained on this DAE's latents)")  # fmt: skip
    mean, std = load_latent_stats(bundle_dir)
    config = from_dict(Config, load_yaml(bundle_dir / bundle_io.CONFIG))
    check_features_record(bundle_io.read_manifest(bundle_dir).meta, config.s2l, bundle_dir)
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    return Talker(dae, dae_cfg, s2l, as_t(mean), as_t(std), config, source or str(bundle_dir),
                  load_reference_frame(bundle_dir))


def load_bundle(bundle_dir: str | Path, device: str | torch.device | None = None, source: str = "") -> Talker:
    """Verify a bundle folder and load its talker (``device``: default CUDA if there is one; ``source``: its name)."""
    dev = device if isinstance(device, torch.device) else pick_device(0, device)
    return load_talker(bundle_folder(bundle_dir), dev, source or str(bundle_dir))
