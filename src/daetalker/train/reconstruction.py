"""DAE reconstructions: decode frames from random noise and from their inverted noise, with PSNR.

Used for the trainer's logged grids and for the acceptance figures
(bench/dae_acceptance.py). Decoding conditions on z = Encoder(x0).
"""

from __future__ import annotations

import numpy as np
import torch

from daetalker.diffusion import NoiseSchedule, ddim_invert, ddim_sample
from daetalker.models import DiffusionAutoencoder
from daetalker.models.device import autocast
from daetalker.models.images import to_uint8


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images (B, ...) in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def reconstruct(
    model: DiffusionAutoencoder,
    x0: torch.Tensor,
    steps: int,
    sched: NoiseSchedule,
    *,
    seed: int = 0,
    bf16: bool = False,
    invert_steps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(random-noise decode with ``steps``, inverted-noise decode with ``invert_steps`` (default
    ``steps``) for both the inversion and the decode) of frames x0 (B, 3, P, P), both (B, 3, P, P) on
    x0's device. Diffusion runs in the model's space (pixels or the first stage's grid)."""
    device = next(model.parameters()).device
    with autocast(device, bf16):
        x0 = model.to_space(x0.to(device))  # (B, C, R, R)

    def eps(x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with autocast(device, bf16):
            return model.eps(x, t, z)

    with autocast(device, bf16):
        z = model.encode(x0).float()
    g = torch.Generator(device=device).manual_seed(seed)
    x_T = torch.randn(x0.shape, generator=g, device=device)
    noise_decode = ddim_sample(eps, x_T, z, steps, sched, clip_x0=model.clips_x0)
    # the inverted code lies on the model's own deterministic path: clipping x0 would break the round trip
    k = invert_steps or steps
    inverted_decode = ddim_sample(eps, ddim_invert(eps, x0, z, k, sched), z, k, sched, clip_x0=False)
    with autocast(device, bf16):
        return model.to_pixels(noise_decode), model.to_pixels(inverted_decode)


def recon_grid(x0: torch.Tensor, noise_dec: torch.Tensor, inv_dec: torch.Tensor) -> np.ndarray:
    """uint8 (B*R, 3*R, 3) image: one row per frame, columns input | noise decode | inverted decode."""
    rows = torch.cat([x0.cpu(), noise_dec.cpu(), inv_dec.cpu()], dim=-1)  # (B, 3, R, 3R)
    return to_uint8(torch.cat(list(rows), dim=-2))  # (B*R, 3R, 3)
