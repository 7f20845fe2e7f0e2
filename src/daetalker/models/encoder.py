"""The semantic encoder: the down half of a UNet without a timestep, pooled to the latent z.

``GN -> SiLU -> global average pool -> 1x1 conv`` at the end, as in diffae's
``adaptivenonzero`` pool (method.md section 2). Trained only through the
diffusion loss of the decoder it conditions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daetalker.models.nn_blocks import AttentionBlock, ResBlock, group_norm


class SemanticEncoder(nn.Module):
    def __init__(
        self,
        *,
        image_size: int,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        attn_heads: int = 1,
        latent_dim: int = 512,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        ch = base_channels * channel_mult[0]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        res = image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(in_ch=ch, out_ch=base_channels * mult))
                ch = base_channels * mult
                if res in attn_resolutions:
                    layers.append(AttentionBlock(channels=ch, heads=attn_heads))
            if level != len(channel_mult) - 1:
                layers.append(ResBlock(in_ch=ch, out_ch=ch, resample="down"))
                res //= 2
        layers += [
            ResBlock(in_ch=ch, out_ch=ch),
            AttentionBlock(channels=ch, heads=attn_heads),
            ResBlock(in_ch=ch, out_ch=ch),
        ]
        self.body = nn.Sequential(*layers)
        self.out_norm = group_norm(ch)
        self.out_proj = nn.Conv2d(ch, latent_dim, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (B, C, R, R) clean frames in [-1, 1] -> z: (B, latent_dim)."""
        assert x0.shape[1:] == (self.in_channels, self.image_size, self.image_size), tuple(x0.shape)
        h = F.silu(self.out_norm(self.body(x0)))
        h = F.adaptive_avg_pool2d(h, 1)  # (B, ch, 1, 1)
        return self.out_proj(h).flatten(1)
