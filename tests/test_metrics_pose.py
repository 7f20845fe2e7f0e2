"""Pose metrics (std, MAE, Beat Align), M-LMD, and the DAE reconstruction metrics PSNR / SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daetalker.evaluate.image_metrics import gaussian_window, psnr, ssim
from daetalker.evaluate.landmark_metrics import face_height, mouth_lmd
from daetalker.evaluate.pose_metrics import (
    audio_beats,
    beat_align,
    beat_align_score,
    motion_beats,
    pick_peaks,
    pose_mae,
    pose_std,
)
from daetalker.face.mesh import CHIN, FOREHEAD, MOUTH


# ------------------------------------------------------------------ pose
def test_pose_std_and_mae_hand_computed() -> None:
    pose = np.array([[0.0, 0.0, 0.0], [2.0, 4.0, 6.0]])
    assert pose_std(pose) == {"yaw": 1.0, "pitch": 2.0, "roll": 3.0}
    gt = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 6.0]])
    # |pose - gt| = [[1, 0, 1], [0, 3, 0]]
    assert pose_mae(pose, gt) == pytest.approx({"yaw": 0.5, "pitch": 1.5, "roll": 0.5, "mean": 5 / 6}, abs=1e-15)
    with pytest.raises(ValueError, match="length"):
        pose_mae(pose, gt[:1])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        pose_std(np.zeros((4, 2)))


def test_beat_align_hand_computed() -> None:
    # nearest motion beats: 5 -> 0, 18 -> 3 frames (15), 30 -> 5 frames (25)
    ba = beat_align(np.array([5, 18, 30]), np.array([5, 15, 25]))
    assert ba == pytest.approx((1 + math.exp(-9 / 18) + math.exp(-25 / 18)) / 3, abs=1e-12)
    assert beat_align(np.array([7]), np.array([7])) == 1.0
    assert beat_align(np.array([3, 9]), np.array([])) == 0.0
    assert math.isnan(beat_align(np.array([]), np.array([1, 2])))


def cosine_pose(n: int = 60, period: int = 20, peak: float = 5.5) -> np.ndarray:
    t = np.arange(n)
    return np.stack([10 * np.cos(2 * np.pi * (t - peak) / period), 3 * np.cos(2 * np.pi * (t - peak) / period),
                     np.zeros(n)], axis=1)


def test_motion_beats_are_speed_minima() -> None:
    # turning points of the cosine at frames 5.5, 15.5, ...: zero speed between frames t and t + 1 at t = 5, 15, ...
    np.testing.assert_array_equal(motion_beats(cosine_pose()), [5, 15, 25, 35, 45, 55])
    np.testing.assert_array_equal(motion_beats(cosine_pose(), smooth_sigma=0), [5, 15, 25, 35, 45, 55])
    assert motion_beats(np.zeros((30, 3))).size == 0  # a still head has no strict minima


def clicks(frames: list[int], n_frames: int = 60, seed: int = 0) -> np.ndarray:
    """Noise bursts starting mid-way through the given 25 fps frames, over a faint noise floor."""
    rng = np.random.default_rng(seed)
    audio = 0.001 * rng.standard_normal(640 * n_frames)
    for k in frames:
        start = 640 * k + 320
        audio[start:start + 800] += 0.5 * rng.standard_normal(800) * np.exp(-np.arange(800) / 200)
    return audio


def test_audio_beats_find_onsets_in_their_frames() -> None:
    np.testing.assert_array_equal(audio_beats(clicks([5, 12, 20, 33, 41])), [5, 12, 20, 33, 41])
    assert audio_beats(np.zeros(16000)).size == 0


def test_pick_peaks_follows_librosa_rules() -> None:
    x = np.zeros(40)
    x[[2, 7, 8, 22, 24]] = [1.0, 0.5, 0.6, 0.3, 0.35]
    # 7 is a max of x[4..7] (the window looks 3 back, 0 ahead); 8 is within `wait` of 7;
    # 24 is within wait (3) of 22
    np.testing.assert_array_equal(pick_peaks(x), [2, 7, 22])
    # delta 0.4: 7 (0.5) is not 0.4 above its +-10 mean 2.1 / 18, 8 (0.6) is and now counts;
    # 22 and 24 are not
    np.testing.assert_array_equal(pick_peaks(x, delta=0.4), [2, 8])


def test_beat_align_score_end_to_end() -> None:
    pose = cosine_pose()  # motion beats 5, 15, 25, 35, 45, 55
    assert beat_align_score(clicks([5, 15, 25, 35, 45]), pose) == pytest.approx(1.0)
    assert beat_align_score(clicks([8, 18, 28, 38, 48]), pose) == pytest.approx(math.exp(-9 / 18))


# ------------------------------------------------------------- landmarks
def face(n: int = 3) -> np.ndarray:
    """(n, 468, 3): forehead (50, 10), chin (50, 110) -> face height 100; lips on a circle of radius 10."""
    lm = np.zeros((n, 468, 3))
    lm[:, FOREHEAD, :2] = (50, 10)
    lm[:, CHIN, :2] = (50, 110)
    ang = np.linspace(0, 2 * np.pi, len(MOUTH), endpoint=False)
    lm[:, MOUTH, 0] = 50 + 10 * np.cos(ang)
    lm[:, MOUTH, 1] = 80 + 10 * np.sin(ang)
    return lm


def test_mouth_lmd_hand_computed() -> None:
    gt = face()
    assert face_height(gt).tolist() == [100.0, 100.0, 100.0]
    moved = gt.copy()
    moved[:, MOUTH, :2] += (3, 4)  # the whole mouth moved by 5 px
    assert mouth_lmd(moved, gt) == pytest.approx(0.0, abs=1e-12)  # centred: shape unchanged
    assert mouth_lmd(moved, gt, center=False) == pytest.approx(0.05)
    wide = gt.copy()
    wide[:, MOUTH, :2] = (50, 80) + 1.5 * (gt[:, MOUTH, :2] - (50, 80))  # radius 10 -> 15: 5 px per point
    assert mouth_lmd(wide, gt) == pytest.approx(0.05)
    half = wide.copy()
    half[1] = gt[1]  # one frame of three is exact
    assert mouth_lmd(half, gt) == pytest.approx(0.05 * 2 / 3)
    with pytest.raises(ValueError, match="shape"):
        mouth_lmd(gt[:2], gt)


# ------------------------------------------------------------ PSNR / SSIM
def test_psnr_hand_computed() -> None:
    a = np.zeros((2, 16, 16, 3))
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    assert psnr(a[0], a[0] + 0.1, data_range=1.0) == pytest.approx(20.0)
    assert psnr(a, a) == math.inf


def test_ssim_of_constant_images_hand_computed() -> None:
    # no variance anywhere: SSIM = (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 255)^2
    c1 = (0.01 * 255) ** 2
    a, b = np.full((1, 16, 16, 3), 50.0), np.full((1, 16, 16, 3), 110.0)
    assert ssim(a, b) == pytest.approx((2 * 50 * 110 + c1) / (50**2 + 110**2 + c1), abs=1e-12)


def brute_force_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """Wang et al.'s definition, window by window, for one single-channel image."""
    g = np.outer(gaussian_window(), gaussian_window())
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (g * px).sum(), (g * py).sum()
            vx, vy = (g * (px - mx) ** 2).sum(), (g * (py - my) ** 2).sum()
            cov = (g * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_the_definition_window_by_window() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (13, 14)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255)
    assert ssim(x[..., None], y[..., None]) == pytest.approx(brute_force_ssim(x, y), abs=1e-10)
    g = gaussian_window()
    assert g.sum() == pytest.approx(1.0) and g[5] == g.max() and g[0] == pytest.approx(g[10])


def test_ssim_falls_with_noise_and_is_one_for_identical() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.stack([128 + 100 * np.sin(xx / 4.0), 128 + 100 * np.cos(yy / 5.0), 4.0 * (xx + yy)], axis=-1)
    scores = [ssim(img, np.clip(img + rng.normal(0, s, img.shape), 0, 255)) for s in (2, 10, 40)]
    assert ssim(img, img) == pytest.approx(1.0)
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(img[:8, :8], img[:8, :8])
