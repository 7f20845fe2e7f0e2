"""Config of the pipeline's evaluation step (``daetalker evaluate`` takes the same as options)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvaluateConfig:
    # Held-out clips the pipeline renders and scores, spread evenly over them in clip-id order; 0: every one.
    # Rendering costs ~0.3 s a frame on 2 cores: a few minutes of held-out speech is enough to measure.
    max_clips: int = 0

    def __post_init__(self) -> None:
        if self.max_clips < 0:
            raise ValueError(f"max_clips must be >= 0 (0: every held-out clip), got {self.max_clips}")
