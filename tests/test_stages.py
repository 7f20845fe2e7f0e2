"""Stage adapters: the CLI and the pipeline run a stage through one function and record the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daetalker.kubeflow.context import RunContext
from daetalker.stages.run import StageRun, find_data_dvc
from test_dae_train import MICRO, write_fake_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost

DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"
SYSTEM = ("mlflow.",)  # MLflow's own tags (run name, user, source, parent) are not the stage's


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A checkout-like workspace: data/ tracked by data.dvc, the speaker's processed dataset inside."""
    ws = tmp_path_factory.mktemp("ws")
    write_fake_dataset(ws / "data" / "processed" / "spk")
    (ws / "data.dvc").write_text(f"outs:\n- md5: {DATA_MD5}\n  path: data\n  hash: md5\n")
    return ws


def test_the_dvc_file_of_a_dataset_is_found_above_it(workspace: Path, tmp_path: Path) -> None:
    assert find_data_dvc(workspace / "data" / "processed" / "spk") == workspace / "data.dvc"
    (tmp_path / "loose").mkdir()
    assert find_data_dvc(tmp_path / "loose") is None and find_data_dvc(None) is None


def test_a_stage_without_mlflow_opens_no_run(workspace: Path) -> None:
    with StageRun("x", mlflow=False).open("train-dae", None, workspace) as run:
        assert run is None


def test_train_dae_from_the_cli_and_the_pipeline_records_the_same_lineage(workspace: Path, tmp_path: Path,
                                                                         mlflow_server: str) -> None:  # fmt: skip
    import mlflow

    from daetalker.cli import app
    from daetalker.stages.steps import train_dae_step

    data = workspace / "data" / "processed" / "spk"
    micro = [*MICRO, "dae.max_steps=2"]
    sets = [a for s in micro for a in ("--set", s)]
    r = CliRunner().invoke(app, ["train-dae", "--data", str(data), "--out", str(tmp_path / "cli"), "--mlflow",
                                 "--experiment", "stages-lineage", "--device", "cpu", *sets])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["final_step"] == 2
    ctx = RunContext(speaker="spk", profile="tiny", workspace=str(workspace), overrides=tuple(micro),
                     experiment="stages-lineage")  # fmt: skip
    step = train_dae_step(ctx.to_json(), str(tmp_path / "kfp"))
    assert step["final_step"] == 2

    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("stages-lineage")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.run_name for r in runs] == ["train-dae", "train-dae"]
    cli_tags, kfp_tags = ({k: v for k, v in r.data.tags.items() if not k.startswith(SYSTEM)} for r in runs)
    assert cli_tags.keys() == kfp_tags.keys()
    assert {"git_commit", "git_dirty", "daetalker_version", "data_hash", "data_dvc", "config_hash", "data_dir",
            "daetalker.step", "daetalker.runner"} <= cli_tags.keys()
    for key in ("data_hash", "data_dvc", "git_commit", "data_dir", "daetalker.step"):
        assert cli_tags[key] == kfp_tags[key], key
    assert cli_tags["data_hash"] == DATA_MD5
    assert (cli_tags["daetalker.runner"], kfp_tags["daetalker.runner"]) == ("cli", "kfp.local")
    assert runs[0].data.params == runs[1].data.params  # the same resolved config, key by key
