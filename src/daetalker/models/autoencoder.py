"""DiffusionAutoencoder: the semantic encoder and the z-conditioned UNet as one module."""

from __future__ import annotations

import torch
from torch import nn

from daetalker.config.dae import DAEConfig
from daetalker.diffusion import eps_from_v, linear_schedule
from daetalker.models.encoder import SemanticEncoder
from daetalker.models.unet import UNet


class DiffusionAutoencoder(nn.Module):
    """``unet`` predicts ``prediction`` ("eps" or "v"); :meth:`eps` is the noise estimate samplers use."""

    def __init__(
        self, *, encoder: SemanticEncoder, unet: UNet, prediction: str = "eps",
        alphas_cumprod: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        assert encoder.latent_dim == unet.latent_dim and encoder.image_size == unet.image_size
        assert prediction == "eps" or alphas_cumprod is not None, "v-prediction needs the noise schedule"
        self.encoder = encoder
        self.unet = unet
        self.prediction = prediction
        # (T,) float64; not saved: the config rebuilds it
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

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
            channel_mult=tuple(cfg.enc_channel_mult), num_res_blocks=cfg.enc_num_res_blocks,
            latent_norm=cfg.latent_norm, **common,
        )
        unet = UNet(
            channel_mult=tuple(cfg.channel_mult),
            num_res_blocks=cfg.num_res_blocks,
            embed_dim=cfg.embed_dim,
            dropout=cfg.dropout,
            **common,
        )
        sched = linear_schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        return cls(encoder=encoder, unet=unet, prediction=cfg.prediction, alphas_cumprod=sched.alphas_cumprod)

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
        """Training forward in one call (so DDP sees encoder and UNet together): the UNet's raw
        prediction (B, 3, R, R), eps or v."""
        return self.unet(x_t, t, self.encoder(x0))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Noise estimate (B, 3, R, R) at x_t (B, 3, R, R), t (B,), z (B, D): what DDIM consumes."""
        out = self.unet(x_t, t, z)
        if self.prediction == "eps":
            return out
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return eps_from_v(x_t.float(), out.float(), a.float())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
