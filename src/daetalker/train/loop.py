"""Pieces every training loop here shares: loggers, precision, LR warm-up, RNG state, throughput.

The loops themselves stay plain and readable in their trainer modules; these
helpers only remove repetition between them.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Protocol

import numpy as np
import torch


class TrainLogger(Protocol):
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_image(self, step: int, name: str, image: np.ndarray) -> None: ...


class NullLogger:
    """Logs nothing (tests, MLflow disabled, ranks other than 0)."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        pass


class MemoryLogger(NullLogger):
    """Keeps every metric in memory: {name: [(step, value), ...]}."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.images: list[tuple[int, str, tuple[int, ...]]] = []

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append((step, float(v)))

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self.images.append((step, name, tuple(image.shape)))


class MlflowLogger:
    """Logs to the active MLflow run (the caller starts it, e.g. with ``tracking.start_run``)."""

    def __init__(self) -> None:
        import mlflow

        self._mlflow = mlflow
        assert mlflow.active_run() is not None, "start an MLflow run before creating MlflowLogger"

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self._mlflow.log_image(image, key=name, step=step)


def default_logger() -> TrainLogger:
    """The active MLflow run if there is one (pipeline steps open it), else nothing."""
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return NullLogger()
    return MlflowLogger() if mlflow.active_run() is not None else NullLogger()


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast only on CUDA devices with bf16 (on CPUs it is slower and breaks bitwise resume)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up from base_lr / warmup_steps to base_lr over the first warmup_steps updates."""
    return scheduled_lr(step, base_lr, warmup_steps)


def scheduled_lr(step: int, base_lr: float, warmup_steps: int, decay_steps: int = 0) -> float:
    """LR of update ``step`` (0-based): linear warm-up, then constant, or cosine to 0 at ``decay_steps``.

    A pure function of the step, so a resumed run follows the same schedule.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if decay_steps <= 0:
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def rng_state(device: torch.device) -> dict[str, Any]:
    """Global torch RNG state (dropout), CPU and the CUDA device, as tensors for a checkpoint."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Throughput:
    """Images per second since the last ``rate()`` call (synchronising CUDA for honest timing)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.count = 0
        self.t0 = time.perf_counter()

    def add(self, n: int) -> None:
        self.count += n

    def reset(self) -> None:
        """Start a new window (e.g. after sampling or checkpointing, which is not training)."""
        self.count, self.t0 = 0, time.perf_counter()

    def rate(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        value = self.count / max(now - self.t0, 1e-9)
        self.count, self.t0 = 0, now
        return value
