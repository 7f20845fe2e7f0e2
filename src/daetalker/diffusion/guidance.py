"""Reference guidance: push each DDIM step further along the change z asks for, away from a reference latent.

Every frame of a video starts from the reference frame's inverted x_T, on whose
deterministic path the reference latent z_ref decodes the reference frame back. A
small DAE follows a change of z only in part (on the demo speaker a pose fed in
reaches the rendered head at about a quarter of its amplitude; docs/latent-dae.md),
so the step extrapolates, as classifier-free guidance does with its unconditional
branch, but with the reference latent as the baseline (no retraining needed)::

    eps_w(x, t, z) = eps(x, t, z_ref) + w * (eps(x, t, z) - eps(x, t, z_ref))

w = 1 is the plain model; w > 1 costs one more model call per step (batched with
the first). With z = z_ref the guided path is the plain one, so the reference frame
still decodes to itself.
"""

from __future__ import annotations

import torch

from daetalker.diffusion.ddim import EpsModel


def reference_guided(model: EpsModel, z_ref: torch.Tensor, scale: float) -> EpsModel:
    """``model`` with reference guidance of strength ``scale`` (1 = ``model`` itself); ``z_ref`` is (1, D)."""
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if scale == 1.0:
        return model
    assert z_ref.ndim == 2 and z_ref.shape[0] == 1, f"z_ref must be (1, D), got {tuple(z_ref.shape)}"

    def eps(x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ref = z_ref.to(z).expand_as(z)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([z, ref]))  # (2B, C, H, W): one call
        e, e_ref = both.chunk(2)
        return e_ref + scale * (e - e_ref)

    return eps
