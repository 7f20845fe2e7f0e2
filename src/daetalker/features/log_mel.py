"""80-bin log-mel at 16 kHz with a 10 ms hop: 4 frames per 25 fps video frame (method.md section 4).

Conventions (the same wherever mel.npy is written or read):

- Mel scale and filters: Slaney's (the Auditory Toolbox; librosa's default,
  ``htk=False, norm="slaney"``): linear below 1 kHz (``mel = 3 f / 200``),
  logarithmic above (27 mels per factor 6.4); each triangle is scaled to unit
  area, so a bin's value does not grow with its bandwidth.
- Spectrum: magnitude (not power) STFT, periodic Hann window of ``win`` samples
  zero-padded to ``n_fft``; value = ``ln(max(mel, 1e-5))`` (floor -11.51 = silence).
- Framing: frame ``j`` is centred on the middle of hop ``j``, sample
  ``hop * j + hop / 2``; the signal is zero-padded so that ``L`` samples give
  exactly ``L // hop`` frames. Video frame ``i`` (samples ``[640 i, 640 i + 640)``)
  owns mel frames ``4 i .. 4 i + 3``; no frame straddles two video frames' centres.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from daetalker.config.preprocess import LOG_MEL

LOG_FLOOR = 1e-5

_F_SP = 200.0 / 3  # Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalised triangular filters, (n_mels, n_fft // 2 + 1) float32."""
    assert 0 <= fmin < fmax <= sample_rate / 2, f"need 0 <= fmin < fmax <= Nyquist, got {fmin}, {fmax}"
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,)
    lower = (fft_hz[None, :] - edges_hz[:-2, None]) / (edges_hz[1:-1] - edges_hz[:-2])[:, None]
    upper = (edges_hz[2:, None] - fft_hz[None, :]) / (edges_hz[2:] - edges_hz[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # unit area per triangle
    return weights.astype(np.float32)


def magnitude_spectrogram(
    wav: torch.Tensor, *, n_fft: int, win_length: int, hop_length: int
) -> torch.Tensor:
    """(..., L) float -> (..., L // hop, n_fft // 2 + 1) STFT magnitudes, framed as the module says."""
    assert win_length <= n_fft and hop_length <= win_length
    shape = wav.shape
    x = wav.reshape(-1, shape[-1])
    # Frame j starts at hop*j - pad and its window's centre (n_fft / 2 in) falls on hop*j + hop/2.
    pad = n_fft // 2 - hop_length // 2
    x = torch.nn.functional.pad(x, (pad, pad))
    window = torch.hann_window(win_length, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window, center=False, return_complex=True
    ).abs()  # (B, n_fft // 2 + 1, frames)
    frames = shape[-1] // hop_length
    assert spec.shape[-1] == frames, (spec.shape, frames)
    return spec.transpose(1, 2).reshape(*shape[:-1], frames, n_fft // 2 + 1)


def log_mel(
    wav: np.ndarray | torch.Tensor,
    *,
    sample_rate: int = LOG_MEL.sample_rate,
    n_mels: int = LOG_MEL.n_mels,
    win_ms: float = LOG_MEL.win_ms,
    hop_ms: float = LOG_MEL.hop_ms,
    n_fft: int = LOG_MEL.n_fft,
    fmin: float = LOG_MEL.fmin,
    fmax: float = LOG_MEL.fmax,
) -> np.ndarray:
    """Mono waveform (L,) in [-1, 1] (int16 is scaled) -> log-mel (L // hop, n_mels) float32."""
    wav = torch.as_tensor(wav.numpy() if isinstance(wav, torch.Tensor) else wav)
    if not wav.is_floating_point():
        wav = wav.float() / 32768.0
    assert wav.ndim == 1, f"expected a mono waveform (L,), got {tuple(wav.shape)}"
    hop = round(sample_rate * hop_ms / 1000)
    win = round(sample_rate * win_ms / 1000)
    if wav.shape[0] < hop:
        return np.zeros((0, n_mels), np.float32)
    spec = magnitude_spectrogram(wav.double(), n_fft=n_fft, win_length=win, hop_length=hop)  # (N, n_fft/2+1)
    fb = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels, float(fmin), float(fmax))).double()
    mel = spec @ fb.T  # (N, n_mels)
    return torch.log(mel.clamp_min(LOG_FLOOR)).float().numpy()
