"""The first-stage autoencoder: face crops <-> the latent grid the DAE diffuses (issue 16).

pixels (B, 3, P, P) in [-1, 1] --encoder--> raw (B, C, P/f, P/f) --(raw - shift) / scale--> latent

A plain convolutional autoencoder (one residual block and one 2x step per
level, as the first stage of latent diffusion models, minus their KL and GAN
terms): a speaker's crops are one face, so a small grid keeps eyes and lips.
``shift`` / ``scale`` (per channel, from training frames) make the latents
~N(0, 1), the scale the DAE's noise schedule assumes.
"""

from __future__ import annotations

import torch
from torch import nn

from daetalker.config.autoencoder import AutoencoderConfig
from daetalker.models.nn_blocks import ResBlock, group_norm


def _head(ch: int, out: int) -> nn.Sequential:
    return nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1))


class FirstStage(nn.Module):
    def __init__(self, *, image_size: int = 128, channels: tuple[int, ...] = (16, 32, 64), res_blocks: int = 1,
                 latent_channels: int = 4) -> None:
        super().__init__()
        self.image_size = image_size
        self.factor = 2 ** (len(channels) - 1)
        self.latent_size = image_size // self.factor
        self.latent_channels = latent_channels
        assert image_size % self.factor == 0, (image_size, channels)

        enc: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1)]
        for level, ch in enumerate(channels):
            enc += [ResBlock(in_ch=ch, out_ch=ch) for _ in range(res_blocks)]
            if level + 1 < len(channels):
                enc.append(ResBlock(in_ch=ch, out_ch=channels[level + 1], resample="down"))
        self.encoder = nn.Sequential(*enc, _head(channels[-1], latent_channels))

        dec: list[nn.Module] = [nn.Conv2d(latent_channels, channels[-1], 3, padding=1)]
        for level in range(len(channels) - 1, -1, -1):
            ch = channels[level]
            dec += [ResBlock(in_ch=ch, out_ch=ch) for _ in range(res_blocks)]
            if level > 0:
                dec.append(ResBlock(in_ch=ch, out_ch=channels[level - 1], resample="up"))
        self.decoder = nn.Sequential(*dec, _head(channels[0], 3))
        # raw latent = shift + scale * latent, per channel; identity until set_latent_statistics
        self.register_buffer("shift", torch.zeros(latent_channels))
        self.register_buffer("scale", torch.ones(latent_channels))
        # channels_last: its convolutions have few channels on large maps, where oneDNN's NHWC kernels
        # are 1.3x (fp32) to 2.2x (bf16) faster on this CPU (docs/latent-dae.md)
        self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg: AutoencoderConfig) -> "FirstStage":
        return cls(image_size=cfg.image_size, channels=tuple(cfg.channels), res_blocks=cfg.res_blocks,
                   latent_channels=cfg.latent_channels)

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, P, P) in [-1, 1] -> unscaled latents (B, C, P/f, P/f)."""
        assert x.shape[1:] == (3, self.image_size, self.image_size), tuple(x.shape)
        return self.encoder(x.contiguous(memory_format=torch.channels_last))

    def decode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, L, L) -> frames (B, 3, P, P), about [-1, 1] (not clamped)."""
        return self.decoder(raw.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, 3, P, P) of frames x (training)."""
        return self.decode_raw(self.encode_raw(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, P, P) -> standardised latents (B, C, L, L) float32: what the DAE diffuses.

        Runs under the caller's autocast: bf16 as it trained (``autoencoder.bf16``), at ~0.4% of error.
        """
        raw = self.encode_raw(x).float()
        return (raw - self.shift[:, None, None]) / self.scale[:, None, None]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Standardised latents (B, C, L, L) -> frames (B, 3, P, P) clamped to [-1, 1]."""
        raw = latent.float() * self.scale[:, None, None] + self.shift[:, None, None]
        return self.decode_raw(raw).float().clamp(-1, 1)

    @torch.no_grad()
    def set_latent_statistics(self, raw: torch.Tensor) -> None:
        """raw: (N, C, L, L) unscaled latents of training frames -> per-channel shift and scale."""
        r = raw.double().transpose(0, 1).flatten(1)  # (C, N*L*L)
        self.shift.copy_(r.mean(1))
        self.scale.copy_(r.std(1).clamp_min(1e-6))
