"""What every training loop here shares: the step loop itself (:class:`StepLoop`), loggers,
LR warm-up, RNG state, throughput.

Each trainer keeps its own update step and its hooks (sampling, validation,
checkpoints) in its module; the loop around them is this one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

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


# ------------------------------------------------------------------ the step loop every trainer runs
Hook = Callable[[int, bool], "dict[str, float] | None"]  # (steps done, final) -> metrics for the result, if any
Schedule = Callable[[int, bool], bool]  # (steps done, final) -> due now


@dataclass
class Every:
    """A schedule: every ``n`` steps and at the last one (``n <= 0``: only at the last)."""

    n: int

    def __call__(self, done: int, final: bool) -> bool:
        return final or (self.n > 0 and done % self.n == 0)


@dataclass
class StepLoop:
    """Steps ``start`` .. ``max_steps`` of one trainer, the same way for the DAE, speech2latent and SyncNet.

    ``update(step)`` does one optimiser step and returns (detached losses as 0-d tensors, scalars such
    as the LR, read only when logged): the losses are averaged over each ``log_every`` window
    (across ranks with ``mean``) and logged with the scalars and the throughput. Then each
    ``(schedule, hook)`` runs in order when due (sampling, validation, checkpoints; a hook logs
    what it measures and returns it for the result), and the throughput window restarts, so it
    measures training alone.
    """

    desc: str
    start: int
    max_steps: int
    log_every: int
    items_per_step: int  # samples per step (all ranks), for the rate
    rate_name: str  # e.g. images_per_s
    device: torch.device
    is_main: bool = True
    logger: TrainLogger = field(default_factory=NullLogger)
    write: Callable[[int, dict[str, float]], None] | None = None  # e.g. metrics.jsonl
    mean: Callable[[torch.Tensor], torch.Tensor] = lambda t: t  # noqa: E731 (DDP: all_mean)
    progress: bool | None = None

    def run(self, update: Callable[[int], tuple[dict[str, torch.Tensor], dict[str, float]]],
            hooks: list[tuple[Schedule, Hook]] = ()) -> dict[str, float]:  # fmt: skip
        """The loop; returns the last logged metrics."""
        from tqdm.auto import tqdm

        show = self.is_main if self.progress is None else (self.progress and self.is_main)
        bar = tqdm(total=self.max_steps, initial=self.start, disable=not show, desc=self.desc, mininterval=2.0,
                   dynamic_ncols=True)  # fmt: skip
        meter, sums, window, last = Throughput(self.device), {}, 0, {}
        for step in range(self.start, self.max_steps):
            losses, scalars = update(step)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0) + value
            window += 1
            meter.add(self.items_per_step)
            bar.update(1)
            done = step + 1
            final = done == self.max_steps
            if Every(self.log_every)(done, final):
                last = {k: float(self.mean(v / window)) for k, v in sums.items()}
                last.update({k: float(v) for k, v in scalars.items()}, **{self.rate_name: meter.rate()})
                sums, window = {}, 0
                self._emit(done, last)
                bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}")
            due = [hook for schedule, hook in hooks if schedule(done, final)]
            for hook in due:
                last.update(hook(done, final) or {})
            if due:
                meter.reset()
        bar.close()
        return last

    def _emit(self, done: int, metrics: dict[str, float]) -> None:
        if self.is_main:
            self.logger.log_metrics(done, metrics)
            if self.write is not None:
                self.write(done, metrics)
