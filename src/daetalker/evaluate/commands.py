"""``daetalker train-syncnet``: the lip-sync expert that scores LSE-D / LSE-C."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.train.commands import ConfigOpt, ProfileOpt, SetOpt, _data_dvc, _mlflow_wanted


def register(app: typer.Typer) -> None:
    @app.command("train-syncnet")
    def train_syncnet_cmd(
        data: Annotated[Path, typer.Option("--data", help="Preprocessed dataset (manifest.parquet + clips/).")],
        out: Annotated[Path, typer.Option("--out", help="Output: latest.pt (+ .sha256), syncnet_report.json.")],
        profile: ProfileOpt = "tiny",
        config: ConfigOpt = None,
        set_: SetOpt = None,
        mlflow: Annotated[
            Optional[bool],
            typer.Option("--mlflow/--no-mlflow", help="Log to MLflow; default: only when MLFLOW_TRACKING_URI is set."),
        ] = None,
        experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "daetalker-syncnet",
    ) -> None:
        """Train a SyncNet lip-sync expert from scratch on the speaker's data (Wav2Lip's recipe).

        Held-out (val/test) pair accuracy and LSE go to OUT/syncnet_report.json with the
        sha256 of the weights; LSE values are only comparable under the same hash.
        """
        from daetalker.config import load_config
        from daetalker.evaluate.syncnet_train import result_dict, train_syncnet
        from daetalker.train.loop import NullLogger

        cfg = load_config(profile, config, set_ or [])
        if _mlflow_wanted(mlflow, cfg.syncnet.mlflow):
            import mlflow as mlflow_mod

            from daetalker import tracking
            from daetalker.train.loop import MlflowLogger

            with tracking.start_run(experiment, "train-syncnet", config=cfg, data_dvc=_data_dvc(data),
                                    tags={"daetalker.step": "train-syncnet", "data_dir": str(data)}):
                result = train_syncnet(data, out, cfg.syncnet, logger=MlflowLogger())
                mlflow_mod.set_tag("syncnet_sha256", result.sha256)
                mlflow_mod.log_artifact(str(result.report))
        else:
            result = train_syncnet(data, out, cfg.syncnet, logger=NullLogger())
        typer.echo(json.dumps(result_dict(result), indent=2))
