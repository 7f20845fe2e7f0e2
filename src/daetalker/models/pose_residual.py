"""The head motion speech does not explain: a per-axis AR(1) process fitted after training.

A pose predictor trained with L1/L2 regresses to the mean: most head motion is
not a function of the speech (on the demo speaker, slow random drift plus nods
on stressed syllables), so the predicted pose moves a fraction of a degree
where the speaker moves several. Talking-head systems sample that remainder
instead (SadTalker's PoseVAE, for one). Here the remainder is the residual
``r = pose_to_unit(true) - pose_to_unit(predicted)`` per axis, modelled as a
stationary AR(1) process

    r[t] = rho * r[t-1] + sqrt(1 - rho^2) * sigma * n[t],   n ~ N(0, 1),

whose two numbers per axis are fitted on the training and validation clips
once training ends: ``sigma`` the residual's RMS, ``rho`` its lag-1
autocorrelation (how slowly it drifts). Generation adds a seeded draw of it
to the predicted pose (``--pose predicted-motion``), so the head moves as much
as the speaker's and the same seed gives the same video; ``--pose predicted``
(the default) keeps the regression alone.
"""

from __future__ import annotations

import torch

RHO_MAX = 0.999  # a residual with rho >= 1 would not be stationary


def sample_ar1(n: int, sigma: torch.Tensor, rho: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n, A) draws of a stationary AR(1) process: per-axis std ``sigma`` (A,), lag-1 correlation ``rho`` (A,)."""
    sigma, rho = sigma.float().cpu(), rho.float().clamp(0.0, RHO_MAX).cpu()
    noise = torch.randn((n, len(sigma)), generator=generator)  # (n, A)
    out = torch.empty_like(noise)
    innovation = torch.sqrt(1.0 - rho**2)
    prev = noise[0] * sigma  # start in the stationary distribution
    out[0] = prev
    for t in range(1, n):
        prev = rho * prev + innovation * sigma * noise[t]
        out[t] = prev
    return out


class ResidualMoments:
    """Running sums over (T, A) residual sequences for ``sigma`` (RMS) and ``rho`` (lag-1 autocorrelation)."""

    def __init__(self, axes: int) -> None:
        self.sq = torch.zeros(axes, dtype=torch.float64)  # sum r[t]^2 over valid frames
        self.n = torch.zeros(axes, dtype=torch.float64)
        self.lag = torch.zeros(axes, dtype=torch.float64)  # sum r[t] r[t+1] over consecutive valid pairs
        self.lag_sq = torch.zeros(axes, dtype=torch.float64)  # sum r[t]^2 over the same pairs

    def add(self, residual: torch.Tensor, valid: torch.Tensor) -> None:
        """``residual`` (T, A); ``valid`` (T,) bool: frames with a pose label, inside the clip."""
        r = residual.double().masked_fill(~valid[:, None], 0.0)  # (T, A)
        self.sq += (r**2).sum(0)
        self.n += valid.sum()
        pair = (valid[1:] & valid[:-1])[:, None]  # (T-1, 1)
        self.lag += (r[1:] * r[:-1] * pair).sum(0)
        self.lag_sq += ((r[:-1] ** 2 + r[1:] ** 2) / 2 * pair).sum(0)

    def fit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma, rho), each (A,) float32; zeros where no frame had a label."""
        sigma = torch.sqrt(self.sq / self.n.clamp_min(1.0))
        rho = (self.lag / self.lag_sq.clamp_min(1e-12)).clamp(0.0, RHO_MAX)
        return sigma.float(), rho.float()
