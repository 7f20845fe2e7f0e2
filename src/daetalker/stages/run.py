"""How one stage run is recorded: the same MLflow run, tags and lineage from the CLI and from a pipeline.

Every stage adapter opens its run through :meth:`StageRun.open`, so ``daetalker
train-dae`` and the ``train-dae`` pipeline task on the same data log the same
tag keys: the step, the speaker, the runner, the data folder, the code
(``git_commit``, ``git_dirty``, ``daetalker_version``), the data
(``data_hash`` / ``data_dvc``: the DVC file that tracks the data folder or one
of its parents) and the config (``config_hash`` and every key as a param).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import daetalker

CODE_ROOT = Path(daetalker.__file__).resolve().parent  # the code's own checkout says which commit ran


def find_data_dvc(data_dir: Path | str | None) -> Path | None:
    """The ``.dvc`` file tracking ``data_dir`` or the nearest folder above it (``data.dvc`` beside ``data/``)."""
    if data_dir is None:
        return None
    folder = Path(data_dir).resolve()
    for candidate in (folder, *folder.parents):
        if candidate.name and candidate.with_name(candidate.name + ".dvc").is_file():
            return candidate.with_name(candidate.name + ".dvc")
    return None


@dataclass(frozen=True)
class StageRun:
    """Where and how a stage logs. The CLI builds one from its options, a pipeline task from its run context."""

    experiment: str  # MLflow experiment
    runner: str = "cli"  # cli | kfp.local | kfp
    speaker: str = ""
    parent_run_id: str = ""  # the pipeline's parent run, when there is one
    mlflow: bool = True  # False: the stage runs without an MLflow run (log calls are skipped)
    tags: dict[str, str] = field(default_factory=dict)  # run-level extras, e.g. the dataset revision

    @contextmanager
    def open(self, step: str, config: Any = None, data_dir: Path | str | None = None,
             tags: dict[str, str] | None = None) -> Iterator[Any]:
        """The stage's MLflow run (None when ``mlflow`` is off); failed if the block raises."""
        if not self.mlflow:
            with nullcontext():
                yield None
            return
        from daetalker import tracking

        all_tags = {"daetalker.step": step, "daetalker.speaker": self.speaker or "none",
                    "daetalker.runner": self.runner,
                    "data_dir": str(Path(data_dir).resolve()) if data_dir else "none", **self.tags, **(tags or {})}
        with tracking.start_run(self.experiment, step, config=config, tags=all_tags,
                                parent_run_id=self.parent_run_id or None, repo_root=CODE_ROOT,
                                data_dvc=find_data_dvc(data_dir), repo_data=False) as run:  # fmt: skip
            yield run
