"""Conformer blocks with relative-position self-attention (Gulati et al. 2020; ESPnet's layout).

Block: ``x + FF/2 -> x + RelMHSA -> x + ConvModule -> x + FF/2 -> LayerNorm``.
Attention follows Transformer-XL (Dai et al. 2019) as in ESPnet's
``RelPositionMultiHeadedAttention``: scores are ``(q + u) k^T + (q + v) p^T``
where ``p`` embeds the relative distance ``i - j``, so nothing depends on
absolute frame indices and left/right padding under a mask changes nothing.
Every part is per-frame or masked: LayerNorm (not BatchNorm) in the conv
module and zeroed padded frames before the depthwise conv keep padding out of
valid frames.

Shapes: ``x (B, T, D)``, ``mask (B, T)`` bool, True on valid frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) int lengths -> (B, T) bool, True on the first ``lengths[b]`` frames."""
    assert lengths.ndim == 1, f"lengths must be (B,), got {tuple(lengths.shape)}"
    t = int(lengths.max()) if max_len is None else max_len
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def relative_positional_encoding(length: int, dim: int, *, device=None, dtype=None) -> torch.Tensor:
    """Sinusoids of relative positions ``length-1, ..., 0, ..., -(length-1)`` -> (2*length-1, dim)."""
    pos = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)  # (2T-1,)
    freqs = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    args = pos[:, None] * freqs[None]  # (2T-1, D/2)
    pe = torch.stack([torch.sin(args), torch.cos(args)], dim=-1).flatten(1)[:, :dim]  # interleaved sin/cos
    return pe.to(dtype or torch.float32)


class FeedForward(nn.Module):
    """Pre-norm FFN with Swish; the block adds it with weight 1/2 (macaron)."""

    def __init__(self, *, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RelPositionSelfAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions and a key padding mask."""

    def __init__(self, *, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        assert dim % heads == 0, f"dim {dim} not divisible by heads {heads}"
        self.heads, self.dim_head = heads, dim // heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_pos = nn.Linear(dim, dim, bias=False)
        # Global content (u) and position (v) biases of Transformer-XL, one per head.
        self.pos_bias_u = nn.Parameter(torch.empty(heads, self.dim_head))
        self.pos_bias_v = nn.Parameter(torch.empty(heads, self.dim_head))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.to_out = nn.Linear(dim, dim)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h, dh = self.heads, self.dim_head
        assert pos_emb.shape == (2 * t - 1, d), f"pos_emb must be ({2 * t - 1}, {d}), got {tuple(pos_emb.shape)}"
        assert mask.shape == (b, t) and mask.dtype == torch.bool

        q, k, v = self.to_qkv(x).view(b, t, 3, h, dh).unbind(dim=2)  # each (B, T, H, Dh)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, Dh)
        p = self.to_pos(pos_emb).view(2 * t - 1, h, dh).permute(1, 2, 0)  # (H, Dh, 2T-1)

        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-1, -2))  # (B, H, T, T)
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p)  # (B, H, T, 2T-1)
        # Column c of `position` is relative distance (T-1) - c; query i against key j needs i - j,
        # i.e. column (T-1) - i + j. (ESPnet's rel_shift does the same with a pad-and-reshape trick.)
        idx = (t - 1) - torch.arange(t, device=x.device)[:, None] + torch.arange(t, device=x.device)[None, :]
        position = position.gather(-1, idx.expand(b, h, t, t))  # (B, H, T, T)

        scores = (content + position) / math.sqrt(dh)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, T)
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        attn = scores.softmax(dim=-1).masked_fill(~key_mask, 0.0)
        out = torch.matmul(self.attn_dropout(attn), v)  # (B, H, T, Dh)
        return self.to_out(out.transpose(1, 2).reshape(b, t, d))


class ConvModule(nn.Module):
    """Pointwise conv + GLU -> depthwise conv -> LayerNorm -> Swish -> pointwise conv."""

    def __init__(self, *, dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        assert kernel_size % 2 == 1, f"kernel_size must be odd, got {kernel_size}"
        self.norm_in = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        # LayerNorm over channels per frame: BatchNorm's batch statistics would mix padded frames in.
        self.norm_mid = nn.LayerNorm(dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm_in(x).transpose(1, 2)  # (B, D, T)
        h = F.glu(self.pointwise_in(h), dim=1)  # (B, D, T)
        h = h.masked_fill(~mask[:, None, :], 0.0)  # padded frames must not enter the depthwise window
        h = self.depthwise(h)
        h = F.silu(self.norm_mid(h.transpose(1, 2)))  # (B, T, D)
        h = self.pointwise_out(h.transpose(1, 2)).transpose(1, 2)
        return self.dropout(h)


class ConformerBlock(nn.Module):
    def __init__(self, *, dim: int, heads: int, ffn_dim: int, conv_kernel: int, dropout: float) -> None:
        super().__init__()
        self.ff1 = FeedForward(dim=dim, hidden=ffn_dim, dropout=dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = RelPositionSelfAttention(dim=dim, heads=heads, dropout=dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(dim=dim, kernel_size=conv_kernel, dropout=dropout)
        self.ff2 = FeedForward(dim=dim, hidden=ffn_dim, dropout=dropout)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), pos_emb, mask))
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm_out(x)


class Conformer(nn.Module):
    """A stack of Conformer blocks sharing one relative positional encoding (dropout applied to it)."""

    def __init__(
        self, *, dim: int, depth: int, heads: int, ffn_dim: int, conv_kernel: int, dropout: float
    ) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(
            ConformerBlock(dim=dim, heads=heads, ffn_dim=ffn_dim, conv_kernel=conv_kernel, dropout=dropout)
            for _ in range(depth)
        )
        self.pos_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        assert d == self.dim, f"expected (B, T, {self.dim}), got {tuple(x.shape)}"
        assert mask.shape == (b, t), f"mask must be (B, T) = {(b, t)}, got {tuple(mask.shape)}"
        pos_emb = self.pos_dropout(relative_positional_encoding(t, d, device=x.device, dtype=x.dtype))
        for block in self.blocks:
            x = block(x, pos_emb, mask)
        return x
