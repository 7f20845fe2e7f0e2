"""MFCC exactly as the SyncNet protocol computes it (``python_speech_features.mfcc`` defaults).

syncnet_python reads the 16 kHz mono wav with ``scipy.io.wavfile`` (int16 PCM,
values in -32768..32767, *not* scaled to [-1, 1]) and calls
``python_speech_features.mfcc(audio, 16000)``: 25 ms frames every 10 ms
(400 / 160 samples), no window function, pre-emphasis 0.97, |rFFT(512)|^2 / 512,
26 triangular mel filters over 0..8 kHz, log, DCT-II (orthonormal), 13
coefficients, sinusoidal lifter 22, and c0 replaced by the log frame energy.
This is a numpy re-implementation of version 0.6 of that package (checked
against it to float64 precision in tests/test_metrics_lse.py), so the project
does not depend on it. The int16 scale matters: it shifts c0 by 2 ln 32768,
which the official SyncNet weights were trained with.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct

from daetalker.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: F401 (the protocol's timebase)
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
N_MFCC = 13


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int = 26, n_fft: int = 512, sample_rate: int = SAMPLE_RATE,
                   low_hz: float = 0.0, high_hz: float | None = None) -> np.ndarray:
    """Triangular filters (n_filters, n_fft // 2 + 1) on FFT bins floored as python_speech_features does."""
    high_hz = high_hz or sample_rate / 2
    assert high_hz <= sample_rate / 2, "high_hz above Nyquist"
    mels = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), n_filters + 2)
    bins = np.floor((n_fft + 1) * mel_to_hz(mels) / sample_rate)
    fb = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        rise = np.arange(int(lo), int(mid))
        fall = np.arange(int(mid), int(hi))
        fb[j, rise] = (rise - lo) / (mid - lo)
        fb[j, fall] = (hi - fall) / (hi - mid)
    return fb


def frame_signal(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    """(S,) -> (T, frame_len), zero-padded at the end; T = 1 + ceil((S - frame_len) / step)."""
    n = len(signal)
    n_frames = 1 if n <= frame_len else 1 + int(math.ceil((n - frame_len) / frame_step))
    padded = np.concatenate([signal, np.zeros((n_frames - 1) * frame_step + frame_len - n)])
    idx = np.arange(frame_len)[None, :] + frame_step * np.arange(n_frames)[:, None]
    return padded[idx]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def mfcc(signal: np.ndarray, sample_rate: int = SAMPLE_RATE, *, win_s: float = 0.025, step_s: float = 0.01,
         n_ceps: int = N_MFCC, n_filters: int = 26, n_fft: int = 512, preemph: float = 0.97,
         lifter: int = 22, append_energy: bool = True) -> np.ndarray:
    """(S,) samples -> (T, n_ceps) float64 MFCC; T = 4 N - 1 for N video frames of 640 samples."""
    x = np.asarray(signal, dtype=np.float64)
    assert x.ndim == 1, f"mono audio expected, got shape {x.shape}"
    x = np.append(x[0], x[1:] - preemph * x[:-1])
    frames = frame_signal(x, _round_half_up(win_s * sample_rate), _round_half_up(step_s * sample_rate))
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft  # (T, n_fft // 2 + 1)
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = power @ mel_filterbank(n_filters, n_fft, sample_rate).T
    feat = np.where(feat == 0, eps, feat)
    ceps = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :n_ceps]
    if lifter > 0:
        ceps = ceps * (1 + (lifter / 2.0) * np.sin(np.pi * np.arange(n_ceps) / lifter))
    if append_energy:
        ceps[:, 0] = np.log(energy)
    return ceps


def pcm16_units(audio: np.ndarray) -> np.ndarray:
    """Audio as the protocol's ``wavfile.read`` sees it: int16 values as float64.

    Integer PCM passes through; float audio in [-1, 1] (soundfile's default) is
    scaled by 32768, which reproduces int16 exactly for audio read from a wav.
    """
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"mono audio expected, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float64)
    return a.astype(np.float64) * 32768.0


def protocol_mfcc(audio_16k: np.ndarray) -> np.ndarray:
    """16 kHz mono audio (int16 or float in [-1, 1]) -> (13, T) MFCC, the layout SyncNet windows slice."""
    return mfcc(pcm16_units(audio_16k)).T
