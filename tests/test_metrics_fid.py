"""FID: the Frechet formula on hand-computed Gaussians, and behaviour with the Inception asset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from daetalker.errors import DaetalkerError
from daetalker.evaluate.fid import (
    InceptionFeatures,
    feature_statistics,
    fid,
    fid_from_features,
    frechet_distance,
    trace_sqrt_product_lowrank,
)


# ---------------------------------------------------------------- formula
def test_frechet_diagonal_hand_computed() -> None:
    # diagonal: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 = (1 + 4) + (1 - 2)^2 + (2 - 3)^2 = 7
    d = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]), np.diag([4.0, 9.0]))
    assert d == pytest.approx(7.0, abs=1e-12)
    assert frechet_distance(np.ones(3), np.eye(3), np.ones(3), np.eye(3)) == pytest.approx(0.0, abs=1e-12)


def test_frechet_commuting_covariances_hand_computed() -> None:
    # same eigenvectors (rotated 30 degrees), eigenvalues (1, 4) and (9, 16):
    # Tr (S1 S2)^(1/2) = 3 + 8 -> FID = |dmu|^2 + (1 + 4 + 9 + 16) - 2 * 11 = 2 + 8
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    r = np.array([[c, -s], [s, c]])
    s1, s2 = r @ np.diag([1.0, 4.0]) @ r.T, r @ np.diag([9.0, 16.0]) @ r.T
    assert frechet_distance(np.array([1.0, 0.0]), s1, np.array([0.0, 1.0]), s2) == pytest.approx(10.0, abs=1e-10)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_handles_singular_covariances() -> None:
    # rank-1 covariances: sqrtm of the singular product stays finite or gets the eps fallback
    v = np.array([[1.0, 2.0, 0.0]]).T
    s1, s2 = v @ v.T, 4.0 * v @ v.T  # same direction, variances 5 and 20 along it
    # Tr(S1 + S2) - 2 Tr sqrt(S1 S2) = 25 - 2 * sqrt(5 * 20) = 5 = (sqrt 5 - sqrt 20)^2
    assert frechet_distance(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(5.0, abs=1e-4)


def test_lowrank_trace_equals_sqrtm_path() -> None:
    rng = np.random.default_rng(0)
    for n1, n2, dim in ((6, 9, 10), (60, 40, 10), (5, 5, 3)):
        a = rng.standard_normal((n1, dim))
        b = 2.0 * rng.standard_normal((n2, dim)) @ rng.standard_normal((dim, dim)) + 1.0
        (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
        via_sqrtm = frechet_distance(m1, s1, m2, s2)
        assert fid_from_features(a, b) == pytest.approx(via_sqrtm, rel=1e-6)
        from scipy.linalg import sqrtm

        exact = np.trace(sqrtm(s1 @ s2)).real
        assert trace_sqrt_product_lowrank(a, b) == pytest.approx(exact, rel=1e-6)
    x = rng.standard_normal((30, 2048))
    assert abs(fid_from_features(x, x)) < 1e-8
    with pytest.raises(DaetalkerError, match="at least 2"):
        feature_statistics(x[:1])


# --------------------------------------------------------------- Inception
N_IMAGES = 16  # Inception-v3 on a CPU costs 0.1-0.5 s per image: keep the sets small


def varied_images(n: int = N_IMAGES, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): colour gradients with a few random ellipses and bars each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.stack([rng.uniform(0, 255)
                        + rng.uniform(-120, 120) * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
                        for _ in range(3)], axis=-1)
        for _ in range(rng.integers(2, 5)):
            cx, cy, rx, ry = rng.uniform(0.1, 0.9, 2).tolist() + rng.uniform(0.05, 0.3, 2).tolist()
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
            img[mask] = rng.uniform(0, 255, 3)
        x0 = rng.integers(0, size - 8)
        img[:, x0:x0 + rng.integers(2, 8)] = rng.uniform(0, 255, 3)
        out[i] = np.clip(img, 0, 255)
    return out


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def noise(images: np.ndarray, std: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0, std, images.shape), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def extractor() -> InceptionFeatures:
    return InceptionFeatures(batch_size=N_IMAGES)


def test_preprocess_maps_uint8_to_inception_input() -> None:
    frames = np.zeros((2, 40, 40, 3), np.uint8)
    frames[0] = 255
    x = InceptionFeatures.preprocess(frames)
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    assert float(x[0].min()) == 1.0 and float(x[1].max()) == -1.0


@pytest.mark.slow
def test_fid_is_zero_on_itself_and_grows_with_degradation(extractor: InceptionFeatures) -> None:
    real = varied_images()
    feats = extractor(real)
    assert feats.shape == (N_IMAGES, 2048) and extractor.frame_shape == (64, 64, 3)
    np.testing.assert_allclose(extractor(real[:4]), feats[:4], rtol=1e-4, atol=1e-4)  # batch-independent
    assert abs(fid_from_features(feats, feats)) < 1e-6
    assert fid_from_features(feats, feats[::-1]) == pytest.approx(0.0, abs=1e-6)  # order does not matter
    blurred = [fid_from_features(feats, extractor(blur(real, s))) for s in (0.7, 1.5, 3.0)]
    noisy = [fid_from_features(feats, extractor(noise(real, s))) for s in (8.0, 24.0, 64.0)]
    assert 0.0 < blurred[0] < blurred[1] < blurred[2], blurred
    assert 0.0 < noisy[0] < noisy[1] < noisy[2], noisy


def test_fid_refuses_different_resolutions(extractor: InceptionFeatures) -> None:
    a = varied_images(2, 32)
    b = varied_images(2, 48)
    with pytest.raises(DaetalkerError, match="same crop and resolution"):
        fid(a, b, extractor)  # refused before any Inception forward
    with pytest.raises(DaetalkerError, match="differ in size"):
        extractor([a, b])
