"""Deterministic DDIM (eta = 0) sampling and its inversion to the stochastic subcode x_T.

``model(x, t, z) -> eps`` with x (B, C, H, W), t (B,) int64, z (B, D). Steps are
evenly strided over [0, T-1] (diffae's ``space_timesteps``). Sampling walks the
noise levels alpha_bar(tau_{S-1}) -> ... -> alpha_bar(tau_0) -> 1; inversion
walks the same levels backwards, evaluating the model with the same timestep
as the sampling step it mirrors, so sample(invert(x0)) ~= x0 (method.md section 2).
"""

from __future__ import annotations

from typing import Callable

import torch

from daetalker.diffusion.schedule import NoiseSchedule

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly strided over [0, T-1], ascending; one step means t = T-1."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in [1, {num_timesteps}], got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    stride = (num_timesteps - 1) / (steps - 1)
    return [round(i * stride) for i in range(steps)]


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float, clip_x0: bool) -> torch.Tensor:
    """Move x from noise level alpha_bar = a_from to a_to along the deterministic DDIM path."""
    x0 = (x - (1.0 - a_from) ** 0.5 * eps) / a_from**0.5
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        if a_from < 1.0:  # keep eps consistent with the clipped x0, as guided-diffusion does
            eps = (x - a_from**0.5 * x0) / (1.0 - a_from) ** 0.5
    return a_to**0.5 * x0 + (1.0 - a_to) ** 0.5 * eps


def _t(step: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    x_T: torch.Tensor,
    z: torch.Tensor,
    steps: int,
    schedule: NoiseSchedule,
    *,
    clip_x0: bool = True,
) -> torch.Tensor:
    """Decode: x_T (B, C, H, W) and z (B, D) -> x0 (B, C, H, W) in ``steps`` model calls."""
    ts = ddim_timesteps(schedule.num_timesteps, steps)
    levels = [float(schedule.alphas_cumprod[t]) for t in ts]
    x = x_T.float()
    for i in reversed(range(len(ts))):
        eps = model(x, _t(ts[i], x), z).float()
        a_to = levels[i - 1] if i > 0 else 1.0
        x = ddim_step(x, eps, levels[i], a_to, clip_x0)
    return x


@torch.no_grad()
def ddim_invert(
    model: EpsModel,
    x0: torch.Tensor,
    z: torch.Tensor,
    steps: int,
    schedule: NoiseSchedule,
    *,
    clip_x0: bool = False,
) -> torch.Tensor:
    """Encode the stochastic subcode: x0 (B, C, H, W) and z -> x_T such that ddim_sample(x_T, z) ~= x0."""
    ts = ddim_timesteps(schedule.num_timesteps, steps)
    levels = [float(schedule.alphas_cumprod[t]) for t in ts]
    x = x0.float()
    for i in range(len(ts)):
        eps = model(x, _t(ts[i], x), z).float()
        a_from = levels[i - 1] if i > 0 else 1.0
        x = ddim_step(x, eps, a_from, levels[i], clip_x0)
    return x
