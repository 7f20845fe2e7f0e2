"""Whisper tiny.en encoder features: 384-d at 50 Hz, two per 25 fps video frame.

Front-end (Whisper's own, ``whisper/audio.py``): 16 kHz, periodic Hann window
of 400, hop 160, centred STFT with reflect padding, power spectrum, 80 Slaney
mel filters (0-8 kHz, unit area: :func:`daetalker.features.log_mel.mel_filterbank`),
``log10(max(mel, 1e-10))``, floored at 8 below the window's maximum, then
``(x + 4) / 4``. Whisper pads every input to 30 s; here a window is only as long
as its audio (the positions are sliced to it), which keeps a 3 s clip 10x cheaper.

Alignment: the waveform is advanced by 160 samples (10 ms, half an encoder
hop) so that encoder frame ``i`` is centred on sample ``320 i + 160``, the
middle of its 20 ms: ``L`` samples give ``L // 320`` frames and video frame
``v`` (samples ``[640 v, 640 v + 640)``) owns frames ``2 v`` and ``2 v + 1``,
centred 10 ms and 30 ms into it, as log-mel's rows are centred on their hops.

Windows: the encoder has 1500 positions (30 s). Longer audio is encoded in
30 s windows that overlap by ``2 x CONTEXT_FRAMES`` (5 s each side); each
window keeps only its inner frames, so every kept frame sees at least 5 s of
real audio on each side (or the signal's edge).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from daetalker.assets import ASSETS, asset_path
from daetalker.features.log_mel import mel_filterbank
from daetalker.hashing import sha256_file
from daetalker.models.whisper_encoder import WhisperEncoder, load_whisper_encoder
from daetalker.timebase import SAMPLE_RATE, SAMPLES_PER_FRAME

WHISPER_ASSET = "whisper_tiny_en_ct2.bin"
N_FFT, HOP, N_MELS = 400, 160, 80
ENCODER_HOP = 2 * HOP  # 320 samples = 20 ms per encoder frame
ADVANCE = ENCODER_HOP // 2  # 160: centres frame i on sample 320 i + 160
CONTEXT_FRAMES = 250  # 5 s of real audio on each side of a long window's kept frames
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units below the window's maximum


def whisper_log_mel(wav: torch.Tensor) -> torch.Tensor:
    """(L,) float waveform at 16 kHz -> (80, L // 160) Whisper log-mel (float32)."""
    x = wav.float()
    window = torch.hann_window(N_FFT, periodic=True, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec[:, :-1].abs() ** 2  # (201, L // 160): Whisper drops the last frame
    filters = torch.from_numpy(mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, 0.0, SAMPLE_RATE / 2)).to(x.device)
    log_spec = torch.clamp(filters @ power, min=LOG_FLOOR).log10()  # (80, L // 160)
    log_spec = torch.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0


def n_encoder_frames(n_samples: int) -> int:
    """Feature rows for ``n_samples``: 2 per whole video frame (640 samples), 1 per 320."""
    return n_samples // ENCODER_HOP


@dataclass(frozen=True)
class Span:
    start: int  # first encoder frame of the window
    stop: int  # one past its last
    keep_start: int  # first frame this window contributes
    keep_stop: int


def plan_spans(n_frames: int, max_frames: int, context: int = CONTEXT_FRAMES) -> list[Span]:
    """Windows of <= ``max_frames`` covering ``[0, n_frames)``; kept parts tile it exactly."""
    if n_frames <= max_frames:
        return [Span(0, n_frames, 0, n_frames)] if n_frames else []
    assert max_frames > 2 * context, (max_frames, context)
    core = max_frames - 2 * context
    spans = []
    for keep_start in range(0, n_frames, core):
        keep_stop = min(keep_start + core, n_frames)
        start = max(0, min(keep_start - context, n_frames - max_frames))
        spans.append(Span(start, min(start + max_frames, n_frames), keep_start, keep_stop))
    return spans


class WhisperFeatures:
    """The ``whisper-tiny`` speech-feature extractor (see the module docstring)."""

    name = "whisper-tiny"
    frames_per_video_frame = SAMPLES_PER_FRAME // ENCODER_HOP  # 2

    def __init__(self, model_path: Path | str | None = None, *, device: str | torch.device = "cpu",
                 bf16: bool = False, context_frames: int = CONTEXT_FRAMES) -> None:
        self.encoder: WhisperEncoder = _cached_encoder(str(model_path or asset_path(WHISPER_ASSET)))
        self.device = torch.device(device)
        self.encoder.to(self.device)
        self.bf16 = bf16
        self.dim = self.encoder.size.d_model
        self.max_frames = self.encoder.size.n_ctx
        self.context = min(context_frames, (self.max_frames - 1) // 2)
        path = Path(model_path) if model_path else None
        # what a cached feature file was made with: the pinned asset's hash, or the file's own
        self.fingerprint = f"{self.name}:{sha256_file(path) if path else ASSETS[WHISPER_ASSET].sha256}" + (
            ":bf16" if bf16 else "")

    @torch.inference_mode()
    def encode_window(self, samples: np.ndarray) -> np.ndarray:
        """(320 N,) advanced samples of one window -> (N, dim) float32."""
        mel = whisper_log_mel(torch.as_tensor(samples, device=self.device))[None]  # (1, 80, 2N)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.encoder(mel)[0]  # (N, dim)
        return out.float().cpu().numpy()

    def iter_rows(self, read: Callable[[int, int], np.ndarray], n_samples: int) -> Iterator[np.ndarray]:
        """Feature rows in order, in blocks; ``read(start, count)`` returns those samples (float, zero past the end)."""
        for span in plan_spans(n_encoder_frames(n_samples), self.max_frames, self.context):
            samples = read(span.start * ENCODER_HOP + ADVANCE, (span.stop - span.start) * ENCODER_HOP)
            rows = self.encode_window(samples)
            yield rows[span.keep_start - span.start : span.keep_stop - span.start]

    def __call__(self, wav_16k: np.ndarray) -> np.ndarray:
        """(L,) waveform (int16 is scaled) -> (L // 320, dim) float32."""
        wav = np.asarray(wav_16k)
        assert wav.ndim == 1, f"expected a mono waveform (L,), got {wav.shape}"
        wav = wav.astype(np.float32) / 32768.0 if wav.dtype == np.int16 else wav.astype(np.float32, copy=False)
        rows = list(self.iter_rows(lambda start, count: _slice(wav, start, count), len(wav)))
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)

    def write(self, wav_path: Path, out_path: Path) -> int:
        """Features of a wav file into ``out_path`` (.npy, written beside and renamed); the row count."""
        import soundfile as sf

        with sf.SoundFile(wav_path) as f:
            if f.samplerate != SAMPLE_RATE or f.channels != 1:
                raise ValueError(f"{wav_path}: {f.samplerate} Hz x {f.channels} channels; need 16 kHz mono")
            n = f.frames

            def read(start: int, count: int) -> np.ndarray:
                f.seek(min(start, n))
                got = f.read(min(count, max(n - start, 0)), dtype="float32")
                return np.concatenate([got, np.zeros(count - len(got), np.float32)])

            part = out_path.with_name(out_path.name + ".part")
            rows = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(n_encoder_frames(n), self.dim))
            done = 0
            for block in self.iter_rows(read, n):
                rows[done : done + len(block)] = block
                done += len(block)
            rows.flush()
            del rows
        os.replace(part, out_path)
        return done


def _slice(wav: np.ndarray, start: int, count: int) -> np.ndarray:
    out = np.zeros(count, np.float32)
    got = wav[start : start + count]
    out[: len(got)] = got
    return out


@lru_cache(maxsize=2)
def _cached_encoder(path: str) -> WhisperEncoder:
    # One parse per process: the trainer's, the generator's and the tests' extractors share it.
    return load_whisper_encoder(path)
