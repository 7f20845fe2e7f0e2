"""Config of the synthetic speaker (``daetalker synth``)."""

from __future__ import annotations

from dataclasses import dataclass

from daetalker.timebase import FPS, SAMPLE_RATE


@dataclass
class SynthConfig:
    size: int = 256  # frame side in px (square video)
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE  # wav written beside each clip
    clip_seconds: float = 8.0  # target length of one clip; sentences are added until reached
    voice: str = "en-us"  # espeak-ng voice
    rate_wpm: tuple[int, int] = (140, 190)  # espeak speaking rate, drawn per sentence
    pitch: tuple[int, int] = (35, 65)  # espeak pitch 0..99, drawn per sentence
    words_per_sentence: tuple[int, int] = (4, 11)
    pause_seconds: tuple[float, float] = (0.25, 0.8)  # silence between sentences
    edge_silence_seconds: tuple[float, float] = (0.3, 0.6)  # silence at the start and end of a clip
    noise_dbfs: float = -66.0  # room noise floor of the wav (RMS)
    coarticulation_ms: float = 60.0  # viseme smoothing time constant
    blink_per_minute: float = 15.0
    pose_std_deg: tuple[float, float, float] = (8.0, 5.0, 3.0)  # yaw, pitch, roll while speaking
    pose_limit_deg: tuple[float, float, float] = (35.0, 20.0, 15.0)  # soft limits
    pose_tau_s: float = 0.6  # time constant of the pose noise
    speech_motion_gain: float = 0.8  # how much more the head moves while speaking
    crf: int = 18  # H.264 quality of the written mp4
    x264_preset: str = "medium"

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be an even number >= 32, got {self.size}")
        if self.fps != 25:
            raise ValueError("fps must be 25 (the DAE-Talker frame rate)")
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError("sample_rate must be 16000 (the features expect 16 kHz)")
        for name in ("rate_wpm", "pitch", "words_per_sentence", "pause_seconds", "edge_silence_seconds"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name} must be a (low, high) range with 0 <= low <= high, got {(lo, hi)}")
        if not (80 <= self.rate_wpm[0] and self.rate_wpm[1] <= 450):
            raise ValueError(f"rate_wpm must lie in espeak's 80..450, got {self.rate_wpm}")
        if self.pitch[1] > 99:
            raise ValueError(f"pitch must lie in 0..99, got {self.pitch}")
        if self.words_per_sentence[0] < 1:
            raise ValueError("words_per_sentence must start at >= 1")
        if self.clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must lie in 0..51, got {self.crf}")
