"""Gaussian diffusion maths: the noise schedule, forward noising and the training loss.

Pure functions over tensors, no model state (like diffusers' schedulers). The
schedule is kept in float64 and cast at use, so long products stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseSchedule:
    betas: torch.Tensor  # (T,) float64
    alphas_cumprod: torch.Tensor  # (T,) float64, alpha_bar_t = prod_{s<=t} (1 - beta_s)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps t (B,), shaped (B, 1, 1, 1) in ``like``'s dtype/device."""
        a = self.alphas_cumprod.to(t.device)[t]
        return a.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def linear_schedule(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM's linear betas (Ho et al. 2020; method.md section 2: T=1000, 1e-4 .. 0.02)."""
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return NoiseSchedule(betas=betas, alphas_cumprod=torch.cumprod(1.0 - betas, dim=0))


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; x0, noise (B, ...), t (B,)."""
    assert x0.shape == noise.shape and t.shape == (x0.shape[0],)
    a = schedule.alpha_bar(t, x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def sample_timesteps(schedule: NoiseSchedule, n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform t in [0, T) (diffae's uniform sampler), drawn on the generator's device."""
    return torch.randint(0, schedule.num_timesteps, (n,), generator=generator, device=generator.device)


def eps_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The simple DDPM objective: MSE between the prediction and its target (the noise, or v).

    ``weights`` (B,) rescales each sample's MSE (e.g. ``min_snr_weights``); ``pixel_weights``
    (B, 1, H, W) makes each sample's MSE a weighted mean over its pixels. None: plain means.
    """
    err = (pred.float() - target.float()).pow(2)
    if pixel_weights is None:
        per_sample = err.flatten(1).mean(1)
    else:
        w = pixel_weights.float().expand_as(err).flatten(1)
        per_sample = (w * err.flatten(1)).sum(1) / w.sum(1)
    return per_sample.mean() if weights is None else (weights.float() * per_sample).mean()


def box_weights(boxes: torch.Tensor, size: int, extra: float) -> torch.Tensor:
    """(B, 1, size, size) pixel weights: 1, plus ``extra`` inside each box (B, 4) = (x0, y0, x1, y1) in [0, 1]."""
    centres = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size  # pixel centres
    b = boxes.float()
    inside_x = (centres >= b[:, 0:1]) & (centres <= b[:, 2:3])  # (B, size)
    inside_y = (centres >= b[:, 1:2]) & (centres <= b[:, 3:4])
    inside = inside_y[:, :, None] & inside_x[:, None, :]  # (B, H, W)
    return (1.0 + extra * inside.float()).unsqueeze(1)


def min_snr_weights(schedule: NoiseSchedule, t: torch.Tensor, gamma: float, prediction: str = "eps") -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al., ICCV 2023): min(SNR, gamma) / SNR for eps-prediction,
    min(SNR, gamma) / (SNR + 1) for v-prediction.

    Both equal a weight of min(SNR, gamma) on the x0 error: the nearly clean, easy timesteps
    that otherwise dominate the gradient count less, so training spends itself on the noisy ones.
    """
    a = schedule.alphas_cumprod.to(t.device)[t]
    snr = a / (1.0 - a)
    return (snr.clamp(max=gamma) / (snr if prediction == "eps" else snr + 1.0)).float()


def v_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022), the target of v-prediction."""
    return alpha_bar.sqrt() * noise - (1.0 - alpha_bar).sqrt() * x0


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The noise implied by a v-prediction: eps = sqrt(a) v + sqrt(1 - a) x_t."""
    return alpha_bar.sqrt() * v + (1.0 - alpha_bar).sqrt() * x_t


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Invert q_sample for x0 given the noise estimate (alpha_bar broadcastable to x_t)."""
    return (x_t - (1.0 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
