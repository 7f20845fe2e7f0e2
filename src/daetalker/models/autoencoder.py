"""DiffusionAutoencoder: the semantic encoder and the z-conditioned UNet as one module.

It diffuses frames in "diffusion space": the frames themselves (``space: pixel``,
the paper) or the latent grid of a frozen first-stage autoencoder (``space:
latent``, issue 16). :meth:`to_space` / :meth:`to_pixels` cross between the two;
everything else (encoder, UNet, DDIM) only ever sees diffusion space.
"""

from __future__ import annotations

import torch
from torch import nn

from daetalker.config.dae import DAEConfig
from daetalker.diffusion import eps_from_v, linear_schedule
from daetalker.models.encoder import SemanticEncoder
from daetalker.models.first_stage import FirstStage
from daetalker.models.unet import UNet


class DiffusionAutoencoder(nn.Module):
    """``unet`` predicts ``prediction`` ("eps" or "v"); :meth:`eps` is the noise estimate samplers use."""

    def __init__(
        self, *, encoder: SemanticEncoder, unet: UNet, prediction: str = "eps",
        alphas_cumprod: torch.Tensor | None = None, first_stage: FirstStage | None = None,
    ) -> None:
        super().__init__()
        assert encoder.latent_dim == unet.latent_dim and encoder.image_size == unet.image_size
        assert encoder.in_channels == unet.in_channels
        assert prediction == "eps" or alphas_cumprod is not None, "v-prediction needs the noise schedule"
        if first_stage is not None:
            assert (first_stage.latent_size, first_stage.latent_channels) == (unet.image_size, unet.in_channels)
            first_stage.requires_grad_(False)  # trained by train-autoencoder; the DAE only uses it
        self.encoder = encoder
        self.unet = unet
        self.first_stage = first_stage
        self.prediction = prediction
        # (T,) float64; not saved: the config rebuilds it
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    @classmethod
    def from_config(cls, cfg: DAEConfig, first_stage: FirstStage | None = None) -> "DiffusionAutoencoder":
        """``first_stage``: the trained autoencoder a ``space: latent`` DAE diffuses the grid of."""
        side, channels = cfg.image_size, 3
        if cfg.space == "latent":
            if first_stage is None:
                raise ValueError("dae.space is 'latent': pass the first-stage autoencoder (train-autoencoder)")
            if first_stage.image_size != cfg.image_size:
                raise ValueError(f"dae.image_size {cfg.image_size} != the autoencoder's {first_stage.image_size} px")
            side, channels = first_stage.latent_size, first_stage.latent_channels
            cfg.check_grid(side)
        elif first_stage is not None:
            raise ValueError("dae.space is 'pixel': a first-stage autoencoder is not used")
        common = dict(
            image_size=side,
            in_channels=channels,
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
        return cls(encoder=encoder, unet=unet, prediction=cfg.prediction, alphas_cumprod=sched.alphas_cumprod,
                   first_stage=first_stage)

    @property
    def latent_dim(self) -> int:
        return self.encoder.latent_dim

    @property
    def image_size(self) -> int:
        """Side R of the diffusion-space grid (the frame's side in pixel space)."""
        return self.encoder.image_size

    @property
    def channels(self) -> int:
        """Channels C of diffusion space: 3 (pixels) or the autoencoder's latent channels."""
        return self.unet.in_channels

    @property
    def pixel_size(self) -> int:
        """Side P of the frames it encodes and decodes."""
        return self.image_size if self.first_stage is None else self.first_stage.image_size

    @property
    def clips_x0(self) -> bool:
        """Whether DDIM may clamp its x0 estimate to [-1, 1]: pixels lie there, standardised latents do not."""
        return self.first_stage is None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Encoder and UNet: the first stage is frozen."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def to_space(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, P, P) in [-1, 1] -> diffusion-space x0 (B, C, R, R) (float32; the first stage runs
        under the caller's autocast)."""
        if self.first_stage is None:
            return frames.float()
        return self.first_stage.encode(frames.float())

    @torch.no_grad()
    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Diffusion-space x (B, C, R, R) -> frames (B, 3, P, P) in [-1, 1] (under the caller's autocast)."""
        if self.first_stage is None:
            return x.float().clamp(-1, 1)
        return self.first_stage.decode(x).float()

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Diffusion-space x0 (B, C, R, R) -> z (B, latent_dim)."""
        return self.encoder(x0)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, P, P) in [-1, 1] -> z (B, latent_dim)."""
        return self.encoder(self.to_space(frames))

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Training forward in one call (so DDP sees encoder and UNet together): the UNet's raw
        prediction (B, C, R, R), eps or v, for diffusion-space x0 and x_t (B, C, R, R)."""
        return self.unet(x_t, t, self.encoder(x0))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Noise estimate (B, C, R, R) at x_t (B, C, R, R), t (B,), z (B, D): what DDIM consumes."""
        out = self.unet(x_t, t, z)
        if self.prediction == "eps":
            return out
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return eps_from_v(x_t.float(), out.float(), a.float())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
