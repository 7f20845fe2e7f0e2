"""The data stages as the CLI and the pipeline run them: synthesise, preprocess, validate, version."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from daetalker.config import Config
from daetalker.stages.run import StageRun


def synth(run: StageRun, out_dir: Path, cfg: Config, *, minutes: float, seed: int,
          progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write the synthetic speaker's corpus (clips + corpus.json) into ``out_dir``."""
    from daetalker.synth.corpus import write_corpus

    out_dir = Path(out_dir)
    with run.open("synth", cfg, out_dir, {"synth.minutes": str(minutes), "synth.seed": str(seed)}):
        clips = write_corpus(out_dir, minutes=minutes, seed=seed, cfg=cfg.synth, progress=progress)
        seconds = sum(c.duration_s for c in clips)
        if run.mlflow:
            import mlflow

            mlflow.log_metrics({"clips": len(clips), "seconds": seconds})
            mlflow.log_artifact(str(out_dir / "corpus.json"))
    return {"raw_dir": str(out_dir), "corpus": str(out_dir / "corpus.json"), "clips": len(clips), "seconds": seconds}


def preprocess(run: StageRun, in_dir: Path, out_dir: Path, cfg: Config, *, workers: int | None = None,
               progress: Callable[..., None] | None = None) -> Any:  # fmt: skip
    """Raw footage -> the training dataset (docs/dataset.md); bad files go to quarantine. Returns the summary."""
    from daetalker.data.preprocess import preprocess_dataset

    with run.open("preprocess", cfg, out_dir, {"source_dir": str(Path(in_dir).resolve())}):
        s = preprocess_dataset(Path(in_dir), Path(out_dir), cfg.preprocess, workers=workers or cfg.preprocess.workers,
                               progress=progress)  # fmt: skip
        if run.mlflow:
            import mlflow

            mlflow.log_metrics({
                "sources": s.n_sources, "clips_kept": s.n_clips, "quarantined": s.n_quarantined,
                "frames": s.frames, "seconds_of_video": s.seconds, "wall_seconds": s.wall_s,
                "realtime_factor": s.source_seconds / max(s.wall_s, 1e-9), "peak_rss_mb": s.peak_rss_mb,
            })  # fmt: skip
            mlflow.set_tag("split_strategy", s.split_strategy)
            mlflow.log_artifact(str(s.manifest), "dataset")
            mlflow.log_artifact(str(s.quarantine), "dataset")
    return s


def validate(run: StageRun, data_dir: Path, cfg: Config) -> Any:
    """great-expectations suites on the dataset, the report logged. The caller stops on a failure
    (``result.raise_for_failure()``) after showing what it wants to."""
    from daetalker.data.validate import validate_dataset

    with run.open("validate", cfg, data_dir):
        result = validate_dataset(Path(data_dir), cfg.preprocess)
        if run.mlflow:
            import mlflow

            mlflow.log_metrics({"clips": result.n_clips, "usable_minutes": result.usable_minutes,
                                "expectations_failed": len(result.failed),
                                "validation_success": float(result.success)})  # fmt: skip
            mlflow.log_artifact(str(result.json_path), "validation")
            mlflow.log_artifact(str(result.html_path), "validation")
            mlflow.set_tags({"validation_report": str(result.html_path),
                             "validation_success": str(result.success).lower()})
    return result


def version(run: StageRun, root: Path, data: str = "data", cfg: Config | None = None) -> dict[str, Any]:
    """Track ``root/data`` with DVC and push it to the configured remote; returns its md5."""
    from daetalker.versioning import dvc_repo

    root = Path(root)
    with run.open("version-data", cfg, root / data):
        dvc_repo.init_repo(root)
        remote = dvc_repo.configure_remote(root)
        data_hash = dvc_repo.track(root, data)
        dvc_repo.push(root)
        if run.mlflow:
            import mlflow

            mlflow.set_tags({"dvc.data_hash": data_hash, "dvc.remote": remote.describe()})
            mlflow.log_artifact(str(root / f"{Path(data).name}.dvc"))
    return {"data_hash": data_hash, "remote": remote.url}
