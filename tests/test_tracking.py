"""MLflow runs carry config, lineage and artifacts that read back through MlflowClient."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml

import daetalker
from daetalker.config import load_config
from daetalker.errors import DaetalkerError
from daetalker.tracking import MAX_PARAM_LEN, flatten_params, lineage_tags, log_figure, log_file, start_run


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed git repo with a data.dvc pointer (as `dvc add data` writes it)."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "train.py").write_text("print('hi')\n")
    (root / "data.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 10\n  nfiles: 2\n  hash: md5\n  path: data\n"
    )
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def test_lineage_tags_follow_git_and_dvc(repo: Path, tmp_path: Path) -> None:
    tags = lineage_tags(repo)
    head = git(repo, "rev-parse", "HEAD")
    assert tags["git_commit"] == head == tags["mlflow.source.git.commit"]
    assert tags["git_dirty"] == "false"
    assert tags["data_hash"] == "0123456789abcdef0123456789abcdef.dir"
    assert tags["daetalker_version"] == daetalker.__version__
    assert tags["host"] == socket.gethostname()

    (repo / "untracked.txt").write_text("scratch")  # untracked files do not make it dirty
    assert lineage_tags(repo)["git_dirty"] == "false"
    (repo / "train.py").write_text("print('changed')\n")
    assert lineage_tags(repo)["git_dirty"] == "true"

    bare = tmp_path / "not-a-repo"
    bare.mkdir()
    tags = lineage_tags(bare)
    assert tags["git_commit"] == "none" and tags["git_dirty"] == "none" and tags["data_hash"] == "none"
    with pytest.raises(DaetalkerError, match="no such DVC file"):
        lineage_tags(bare, data_dvc=bare / "data.dvc")  # asked for explicitly: must exist


def test_flatten_params_nests_and_truncates() -> None:
    flat = flatten_params({"dae": {"lr": 1e-4, "mult": (1, 2, 2)}, "name": "x" * 7000, "empty": {}})
    assert flat["dae.lr"] == "0.0001"
    assert flat["dae.mult"] == "[1, 2, 2]"
    assert len(flat["name"]) == MAX_PARAM_LEN and flat["name"].endswith("...")
    assert flat["empty"] == "{}"


@pytest.mark.slow
def test_start_run_logs_config_lineage_and_artifacts(mlflow_server: str, repo: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.tracking import MlflowClient

    cfg = load_config("tiny")
    note = tmp_path / "notes.txt"
    note.write_text("frames: 42\n")
    with start_run("test-tracking", "parent", config=cfg, tags={"speaker": "synth"}, repo_root=repo) as parent:
        with start_run("test-tracking", "child", parent_run_id=parent.info.run_id, repo_root=repo) as child:
            mlflow.log_metric("loss", 0.25, step=3)
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        log_figure(fig, "plots/loss.png")
        log_file(note, "notes")
    assert not plt.get_fignums()  # the figure was closed

    client = MlflowClient(mlflow_server)
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED"
    assert mlflow.get_tracking_uri() == mlflow_server
    tags = run.data.tags
    assert tags["git_commit"] == git(repo, "rev-parse", "HEAD")
    assert tags["data_hash"] == "0123456789abcdef0123456789abcdef.dir"
    assert tags["config_hash"] == cfg.hash() and tags["speaker"] == "synth"
    params = run.data.params
    assert params["dae.lr"] == str(cfg.dae.lr) and params["profile"] == "tiny"
    assert params["dae.channel_mult"] == str(list(cfg.dae.channel_mult))
    assert len(params) == len(flatten_params(cfg.to_dict()))

    local = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl")))
    assert yaml.safe_load(local.read_text()) == cfg.to_dict()
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"config.yaml", "plots", "notes"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/loss.png"]

    child_run = client.get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.data.metrics["loss"] == 0.25


@pytest.mark.slow
def test_failed_block_marks_run_failed(mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    with pytest.raises(RuntimeError, match="boom"):
        with start_run("test-tracking", "fails", config={"a": {"b": 1}}) as run:
            raise RuntimeError("boom")
    got = MlflowClient(mlflow_server).get_run(run.info.run_id)
    assert got.info.status == "FAILED" and got.data.params == {"a.b": "1"}
