"""Audio for training: loudness normalisation, PCM16 wav and log-mel, in chunks.

The log-mel is :func:`daetalker.features.log_mel.log_mel` (its docstring fixes
the conventions: rows 4i..4i+3 belong to video frame i). The writer feeds it
10 s spans with two hops of real context on each side and keeps only the
inner rows, so the result equals ``log_mel(whole wav)`` without holding the
whole clip in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from daetalker.config.preprocess import PreprocessConfig

CHUNK_HOPS = 1000  # 10 s of audio per chunk at 10 ms hops
CONTEXT_HOPS = 2  # a window reaches 120 samples (< 2 hops) past its hop on either side
EDGE_CONTRAST_DB = 15.0  # speech this little above the floor has no silence clear enough to cut


def mel_params(cfg: PreprocessConfig) -> dict:
    return dict(sample_rate=cfg.sample_rate, n_mels=cfg.n_mels, win_ms=cfg.win_ms, hop_ms=cfg.hop_ms,
                n_fft=cfg.n_fft, fmin=cfg.fmin, fmax=cfg.fmax)


def hop_samples(cfg: PreprocessConfig) -> int:
    return round(cfg.sample_rate * cfg.hop_ms / 1000)


# ----------------------------------------------------------------- loudness
def read_raw(path: Path, start: int = 0, count: int | None = None, chunk: int = 160_000) -> Iterator[np.ndarray]:
    """float32 mono chunks of the raw file from sample ``start`` (``count`` samples, zero-padded)."""
    total = Path(path).stat().st_size // 4
    count = total - start if count is None else count
    with open(path, "rb") as f:
        done = 0
        while done < count:
            n = min(chunk, count - done)
            out = np.zeros(n, np.float32)
            pos = start + done
            if pos < total:
                f.seek(4 * pos)
                avail = min(n, total - pos)
                out[:avail] = np.frombuffer(f.read(4 * avail), np.float32)
            done += n
            yield out


@dataclass(frozen=True)
class Loudness:
    level_dbfs: float  # gated RMS level of the active parts
    peak_dbfs: float
    silent: bool
    gain_db: float  # applied to reach the target


def measure_loudness(raw: Path, cfg: PreprocessConfig, start: int = 0, count: int | None = None) -> Loudness:
    """Gated RMS level (EBU R128's two gates on 100 ms blocks, without K-weighting) and the gain to apply."""
    block = cfg.sample_rate // 10
    ms: list[np.ndarray] = []
    peak = 0.0
    tail = np.zeros(0, np.float32)
    for chunk in read_raw(raw, start, count):
        x = np.concatenate([tail, chunk])
        k = len(x) // block
        ms.append((x[: k * block].astype(np.float64).reshape(k, block) ** 2).mean(1))
        tail = x[k * block :]
        peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
    blocks = np.concatenate(ms) if ms else np.zeros(0)
    db = 10 * np.log10(np.maximum(blocks, 1e-20))
    active = blocks[db > -70.0]  # absolute gate
    if len(active):
        rel = 10 * math.log10(active.mean()) - 10.0  # relative gate
        active = active[10 * np.log10(active) > rel]
    level = 10 * math.log10(active.mean()) if len(active) else -120.0
    peak_db = 20 * math.log10(max(peak, 1e-6))
    silent = level < cfg.silence_dbfs
    # Raise quiet speech up to the target, but never clip (peak stays at -1 dBFS) and never
    # amplify a silent track into noise.
    gain = 0.0 if silent else min(cfg.target_lufs - level, cfg.max_gain_db, -1.0 - peak_db)
    return Loudness(round(level, 4), round(peak_db, 4), bool(silent), round(gain, 4))


def frame_levels(raw: Path, cfg: PreprocessConfig, start_frame: int, n_frames: int) -> np.ndarray:
    """(n_frames,) RMS level in dBFS of each video frame's audio (640 samples at 16 kHz)."""
    spf = cfg.sample_rate // cfg.fps
    x = np.concatenate(list(read_raw(raw, spf * start_frame, spf * n_frames))).astype(np.float64)
    return 10 * np.log10(np.maximum((x.reshape(n_frames, spf) ** 2).mean(1), 1e-20))


def speech_span(levels_db: np.ndarray, keep_frames: int) -> tuple[int, int]:
    """[first, last) frames to keep: the sound between the leading and trailing silence, plus ``keep_frames``
    of that silence on each side. ``(0, n)`` when there is no clear silence to cut.

    Silence is relative to the recording, not an absolute level: camera audio has a noise floor (about
    -40 dBFS in GRID's MPEG-1 clips) that a fixed threshold would count as sound. A frame is sound when it
    is above 35% of the way from the floor (10th percentile) to the speech (95th), and so are most of
    the 5 frames around it (a click is not speech).
    """
    n = len(levels_db)
    floor, top = np.percentile(levels_db, [10, 95]) if n else (0.0, 0.0)
    if n < 5 or top - floor < EDGE_CONTRAST_DB:
        return 0, n
    loud = (levels_db > floor + 0.35 * (top - floor)).astype(np.int32)
    sound = np.flatnonzero(np.convolve(loud, np.ones(5, np.int32), mode="same") >= 3)
    if not len(sound):
        return 0, n
    return max(0, int(sound[0]) - keep_frames), min(n, int(sound[-1]) + 1 + keep_frames)


# ----------------------------------------------------------------- writing
def write_audio_and_mel(raw: Path, start: int, n_samples: int, gain_db: float, wav_path: Path,
                        mel_path: Path, cfg: PreprocessConfig) -> None:
    """Samples [start, start+n) of the raw file, gained -> PCM16 wav + log-mel npy, in chunks.

    The mel is computed from the PCM16 samples written, so it equals
    ``log_mel(audio.wav)`` (zeros before and after the segment, as for any wav).
    """
    import soundfile as sf

    from daetalker.data.dataset import NpyWriter
    from daetalker.features.log_mel import log_mel

    hop, params = hop_samples(cfg), mel_params(cfg)
    assert n_samples % hop == 0, (n_samples, hop)
    n_hops, ctx = n_samples // hop, CONTEXT_HOPS * hop
    gain = 10 ** (gain_db / 20)
    with sf.SoundFile(wav_path, "w", samplerate=cfg.sample_rate, channels=1, subtype="PCM_16") as wav, \
            NpyWriter(mel_path, (n_hops, cfg.n_mels), np.float32) as mel:
        buf = np.zeros(ctx, np.float64)  # starts ``ctx`` samples before hop ``done``
        done = 0
        for x in read_raw(raw, start, n_samples, chunk=CHUNK_HOPS * hop):
            q = np.round(np.clip(x.astype(np.float64) * gain, -1.0, 32767 / 32768) * 32768).astype(np.int16)
            wav.write(q)
            buf = np.concatenate([buf, q / 32768.0])
            ready = len(buf) // hop - 2 * CONTEXT_HOPS  # hops with full context on both sides
            if ready > 0:
                rows = log_mel(buf[: (ready + 2 * CONTEXT_HOPS) * hop], **params)
                mel.write(rows[CONTEXT_HOPS : CONTEXT_HOPS + ready])
                buf, done = buf[ready * hop :], done + ready
        rest = n_hops - done
        if rest:  # the last windows reach past the segment: zeros, as log_mel pads
            buf = np.concatenate([buf, np.zeros(ctx, np.float64)])
            rows = log_mel(buf[: (rest + 2 * CONTEXT_HOPS) * hop], **params)
            mel.write(rows[CONTEXT_HOPS : CONTEXT_HOPS + rest])
