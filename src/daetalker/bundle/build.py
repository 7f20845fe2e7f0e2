"""Writing bundles: from training outputs (``daetalker bundle``) or with random weights (tests, benchmarks).

:func:`bundle_from_training` packages a DAE checkpoint, an s2l checkpoint and
``extract-latents``' statistics; :func:`make_test_bundle` a loadable bundle of
tiny random networks.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daetalker import checkpoint as ckpt_io
from daetalker.bundle.format import write_bundle
from daetalker.config import Config, load_config
from daetalker.errors import DaetalkerError
from daetalker.features import features_record, make_extractor
from daetalker.models import DiffusionAutoencoder
from daetalker.models.first_stage import FirstStage
from daetalker.models.latent_stats import LATENT_STATS
from daetalker.models.loading import build_s2l


def bundle_from_training(dae_ckpt: Path, s2l_ckpt: Path, latents_dir: Path, out: Path,
                         meta: dict[str, Any] | None = None) -> Path:
    """Write a registry bundle from a DAE checkpoint, an s2l checkpoint and extract-latents' folder."""
    state = ckpt_io.load_checkpoint(Path(s2l_ckpt))
    if "s2l_config" not in state:
        raise DaetalkerError(f"{s2l_ckpt}: not a speech2latent checkpoint (fix: pass OUT/checkpoints/latest.pt of "
                             "`daetalker train-s2l`)")  # fmt: skip
    stats = Path(latents_dir) / LATENT_STATS
    meta = {"s2l_step": state["step"], "dae_checkpoint_sha256": ckpt_io.verify(Path(dae_ckpt))["sha256"],
            **features_record(state["s2l_config"].get("features", "log_mel")), **(meta or {})}
    first_stage = ckpt_io.load_checkpoint(Path(dae_ckpt)).get("first_stage")
    if first_stage:  # a latent-space DAE holds its autoencoder: name which one it was trained with
        meta["first_stage_sha256"] = first_stage["sha256"]
    return write_bundle(out, dae=dae_ckpt, s2l=s2l_ckpt, latent_stats=stats, config=state["config"], meta=meta)


TEST_OVERRIDES = (
    "dae.space=pixel", "dae.image_size=16", "dae.base_channels=8", "dae.channel_mult=[1,2]",
    "dae.enc_channel_mult=[1,2]", "dae.num_res_blocks=1", "dae.enc_num_res_blocks=1", "dae.attn_resolutions=[8]",
    "dae.embed_dim=32", "dae.latent_dim=16", "dae.sample_steps=4", "dae.bf16=false",
    "s2l.d_model=32", "s2l.heads=2", "s2l.ffn_dim=32", "s2l.conv_kernel=3", "s2l.blocks_before=1",
    "s2l.blocks_after=1", "s2l.frontend_kernel=3", "s2l.pose_predictor_dim=16", "s2l.pose_predictor_layers=1",
    "s2l.bf16=false", "s2l.features=log_mel",  # preprocess's mel: no encoder to run (test_s2l_whisper.py tests that)
)


@torch.no_grad()
def fill_zero_init(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Random weights for zero-initialised layers (UNet out convs): else z would not change a random model's output."""
    for p in model.parameters():
        if p.ndim > 1 and not p.any():
            p.normal_(0.0, std)
    return model


def random_dae(cfg: Config) -> DiffusionAutoencoder:
    """A DAE of ``cfg``'s sizes with random weights (and a random first stage in latent space): tests, benchmarks."""
    first = FirstStage.from_config(cfg.autoencoder) if cfg.dae.space == "latent" else None
    return fill_zero_init(DiffusionAutoencoder.from_config(cfg.dae, first))


def make_test_bundle(out_dir: Path | str, *, profile: str = "tiny-pixel", overrides: tuple[str, ...] | None = None,
                     seed: int = 0) -> Path:
    """A loadable bundle with random weights: a micro DAE (16 px) and s2l by default, or any profile's sizes."""
    cfg = load_config(profile, None, TEST_OVERRIDES if overrides is None else overrides)
    torch.manual_seed(seed)
    dae = random_dae(cfg)
    record = {"first_stage": {"autoencoder_config": cfg.to_dict()["autoencoder"], "sha256": "random"}
              if dae.first_stage is not None else {}}
    features = make_extractor(cfg.s2l, cfg.preprocess)
    dims = {"feature_dim": features.dim, "frames_per_video_frame": features.frames_per_video_frame,
            "latent_dim": cfg.dae.latent_dim}
    s2l = build_s2l(cfg.s2l, dims)
    s2l.set_stats(feature_mean=torch.full((dims["feature_dim"],), -6.0), feature_std=torch.full((dims["feature_dim"],), 3.0),
                  pose_std=torch.full((3,), 5.0))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dae_path = ckpt_io.save_checkpoint({"step": 0, "ema": {"model": dae.state_dict()},
                                            "dae_config": cfg.to_dict()["dae"], **record}, tmp / "dae", 0)  # fmt: skip
        s2l_path = ckpt_io.save_checkpoint({"step": 0, "model": s2l.state_dict(), "dims": dims, "config": cfg.to_dict(),
                                            "s2l_config": cfg.to_dict()["s2l"]}, tmp / "s2l", 0)  # fmt: skip
        (tmp / "lat").mkdir()
        size = cfg.preprocess.resolution
        reference = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
        np.savez(tmp / "lat" / LATENT_STATS, mean=np.zeros(dims["latent_dim"], np.float32),
                 std=np.ones(dims["latent_dim"], np.float32), reference_frame=reference)  # fmt: skip
        return bundle_from_training(dae_path, s2l_path, tmp / "lat", Path(out_dir), meta={"test_bundle": "random"})
