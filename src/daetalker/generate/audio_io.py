"""Input audio -> the speech features the bundle's s2l was trained on, on disk, in bounded memory.

Any file ffmpeg reads (wav, mp3, m4a, a video's first audio stream; any rate
or channel count) is decoded to 16 kHz mono float32 exactly as ``preprocess``
decodes it (``data.ingest.start_audio``), measured and gained with
``data.audio_features.measure_loudness`` and turned into PCM16 + log-mel with
``data.audio_features.write_audio_and_mel``: the features s2l sees at inference
are the ones it was trained on. A bundle trained on other features
(``s2l.features``, e.g. ``whisper-tiny``) gets them computed from that same
audio.wav into features.npy, as the trainer computes them from each clip's
audio.wav (``train.feature_cache``). Everything is streamed through files in a work
folder, so an hour of audio needs a few hundred MB of disk, not of memory.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daetalker.config.preprocess import PreprocessConfig
from daetalker.config.s2l import S2LConfig
from daetalker.data.audio_features import Loudness, measure_loudness, write_audio_and_mel
from daetalker.data.ingest import FFMPEG
from daetalker.errors import InputMediaError
from daetalker.features import make_extractor, write_features


@dataclass(frozen=True)
class PreparedAudio:
    mel_path: Path  # float32 (k * n_frames, n_mels), as mel.npy
    n_frames: int  # whole 25 fps frames the audio covers
    loudness: Loudness
    features_path: Path | None = None  # float32 (k * n_frames, F): what s2l reads (mel_path for log_mel)

    def mel(self) -> np.ndarray:
        return np.load(self.mel_path, mmap_mode="r")

    def features(self) -> np.ndarray:
        return np.load(self.features_path or self.mel_path, mmap_mode="r")


def decode_to_raw(audio: Path, dst: Path, sample_rate: int) -> int:
    """Decode the first audio stream of ``audio`` to mono float32 raw samples; the sample count."""
    audio = Path(audio)
    if not audio.is_file():
        raise InputMediaError(audio, "not_found", "no such audio file", "check the --audio path")
    if audio.stat().st_size == 0:
        raise InputMediaError(audio, "empty", "the file has zero bytes", "pass a recording with speech in it")
    af = f"aresample={sample_rate}:async=1:first_pts=0"
    cmd = FFMPEG + ["-i", str(audio), "-map", "0:a:0", "-vn", "-sn", "-ac", "1", "-af", af,
                    "-f", "f32le", "-acodec", "pcm_f32le", "-y", str(dst)]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    n = dst.stat().st_size // 4 if dst.exists() else 0
    if proc.returncode != 0:
        raise InputMediaError(audio, "audio_decode_error",
                              f"ffmpeg could not decode it: {proc.stderr.decode(errors='replace').strip()[-300:]}",
                              "convert it to wav, e.g. ffmpeg -i IN -ac 1 -ar 16000 OUT.wav")  # fmt: skip
    return n


def prepare_audio(audio: Path, work_dir: Path, cfg: PreprocessConfig, s2l: S2LConfig | None = None) -> PreparedAudio:
    """Decode, loudness-normalise and featurise ``audio`` into ``work_dir`` (mel.npy + audio.wav, and
    features.npy when ``s2l.features`` is not log_mel)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    raw = work_dir / "audio.f32"
    n_samples = decode_to_raw(Path(audio), raw, cfg.sample_rate)
    spf = cfg.sample_rate // cfg.fps
    n_frames = n_samples // spf
    if n_frames == 0:
        raise InputMediaError(audio, "too_short", f"{n_samples / cfg.sample_rate:.3f} s of audio < one frame "
                              f"({1 / cfg.fps:.2f} s)", "pass at least a fraction of a second of audio")  # fmt: skip
    loud = measure_loudness(raw, cfg, 0, spf * n_frames)
    mel_path = work_dir / "mel.npy"
    write_audio_and_mel(raw, 0, spf * n_frames, loud.gain_db, work_dir / "audio.wav", mel_path, cfg)
    raw.unlink()
    features_path = None
    if s2l is not None and s2l.features != "log_mel":
        features_path = work_dir / "features.npy"
        write_features(make_extractor(s2l, cfg), work_dir / "audio.wav", features_path)
    return PreparedAudio(mel_path, n_frames, loud, features_path)
