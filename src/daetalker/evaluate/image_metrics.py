"""PSNR and SSIM of DAE reconstructions (encode -> decode of held-out frames; method.md section 6).

SSIM is Wang et al. 2004 as their reference code and pytorch-msssim compute it:
an 11x11 Gaussian window with sigma 1.5 (normalised), K1 = 0.01, K2 = 0.03,
C1 = (K1 L)^2, C2 = (K2 L)^2 for data range L, Gaussian-weighted local means,
variances and covariance, "valid" filtering (no padding, so the map is 10 px
smaller per axis), the map averaged per channel and the channels averaged.
Images are (N, H, W, C) or (H, W, C) arrays; scores are averaged over images.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _batch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"image sets differ in shape: {x.shape} vs {y.shape}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) or (H, W, C) images, got shape {x.shape}")
    return x, y


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Mean over images of 10 log10(L^2 / MSE) in dB (inf for identical images)."""
    x, y = _batch(pred, target)
    mse = ((x - y) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        per_image = 10.0 * np.log10(data_range**2 / mse)
    return float(per_image.mean())


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """(size,) normalised 1-D Gaussian; the 2-D window is its outer product."""
    coords = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian over H and W of (N, H, W, C), keeping only fully covered pixels."""
    r = len(g) // 2
    out = correlate1d(correlate1d(x, g, axis=1, mode="constant"), g, axis=2, mode="constant")
    return out[:, r:x.shape[1] - r, r:x.shape[2] - r]


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM over images (per channel, then channel mean); images must be >= 11x11."""
    x, y = _batch(pred, target)
    if min(x.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {x.shape[1:3]}")
    g = gaussian_window()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean(axis=(1, 2)).mean())
