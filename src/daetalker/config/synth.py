"""Config of the synthetic speaker (``daetalker synth``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SynthConfig:
    size: int = 256  # frame side in px (square video)
    fps: int = 25
    sample_rate: int = 16000  # wav written beside each clip
    clip_seconds: float = 8.0  # target length of one clip; sentences are added until reached
    voice: str = "en-us"  # espeak-ng voice
    rate_wpm: tuple[int, int] = (140, 190)  # espeak speaking rate, drawn per sentence
    pitch: tuple[int, int] = (35, 65)  # espeak pitch 0..99, drawn per sentence
    pause_seconds: tuple[float, float] = (0.25, 0.8)  # silence between sentences
    coarticulation_ms: float = 60.0  # viseme smoothing time constant
    blink_per_minute: float = 15.0
    crf: int = 18  # H.264 quality of the written mp4

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be an even number >= 32, got {self.size}")
        if self.fps != 25:
            raise ValueError("fps must be 25 (the DAE-Talker frame rate)")
