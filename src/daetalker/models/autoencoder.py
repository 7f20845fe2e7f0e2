"""DiffusionAutoencoder: the semantic encoder and the z-conditioned UNet as one module."""

from __future__ import annotations

import torch
from torch import nn

from daetalker.config.dae import DAEConfig
from daetalker.models.encoder import SemanticEncoder
from daetalker.models.unet import UNet


class DiffusionAutoencoder(nn.Module):
    def __init__(self, *, encoder: SemanticEncoder, unet: UNet) -> None:
        super().__init__()
        assert encoder.latent_dim == unet.latent_dim and encoder.image_size == unet.image_size
        self.encoder = encoder
        self.unet = unet

    @classmethod
    def from_config(cls, cfg: DAEConfig) -> "DiffusionAutoencoder":
        common = dict(
            image_size=cfg.image_size,
            base_channels=cfg.base_channels,
            attn_resolutions=tuple(cfg.attn_resolutions),
            attn_heads=cfg.attn_heads,
            latent_dim=cfg.latent_dim,
        )
        encoder = SemanticEncoder(
            channel_mult=tuple(cfg.enc_channel_mult), num_res_blocks=cfg.enc_num_res_blocks, **common
        )
        unet = UNet(
            channel_mult=tuple(cfg.channel_mult),
            num_res_blocks=cfg.num_res_blocks,
            embed_dim=cfg.embed_dim,
            dropout=cfg.dropout,
            **common,
        )
        return cls(encoder=encoder, unet=unet)

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> z (B, latent_dim)."""
        return self.encoder(x0)

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Training forward in one call (so DDP sees encoder and UNet together): eps (B, 3, R, R)."""
        return self.unet(x_t, t, self.encoder(x0))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
