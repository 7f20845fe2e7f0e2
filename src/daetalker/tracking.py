"""MLflow runs with lineage: every run records git commit, DVC data hash and config.

``start_run`` is the one way stages open an MLflow run::

    with start_run("dae", "train", config=cfg, tags={"speaker": "synth"}) as run:
        mlflow.log_metric("loss", 0.1, step=1)

mlflow is imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import yaml

import daetalker
from daetalker.errors import DaetalkerError

if TYPE_CHECKING:
    import mlflow

# MLflow's server-side limits (mlflow.utils.validation in 3.x).
MAX_KEY_LEN = 250
MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000


def _git(repo: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def lineage_tags(repo_root: Path | str | None = None, data_dvc: Path | str | None = None,
                 repo_data: bool = True) -> dict[str, str]:
    """Tags that say exactly what a run was made from.

    ``git_commit`` / ``git_dirty`` describe the code (``none`` outside a git
    checkout, e.g. in a component container); ``data_hash`` is the md5 in
    ``data_dvc`` (default ``<repo>/data.dvc`` when that file exists and ``repo_data``;
    ``none`` when no DVC file says what the data was).
    """
    root = Path(repo_root or ".").resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    commit = _git(root, "rev-parse", "HEAD") if top else None
    # Untracked files do not change what a commit builds; modified tracked ones do.
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no")) if commit else None
    tags = {
        "git_commit": commit or "none",
        "git_dirty": "none" if dirty is None else str(dirty).lower(),
        "daetalker_version": daetalker.__version__,
        "host": socket.gethostname(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit  # shown in the MLflow UI
    # An explicit data_dvc must exist; the default one is recorded when present.
    dvc_file = Path(data_dvc) if data_dvc else Path(top or root) / "data.dvc"
    tags["data_hash"] = tags["data_dvc"] = "none"
    if data_dvc or (repo_data and dvc_file.exists()):
        from daetalker.versioning.dvc_repo import data_hash

        tags["data_hash"] = data_hash(dvc_file.parent, dvc_file.name)
        tags["data_dvc"] = str(dvc_file)
    return tags


def config_dict(config: Any) -> dict[str, Any]:
    """A stage config (dataclass, object with ``to_dict``, or mapping) as a plain dict."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise DaetalkerError(f"start_run: cannot log a config of type {type(config).__name__} (pass a dataclass or a dict)")


def flatten_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{'dae': {'lr': 1e-4}}`` -> ``{'dae.lr': '0.0001'}``, cut to MLflow's limits.

    Lists stay one value (``[1, 2, 2]``); over-long values are truncated with a
    trailing ``...`` (the full config is in the ``config.yaml`` artifact).
    """
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten_params(v, key))
            continue
        text = str(list(v) if isinstance(v, tuple) else v)
        if len(text) > MAX_PARAM_LEN:
            text = text[: MAX_PARAM_LEN - 3] + "..."
        out[key[:MAX_KEY_LEN]] = text
    return out


@contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    config: Any = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    repo_root: Path | str | None = None,
    data_dvc: Path | str | None = None,
    repo_data: bool = True,
) -> Iterator["mlflow.ActiveRun"]:
    """Open an MLflow run with config params, a ``config.yaml`` artifact and lineage tags.

    The tracking URI comes from :func:`ensure_tracking_uri` ($MLFLOW_TRACKING_URI,
    else the local server, started if needed). A run whose block raises is
    marked FAILED. ``parent_run_id`` nests the run (tag ``mlflow.parentRunId``).
    """
    import mlflow

    from daetalker.services.mlflow_server import ensure_tracking_uri

    mlflow.set_tracking_uri(ensure_tracking_uri())
    mlflow.set_experiment(experiment)
    all_tags = lineage_tags(repo_root, data_dvc, repo_data)
    cfg = config_dict(config)
    if cfg and hasattr(config, "hash"):
        all_tags["config_hash"] = config.hash()
    all_tags.update({k: str(v)[:MAX_TAG_LEN] for k, v in (tags or {}).items()})
    nested = parent_run_id is not None and mlflow.active_run() is not None
    with mlflow.start_run(run_name=run_name, tags=all_tags, parent_run_id=parent_run_id, nested=nested) as run:
        if cfg:
            mlflow.log_params(flatten_params(cfg))  # the client batches by 100
            mlflow.log_text(yaml.safe_dump(cfg, sort_keys=False), "config.yaml")
        yield run


def log_figure(fig: Any, artifact_file: str) -> None:
    """Log a matplotlib figure (e.g. ``plots/loss.png``) to the active run and close it."""
    import matplotlib.pyplot as plt
    import mlflow

    try:
        mlflow.log_figure(fig, artifact_file)
    finally:
        plt.close(fig)


def log_file(path: Path | str, artifact_path: str | None = None) -> None:
    """Log one local file to the active run (under ``artifact_path`` if given)."""
    import mlflow

    path = Path(path)
    if not path.is_file():
        raise DaetalkerError(f"{path}: cannot log to MLflow, no such file")
    mlflow.log_artifact(str(path), artifact_path)
