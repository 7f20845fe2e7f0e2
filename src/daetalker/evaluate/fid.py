"""FID between real and generated frames (Heusel et al. 2017), computed as pytorch-fid does.

Features: the pinned TorchScript Inception-v3 FID extractor (``fid_inception_v3.pt``,
2048-d pool features, input (N, 3, 299, 299) in [-1, 1]). Both sets must be the
same crop at the same resolution; each frame is resized to 299x299 bilinearly
(``align_corners=False``, as pytorch-fid) inside the extractor call, so real and
generated frames take exactly the same path.

FID = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)), with the matrix square
root from ``scipy.linalg.sqrtm``. As in pytorch-fid: if the product is singular
enough that the root is not finite, eps = 1e-6 is added to both diagonals; a
complex root whose diagonal has imaginary parts above 1e-3 is an error; otherwise
the real part is kept. FID from fewer frames than 2048 is biased upwards (the
covariances are rank-deficient): compare numbers only at equal frame counts.

From features with fewer frames than dimensions (the usual case for one
speaker's test clips) ``fid_from_features`` takes the trace of the root exactly
without ``sqrtm``: with centred features A (n1, D), B (n2, D),
S1 S2 = A^T A B^T B / ((n1-1)(n2-1)) has the non-zero eigenvalues of
(A B^T)(A B^T)^T, so Tr (S1 S2)^(1/2) = ||A B^T||_* / sqrt((n1-1)(n2-1)) (nuclear
norm, an SVD of an n1 x n2 matrix). ``sqrtm`` of a singular 2048x2048 product is
both slow (90-290 s measured on this project's 2-core machines) and inexact
(the self-FID of 48 frames came out at -6e-4); tests check both paths agree.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from daetalker.errors import DaetalkerError

INCEPTION_SIZE = 299
FEATURE_DIM = 2048


class InceptionFeatures:
    """uint8 (N, H, W, 3) RGB frames -> (N, 2048) float64 Inception pool features."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        from daetalker.assets import asset_path

        self.device = torch.device(device)
        self.batch_size = batch_size
        with warnings.catch_warnings():  # the asset is TorchScript; torch 2.13 flags jit.load as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(asset_path("fid_inception_v3.pt")), map_location=self.device).eval()
        self.frame_shape: tuple[int, ...] | None = None  # (H, W, 3) of the frames of the last call

    @staticmethod
    def preprocess(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB -> float32 (N, 3, 299, 299) in [-1, 1]."""
        x = torch.as_tensor(np.ascontiguousarray(frames))
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[-1] == 3, (x.dtype, tuple(x.shape))
        x = x.movedim(-1, 1).float().div_(127.5).sub_(1.0)
        if tuple(x.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, frames: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """One array of frames, or an iterable of batches (e.g. clip by clip, memory-mapped)."""
        batches = [frames] if isinstance(frames, np.ndarray) else frames
        out, shapes = [], set()
        for arr in batches:
            shapes.add(tuple(arr.shape[1:]))
            if len(shapes) > 1:
                raise DaetalkerError(f"FID: frames of one set differ in size {sorted(shapes)}; "
                                     "use one crop and resolution")
            for s in range(0, len(arr), self.batch_size):
                x = self.preprocess(arr[s:s + self.batch_size]).to(self.device)
                out.append(self.model(x).double().cpu().numpy())
        if not out:
            raise DaetalkerError("FID: no frames given")
        self.frame_shape = shapes.pop()
        feats = np.concatenate(out)
        assert feats.shape[1] == FEATURE_DIM, feats.shape
        return feats


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,), covariance (D, D) with N - 1 in the denominator (np.cov, as pytorch-fid)."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise DaetalkerError(f"FID needs at least 2 frames per set, got features of shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid's handling of sqrtm)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == (mu1.size, mu1.size)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularise both covariances
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise DaetalkerError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm "
                                 "(covariances too ill-conditioned; use more frames)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def trace_sqrt_product_lowrank(real: np.ndarray, fake: np.ndarray) -> float:
    """Tr (S1 S2)^(1/2) from (n1, D) and (n2, D) features, exactly, via the nuclear norm of A B^T."""
    a = real - real.mean(axis=0)
    b = fake - fake.mean(axis=0)
    singular = np.linalg.svd(a @ b.T, compute_uv=False)
    return float(singular.sum() / np.sqrt((len(a) - 1) * (len(b) - 1)))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID of two (N, D) feature sets: low-rank exact trace when a set has fewer frames than D, else sqrtm."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    (mu1, sigma1), (mu2, sigma2) = feature_statistics(real), feature_statistics(fake)
    if min(len(real), len(fake)) > real.shape[1]:
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product_lowrank(real, fake)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid(real_frames: np.ndarray | Iterable[np.ndarray], fake_frames: np.ndarray | Iterable[np.ndarray],
        extractor: InceptionFeatures | None = None) -> float:
    """FID between two sets of uint8 (N, H, W, 3) RGB frames of the same crop and resolution."""
    if isinstance(real_frames, np.ndarray) and isinstance(fake_frames, np.ndarray):
        _check_same_shape(real_frames.shape[1:], fake_frames.shape[1:])  # before paying for features
    extractor = extractor or InceptionFeatures()
    real = extractor(real_frames)
    real_shape = extractor.frame_shape
    fake = extractor(fake_frames)
    _check_same_shape(real_shape, extractor.frame_shape)
    return fid_from_features(real, fake)


def _check_same_shape(real: tuple[int, ...] | None, fake: tuple[int, ...] | None) -> None:
    if tuple(real or ()) != tuple(fake or ()):
        raise DaetalkerError(f"FID: real frames {real} and generated frames {fake} differ; "
                             "score both at the same crop and resolution")
