"""Config of the diffusion autoencoder and its trainer (method.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DAEConfig:
    image_size: int = 256
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    enc_channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    latent_dim: int = 512
    dropout: float = 0.1
    # diffusion
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # optimisation
    lr: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    batch_size: int = 64
    max_steps: int = 1_000_000
    ckpt_every: int = 1000
    log_every: int = 100
    sample_every: int = 5000
    sample_steps: int = 20  # DDIM steps for logged reconstructions
    bf16: bool = True  # autocast where the device supports it
    channels_last: bool = True
    num_workers: int = 2
    seed: int = 0
