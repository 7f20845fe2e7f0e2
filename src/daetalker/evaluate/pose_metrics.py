"""Head-pose metrics (method.md section 6): diversity, error against ground truth, Beat Align.

Poses are (N, 3) arrays of (yaw, pitch, roll) in degrees, one row per 25 fps frame.

Beat Align (Li et al. 2022, Bailando, as used for head motion by DAE-Talker):
``BA = mean_b exp(-min_m (m - b)^2 / (2 * 9))`` over audio beats b, with motion
beats m, both in video frames. Motion beats follow Bailando's ``get_mb``: the
speed |pose[t+1] - pose[t]| (index t, between frames t and t+1), smoothed with a
Gaussian, and its strict local minima (``argrelextrema(np.less)``). Audio beats
are onsets, as librosa's ``onset_detect`` finds them: spectral flux of a log-mel
spectrogram at 100 Hz, then its peak picking (local max over 30 ms before, above
the +-100 ms moving average by 0.07 of the normalised envelope, 30 ms apart),
each onset mapped to the video frame whose 40 ms interval holds it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import argrelextrema

from daetalker.evaluate.mfcc import FPS, SAMPLE_RATE, mel_filterbank

AXES = ("yaw", "pitch", "roll")
BA_SIGMA2 = 9.0  # Bailando: 2 * 9 in the exponent's denominator, frames^2
ONSET_HOP = 160  # 10 ms at 16 kHz
ONSET_FFT = 512
ONSET_MELS = 40


def _check_pose(pose: np.ndarray) -> np.ndarray:
    p = np.asarray(pose, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"pose must be (N, 3) yaw/pitch/roll, got shape {p.shape}")
    return p


def pose_std(pose: np.ndarray) -> dict[str, float]:
    """Per-axis standard deviation (population, ddof 0) in degrees: motion diversity."""
    s = _check_pose(pose).std(axis=0)
    return {axis: float(v) for axis, v in zip(AXES, s)}


def pose_mae(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean absolute error per axis and over all three, in degrees; both (N, 3) of one clip."""
    p, g = _check_pose(pred), _check_pose(gt)
    if p.shape != g.shape:
        raise ValueError(f"pose sequences differ in length: {p.shape} vs {g.shape}")
    err = np.abs(p - g)
    return {**{axis: float(v) for axis, v in zip(AXES, err.mean(axis=0))}, "mean": float(err.mean())}


def onset_strength(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono audio -> (T,) spectral flux at 100 Hz; frame n is centred on sample 160 n."""
    x = np.asarray(audio, dtype=np.float64)
    assert x.ndim == 1, x.shape
    hop = ONSET_HOP * sample_rate // SAMPLE_RATE
    # centred frames; reflect padding, so the start of the file is not an onset (zero padding makes one)
    x = np.pad(x, ONSET_FFT // 2, mode="reflect")
    n = 1 + (len(x) - ONSET_FFT) // hop
    idx = np.arange(ONSET_FFT)[None, :] + hop * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(ONSET_FFT + 1)[:-1], ONSET_FFT)) ** 2  # periodic Hann
    mel = power @ mel_filterbank(ONSET_MELS, ONSET_FFT, sample_rate).T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 80.0)  # librosa power_to_db(top_db=80)
    flux = np.maximum(0.0, np.diff(db, axis=0)).mean(axis=1)
    return np.concatenate([[0.0], flux])  # flux n compares frames n-1 and n


def pick_peaks(env: np.ndarray, pre_max: int = 3, post_max: int = 1, pre_avg: int = 10, post_avg: int = 11,
               delta: float = 0.07, wait: int = 3) -> np.ndarray:
    """librosa.util.peak_pick with onset_detect's 100 Hz defaults (windows truncated at the ends).

    n is a peak if x[n] = max x[n-pre_max : n+post_max], x[n] >= mean x[n-pre_avg : n+post_avg] + delta,
    x[n] > 0, and n is more than ``wait`` frames after the previous peak.
    """
    x = np.asarray(env, dtype=np.float64)
    n = np.arange(len(x))
    padded = np.concatenate([np.full(pre_max, -np.inf), x, np.full(post_max, -np.inf)])
    mov_max = np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max)[: len(x)].max(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    lo, hi = np.maximum(n - pre_avg, 0), np.minimum(n + post_avg, len(x))
    mov_avg = (csum[hi] - csum[lo]) / (hi - lo)
    peaks: list[int] = []
    for i in np.flatnonzero((x == mov_max) & (x >= mov_avg + delta) & (x > 0)):
        if not peaks or i > peaks[-1] + wait:
            peaks.append(int(i))
    return np.array(peaks, dtype=np.int64)


def audio_beats(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """Onset frames of mono audio, as video frame indices at ``fps`` (sorted, unique)."""
    env = onset_strength(audio, sample_rate)
    span = env.max() - env.min()
    if span <= 0:
        return np.zeros(0, dtype=np.int64)
    onsets = pick_peaks((env - env.min()) / span)  # librosa normalises the envelope before peak picking
    seconds = onsets * ONSET_HOP / SAMPLE_RATE
    n_frames = int(np.ceil(len(audio) / sample_rate * fps))
    return np.unique(np.clip(np.floor(seconds * fps).astype(np.int64), 0, max(n_frames - 1, 0)))


def motion_beats(pose: np.ndarray, smooth_sigma: float = 2.0) -> np.ndarray:
    """Strict local minima of the Gaussian-smoothed head-pose speed (frames; Bailando's get_mb).

    ``smooth_sigma`` (frames) is a (default) for 25 fps head motion; Bailando used 5 at 60 fps.
    """
    p = _check_pose(pose)
    speed = np.linalg.norm(np.diff(p, axis=0), axis=1)  # (N - 1,) degrees per frame
    if smooth_sigma > 0:
        speed = gaussian_filter1d(speed, smooth_sigma)
    return argrelextrema(speed, np.less)[0].astype(np.int64)


def beat_align(audio_beat_frames: np.ndarray, motion_beat_frames: np.ndarray, sigma2: float = BA_SIGMA2) -> float:
    """BA = mean over audio beats b of exp(-min_m (m - b)^2 / (2 sigma2)).

    NaN without audio beats (nothing to align to), 0 without motion beats.
    """
    b = np.asarray(audio_beat_frames, dtype=np.float64).reshape(-1)
    m = np.asarray(motion_beat_frames, dtype=np.float64).reshape(-1)
    if b.size == 0:
        return float("nan")
    if m.size == 0:
        return 0.0
    nearest = np.min((m[None, :] - b[:, None]) ** 2, axis=1)
    return float(np.mean(np.exp(-nearest / (2.0 * sigma2))))


def beat_align_score(audio: np.ndarray, pose: np.ndarray, sample_rate: int = SAMPLE_RATE,
                     smooth_sigma: float = 2.0) -> float:
    """Beat Align of a pose sequence against the audio it was generated from."""
    return beat_align(audio_beats(audio, sample_rate), motion_beats(pose, smooth_sigma))
