"""The z-conditioned denoising UNet: predicts the noise eps from (x_t, t, z) (method.md section 2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from daetalker.models.nn_blocks import AttentionBlock, ResBlock, group_norm, timestep_embedding, zero_module


class CondSequential(nn.ModuleList):
    """A ResBlock optionally followed by attention and a resampling ResBlock; passes (emb, z) on."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for layer in self:
            h = layer(h, emb, z) if isinstance(layer, ResBlock) else layer(h)
        return h


class UNet(nn.Module):
    def __init__(
        self,
        *,
        image_size: int,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        attn_heads: int = 1,
        embed_dim: int = 512,
        latent_dim: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.time_dim = base_channels  # sinusoid width, as in diffae
        self.time_embed = nn.Sequential(
            nn.Linear(self.time_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        block = dict(emb_dim=embed_dim, z_dim=latent_dim, dropout=dropout)

        # modules are created in this order (input conv, down, middle, up, out) so a seeded
        # init draws the same weights and the state_dict keys keep their checkpoint order
        ch = base_channels * channel_mult[0]
        self.input_conv = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, skip_chs, ch, res = _down_path(
            ch, image_size=image_size, base_channels=base_channels, channel_mult=channel_mult,
            num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions, attn_heads=attn_heads, block=block,
        )
        self.middle = _middle(ch, attn_heads=attn_heads, block=block)
        self.up, ch, res = _up_path(
            ch, res, skip_chs, base_channels=base_channels, channel_mult=channel_mult,
            num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions, attn_heads=attn_heads, block=block,
        )
        assert not skip_chs and res == image_size

        self.out_norm = group_norm(ch)
        self.out_conv = zero_module(nn.Conv2d(ch, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: (B, C, R, R) noisy image, t: (B,) int timesteps, z: (B, latent_dim) -> eps (B, C, R, R)."""
        b = x.shape[0]
        assert x.shape[1:] == (self.in_channels, self.image_size, self.image_size), tuple(x.shape)
        assert t.shape == (b,) and z.shape == (b, self.latent_dim), (tuple(t.shape), tuple(z.shape))
        emb = self.time_embed(timestep_embedding(t, self.time_dim).to(x.dtype))
        h = self.input_conv(x)
        hs = [h]
        for layers in self.down:
            h = layers(h, emb, z)
            hs.append(h)
        h = self.middle(h, emb, z)
        for layers in self.up:
            h = layers(torch.cat([h, hs.pop()], dim=1), emb, z)
        return self.out_conv(F.silu(self.out_norm(h)))


def _down_path(
    ch: int,
    *,
    image_size: int,
    base_channels: int,
    channel_mult: tuple[int, ...],
    num_res_blocks: int,
    attn_resolutions: tuple[int, ...],
    attn_heads: int,
    block: dict[str, Any],
) -> tuple[nn.ModuleList, list[int], int, int]:
    """Encoder half: returns (down blocks, skip channels, channels out, resolution out)."""
    skip_chs = [ch]  # channels of every tensor the down path hands to the up path (input conv first)
    down = nn.ModuleList()
    res = image_size
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers = CondSequential([ResBlock(in_ch=ch, out_ch=base_channels * mult, **block)])
            ch = base_channels * mult
            if res in attn_resolutions:
                layers.append(AttentionBlock(channels=ch, heads=attn_heads))
            down.append(layers)
            skip_chs.append(ch)
        if level != len(channel_mult) - 1:
            down.append(CondSequential([ResBlock(in_ch=ch, out_ch=ch, resample="down", **block)]))
            skip_chs.append(ch)
            res //= 2
    return down, skip_chs, ch, res


def _middle(ch: int, *, attn_heads: int, block: dict[str, Any]) -> CondSequential:
    """Bottleneck at the lowest resolution: ResBlock, attention, ResBlock; (B, ch, r, r) in and out."""
    return CondSequential(
        [
            ResBlock(in_ch=ch, out_ch=ch, **block),
            AttentionBlock(channels=ch, heads=attn_heads),
            ResBlock(in_ch=ch, out_ch=ch, **block),
        ]
    )


def _up_path(
    ch: int,
    res: int,
    skip_chs: list[int],
    *,
    base_channels: int,
    channel_mult: tuple[int, ...],
    num_res_blocks: int,
    attn_resolutions: tuple[int, ...],
    attn_heads: int,
    block: dict[str, Any],
) -> tuple[nn.ModuleList, int, int]:
    """Decoder half, consuming ``skip_chs`` from the end: returns (up blocks, channels out, resolution out)."""
    up = nn.ModuleList()
    for level, mult in reversed(list(enumerate(channel_mult))):
        for i in range(num_res_blocks + 1):
            skip = skip_chs.pop()
            layers = CondSequential([ResBlock(in_ch=ch + skip, out_ch=base_channels * mult, **block)])
            ch = base_channels * mult
            if res in attn_resolutions:
                layers.append(AttentionBlock(channels=ch, heads=attn_heads))
            if level and i == num_res_blocks:
                layers.append(ResBlock(in_ch=ch, out_ch=ch, resample="up", **block))
                res *= 2
            up.append(layers)
    return up, ch, res
