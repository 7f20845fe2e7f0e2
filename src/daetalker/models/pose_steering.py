"""Pose steering: a generated latent carries the pose it was given, not the one its speech suggests.

speech2latent adds the pose it is fed to its hidden sequence, but speech
features also carry the head motion that goes with speech (whisper-tiny's do:
on the demo speaker a constant pose still moved the head 1.0 degree, and
another clip's pose was followed at yaw r 0.61; docs/latent-dae.md). A
diffusion autoencoder's semantic latent is close to linear in such attributes
(Diffusion Autoencoders edit a face by moving z along a linear classifier's
direction), so pose is pinned in z itself. On the real DAE latents of the
training clips, fitted once training ends (standardised latents z (D,), pose
p (3,) in speech2latent's unit scale):

* a ridge probe ``p ~ W z + b`` that reads the pose out of a latent (W (3, D));
* the direction the data's latents move with pose, ``A = Cov(z, p) Cov(p)^-1``
  (D, 3), the least-squares regression of z on p.

Generation then moves each latent along A, ``z' = z + A (W A)^-1 (p - W z - b)``
with ``G = A (W A)^-1`` stored: the probe reads exactly the requested pose
from z', and the move stays in the 3-dimensional span of the data's own pose
direction, so what the probe does not read (mouth, eyes) is left as it was.

The same fit on the mouth opening (one attribute, standardised on the training
frames) gives the **mouth gain**: a DAE trained on a CPU budget draws the mouth
that z asks for at a fraction of its size (grid-s1 after 6000 steps: 11-30 % of
the real mouth's movement, docs/real-speaker.md), so generation may scale the
mouth reading r = w z + b (0 = the training mean) by a gain along the mouth's
own direction, ``z' = z + (gain - 1) r g``, before the pose is pinned. Like the
expression scale of other talking-head systems, it is a rendering choice: the
speaker's settings carry it, and evaluate records it.
"""

from __future__ import annotations

import torch

RIDGE = 1e-3  # relative to the mean latent variance: keeps W stable where latent dims are collinear
MIN_POSE_VAR = 1e-4  # unit scale (variance 1 on a moving axis): an axis this still is not steered


class PoseLatentMoments:
    """Running first and second moments of (latent (D,), pose (A,)) pairs over valid frames, in float64."""

    def __init__(self, latent_dim: int, axes: int) -> None:
        self.n = 0
        self.sz = torch.zeros(latent_dim, dtype=torch.float64)
        self.sp = torch.zeros(axes, dtype=torch.float64)
        self.szz = torch.zeros(latent_dim, latent_dim, dtype=torch.float64)
        self.szp = torch.zeros(latent_dim, axes, dtype=torch.float64)
        self.spp = torch.zeros(axes, axes, dtype=torch.float64)

    def add(self, latent: torch.Tensor, pose: torch.Tensor) -> None:
        """``latent`` (T, D) and ``pose`` (T, A) of frames that all have a pose label."""
        z, p = latent.double().cpu(), pose.double().cpu()
        self.n += len(z)
        self.sz += z.sum(0)
        self.sp += p.sum(0)
        self.szz += z.T @ z
        self.szp += z.T @ p
        self.spp += p.T @ p

    def active(self) -> torch.Tensor:
        """(A,) bool: the axes that move in the data (a still axis has nothing to steer by)."""
        n = max(self.n, 1)
        var = (self.spp / n).diagonal() - (self.sp / n) ** 2
        return var > MIN_POSE_VAR

    def fit(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W (A, D), b (A,), G (D, A)) as float32, zero on still axes; all zeros (steering off) with too
        few frames to fit."""
        d, a = self.szp.shape
        w, b, g = torch.zeros(a, d, dtype=torch.float64), torch.zeros(a, dtype=torch.float64), torch.zeros(d, a)
        on = self.active()
        if self.n <= d + a or not on.any():
            return w.float(), b.float(), g.float()
        mz, mp = self.sz / self.n, self.sp / self.n
        czz = self.szz / self.n - torch.outer(mz, mz)  # (D, D)
        czp = (self.szp / self.n - torch.outer(mz, mp))[:, on]  # (D, a_on)
        cpp = (self.spp / self.n - torch.outer(mp, mp))[on][:, on]  # (a_on, a_on)
        ridge = RIDGE * czz.diagonal().mean().clamp_min(1e-12) * torch.eye(d, dtype=torch.float64)
        w_on = torch.linalg.solve(czz + ridge, czp).T  # (a_on, D): the probe
        # pinv, not inv: axes that always move together (collinear) are steered as one
        direction = czp @ torch.linalg.pinv(cpp)  # (D, a_on): z's regression on p
        w[on] = w_on
        b[on] = mp[on] - w_on @ mz
        g[:, on] = (direction @ torch.linalg.pinv(w_on @ direction)).float()  # W G = I on the moving axes
        return w.float(), b.float(), g


def probe_r2(moments: PoseLatentMoments, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A,) share of each pose axis' variance the probe (w, b) explains on the frames in ``moments``
    (meaningless on a still axis: see :meth:`PoseLatentMoments.active`)."""
    n = max(moments.n, 1)
    w64, b64 = w.double(), b.double()
    mp = moments.sp / n
    # E||p - Wz - b||^2 per axis from the moments: E[pp] - 2 E[p (Wz + b)] + E[(Wz + b)^2]
    epp = (moments.spp / n).diagonal()
    epz = (moments.szp / n).T  # (A, D): E[p z^T]
    cross = (epz * w64).sum(1) + b64 * mp
    ezz = moments.szz / n
    fitted_sq = ((w64 @ ezz) * w64).sum(1) + 2 * b64 * (w64 @ (moments.sz / n)) + b64**2
    sse = epp - 2 * cross + fitted_sq
    var = epp - mp**2
    return (1.0 - sse / var.clamp_min(1e-12)).float()


def steer(latent: torch.Tensor, pose_unit: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
          g: torch.Tensor) -> torch.Tensor:
    """``latent`` (..., D) moved so the probe reads ``pose_unit`` (..., A): z + (p - W z - b) G^T."""
    err = pose_unit - (latent @ w.T + b)  # (..., A)
    return latent + err @ g.T


def amplify(latent: torch.Tensor, w: torch.Tensor, b: torch.Tensor, g: torch.Tensor, gain: float) -> torch.Tensor:
    """``latent`` (..., D) moved so the probe (w (D,), b ()) reads ``gain`` times what it read, along g (D,)."""
    reading = latent @ w + b  # (...,) unit scale: 0 is the training frames' mean
    return latent + ((gain - 1.0) * reading)[..., None] * g
