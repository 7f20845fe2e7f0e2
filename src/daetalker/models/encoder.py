"""The semantic encoder: the down half of a UNet without a timestep, pooled to the latent z.

``GN -> SiLU -> global average pool -> 1x1 conv`` at the end, as in diffae's
``adaptivenonzero`` pool (method.md section 2). Trained only through the
diffusion loss of the decoder it conditions.

``latent_norm`` adds a parameter-free per-dimension standardisation of z
(batch statistics in training, calibrated ones in eval). Frames of one speaker
differ in a few percent of their pixels, so a randomly initialised encoder
gives nearly the same z for every frame (measured: std across frames ~3% of
|z|); the decoder then learns to ignore z and the encoder collapses to a
constant (std ~0.05% after 500 steps). Standardising z makes its variation
O(1) from the first step, so the decoder has to use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daetalker.models.nn_blocks import AttentionBlock, ResBlock, group_norm


class LatentNorm(nn.Module):
    """Standardise z (B, D) per dimension.

    Training: the statistics of the batch (of the global batch under DDP, so one
    process and torchrun agree). Eval: the ``mean``/``var`` buffers, which
    :meth:`set_statistics` fills from the raw latents of many training frames
    (the trainer does it for the EMA encoder before it samples or saves).
    """

    def __init__(self, dim: int, *, eps: float = 1e-12) -> None:
        super().__init__()
        # Raw z varies little across frames (var ~1e-4 at init, ~1e-7 after 700 tiny steps). With
        # eps = 1e-6 the variance sank below eps and the standardised z shrank to std ~0.4 (measured).
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))

    @torch.no_grad()
    def set_statistics(self, raw: torch.Tensor) -> None:
        """raw: (N, D) encoder outputs before normalisation."""
        self.mean.copy_(raw.double().mean(0))
        self.var.copy_(raw.double().var(0, unbiased=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # float64: the variation is ~1e-4 of |z|, so keep the subtraction exact; (B, D) is tiny
        z64 = z.double()
        if not self.training:
            return ((z64 - self.mean) / (self.var.double() + self.eps).sqrt()).to(z.dtype)
        # two passes (mean, then squared deviations): E[z^2] - E[z]^2 cancels when var << mean^2
        n = _global_sum(z64.new_full((1,), float(z.shape[0])))
        mean = _global_sum(z64.sum(0)) / n
        var = _global_sum((z64 - mean).pow(2).sum(0)) / n
        return ((z64 - mean) / (var + self.eps).sqrt()).to(z.dtype)


def _global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over DDP ranks (differentiable), so torchrun sees the global batch's statistics."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x)
    return x


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
        latent_norm: bool = False,
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
        self.latent_norm = LatentNorm(latent_dim) if latent_norm else nn.Identity()

    def forward(self, x0: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """x0: (B, C, R, R) clean frames in [-1, 1] -> z: (B, latent_dim) (raw if not ``normalize``)."""
        assert x0.shape[1:] == (self.in_channels, self.image_size, self.image_size), tuple(x0.shape)
        h = self.body(x0)
        # fp32 head even under bf16 autocast: z varies across frames by ~1e-3 of its size
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = F.silu(self.out_norm(h.float()))
            h = F.adaptive_avg_pool2d(h, 1)  # (B, ch, 1, 1)
            z = self.out_proj(h).flatten(1)
        return self.latent_norm(z) if normalize else z

    @torch.no_grad()
    def calibrate(self, frames: torch.Tensor, batch_size: int = 256) -> None:
        """Fill the latent normalisation's eval statistics from frames (N, C, R, R); no-op without it."""
        if isinstance(self.latent_norm, LatentNorm):
            chunks = [self(frames[i : i + batch_size], normalize=False) for i in range(0, len(frames), batch_size)]
            self.latent_norm.set_statistics(torch.cat(chunks))
