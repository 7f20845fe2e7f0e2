"""Building blocks shared by the decoder UNet and the semantic encoder (diffae / guided-diffusion).

A ResBlock is ``GN -> SiLU -> conv`` (with optional resampling), then, when
conditioned, ``GN -> AdaGN(t) -> z scale -> SiLU -> dropout -> zero conv``.
The unconditioned variant (the encoder's) stops after the first conv, as in
the reference code, which keeps parameter counts comparable to the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def norm_groups(channels: int) -> int:
    """GroupNorm(32) as in the paper; fewer groups (>= 4 channels each) when channels are small."""
    g = min(32, max(1, channels // 4))
    while channels % g:
        g -= 1
    return g


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-init so a residual branch starts as the identity (and z gets no gradient at step 0)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim), as in guided-diffusion."""
    assert t.ndim == 1, f"t must be (B,), got {tuple(t.shape)}"
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Resample(nn.Module):
    """Parameter-free 2x resampling used inside up/down ResBlocks (nearest up, average-pool down)."""

    def __init__(self, *, mode: str) -> None:
        super().__init__()
        assert mode in ("up", "down", "none")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.mode == "down":
            return F.avg_pool2d(x, 2)
        return x


class ResBlock(nn.Module):
    """Residual block; ``emb_dim``/``z_dim`` None means unconditioned (encoder)."""

    def __init__(
        self,
        *,
        in_ch: int,
        out_ch: int,
        emb_dim: int | None = None,
        z_dim: int | None = None,
        dropout: float = 0.0,
        resample: str = "none",
    ) -> None:
        super().__init__()
        self.in_norm = group_norm(in_ch)
        self.in_conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.h_resample = Resample(mode=resample)
        self.x_resample = Resample(mode=resample)
        self.conditioned = emb_dim is not None
        if self.conditioned:
            assert z_dim is not None, "a conditioned ResBlock needs both the time and z widths"
            self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)  # AdaGN: scale and shift from t
            self.z_proj = nn.Linear(z_dim, out_ch)  # z: scale only (diffae found the shift useless)
            self.out_norm = group_norm(out_ch)
            self.dropout = nn.Dropout(dropout)
            self.out_conv = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x: (B, in_ch, H, W) -> (B, out_ch, H', W'); emb: (B, emb_dim); z: (B, z_dim)
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self.h_resample(h))
        x = self.x_resample(x)
        if self.conditioned:
            t_scale, t_shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            z_scale = self.z_proj(F.silu(z))[:, :, None, None]
            h = self.out_norm(h) * (1 + t_scale) + t_shift
            h = h * (1 + z_scale)
            h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with a zero-initialised output projection (residual)."""

    def __init__(self, *, channels: int, heads: int = 1) -> None:
        super().__init__()
        assert channels % heads == 0, f"{channels} channels do not split into {heads} heads"
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)
