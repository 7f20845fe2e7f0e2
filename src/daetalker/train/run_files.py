"""What every training run shares around its checkpoints: ``metrics.jsonl``, sample PNGs, ``result.json``,
and the rule for resuming one."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from daetalker import checkpoint as ckpt_io
from daetalker.errors import CheckpointError


@dataclass
class TrainResult:
    checkpoint: Path  # checkpoints/latest.pt
    final_step: int
    metrics: dict[str, float] = field(default_factory=dict)


def check_resumable(saved: object, now: object, arch_fields: tuple[str, ...], path: Path) -> None:
    """A checkpoint trained with config ``saved`` resumes under ``now`` only with the same network shape
    (``arch_fields``) and batch size (the data position counts samples)."""
    same = lambda k: list(np.atleast_1d(getattr(saved, k))) == list(np.atleast_1d(getattr(now, k)))  # noqa: E731
    diff = [k for k in arch_fields if not same(k)]
    if diff:
        raise CheckpointError(f"{path}: model shape differs from the config in {diff}; resume with the config it was "
                              "trained with or start a new --out folder")
    if saved.batch_size != now.batch_size:
        raise CheckpointError(f"{path}: batch_size {saved.batch_size} -> {now.batch_size} breaks the data position")


def finish_run(out_dir: Path, ckpt_dir: Path, final_step: int, last: dict[str, float], t_begin: float,
               is_main: bool) -> TrainResult:
    """The run's result (``last`` metrics + train_seconds); rank 0 writes it to ``result.json``."""
    last["train_seconds"] = time.perf_counter() - t_begin
    result = TrainResult(checkpoint=ckpt_dir / ckpt_io.LATEST, final_step=final_step, metrics=last)
    if is_main:
        summary = {"checkpoint": str(result.checkpoint), "final_step": final_step, "metrics": last}
        (out_dir / "result.json").write_text(json.dumps(summary, indent=2))
    return result


def write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1])


class MetricsFile:
    """metrics.jsonl beside the checkpoints; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        keep = []
        if resume_step > 0 and path.is_file():
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
        path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
