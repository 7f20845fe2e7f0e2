"""The evaluation stage as the CLI and the pipeline run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daetalker.config import Config
from daetalker.stages.run import StageRun


def evaluate(run: StageRun, bundle: str | Path, data_dir: Path, out_dir: Path, cfg: Config, *, syncnet_weights: Path,
             champion_metrics: dict[str, float] | None = None, **options: Any) -> dict[str, Any]:  # fmt: skip
    """Generate every clip of a split from its audio; LSE, FID, pose, M-LMD against ground truth; the report.

    ``options``: ``split``, ``steps``, ``guidance``, ``max_clips``, ``fid_frames_per_clip`` of
    :func:`~daetalker.evaluate.evaluate.evaluate_model`.
    """
    from daetalker.evaluate.evaluate import evaluate_model

    with run.open("evaluate", cfg, data_dir, {"model": str(options.get("source") or bundle)}) as active:
        result = evaluate_model(bundle, Path(data_dir), Path(out_dir), syncnet_weights=Path(syncnet_weights), cfg=cfg,
                                champion_metrics=champion_metrics, **options)  # fmt: skip
    flat = {k: v for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
    return {**flat, "eval_run_id": active.info.run_id if active else "", "metrics": str(result.metrics_path),
            "report": str(result.report_path)}
