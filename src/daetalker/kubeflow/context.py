"""What every pipeline step needs to know about the run it belongs to.

KFP passes only plain parameters between tasks, so the run context travels as
one JSON string: the speaker, the profile and overrides (so each step rebuilds
the same typed config), the workspace (the DVC repo the data lives in) and the
MLflow parent run that groups the steps.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from daetalker.config import Config, load_config


PARENT_RUN_ENV = "DAETALKER_PARENT_RUN_ID"


@dataclass(frozen=True)
class RunContext:
    speaker: str
    profile: str
    workspace: str  # DVC/git repo root that holds data/ and data.dvc
    overrides: tuple[str, ...] = ()
    parent_run_id: str = ""  # MLflow run grouping the pipeline's steps (else $DAETALKER_PARENT_RUN_ID)
    experiment: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    code: str = ""  # hash of the code that runs the steps: part of every task's input, so of its cache key

    @property
    def pipeline_run_id(self) -> str:
        """The MLflow run grouping this pipeline run's steps. A local run passes it in the environment,
        not in the context, so the context (every task's input) stays the same from run to run and
        kfp.local's cache can serve a task whose inputs did not change."""
        return self.parent_run_id or os.environ.get(PARENT_RUN_ENV, "")

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"daetalker-{self.speaker}"

    @property
    def data_root(self) -> Path:
        return Path(self.workspace) / "data"

    def raw_dir(self) -> Path:
        return self.data_root / "raw" / self.speaker

    def processed_dir(self) -> Path:
        return self.data_root / "processed" / self.speaker

    def config(self) -> Config:
        return load_config(self.profile, None, list(self.overrides))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunContext":
        d = json.loads(text)
        d["overrides"] = tuple(d.get("overrides", ()))
        return cls(**d)
