"""Config of ingest, face crop, labels and audio features (``daetalker preprocess``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PreprocessConfig:
    resolution: int = 256  # side of the square face crop written for training
    fps: int = 25  # output video rate; frame i covers audio [640 i, 640 (i+1))
    sample_rate: int = 16000
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0  # 4 mel frames per video frame at 25 fps
    crop_margin: float = 0.35  # fraction of the union box added on each side
    min_detection_rate: float = 0.5  # below this a clip (segment) is quarantined
    min_seconds: float = 1.0
    max_file_gb: float = 8.0  # larger inputs are refused before decoding
    target_lufs: float = -23.0  # loudness normalisation target (approx., RMS based)
    silence_dbfs: float = -50.0  # clips whose active level is below are flagged silent
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    workers: int = 1
