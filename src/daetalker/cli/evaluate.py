"""``daetalker evaluate``: generate held-out clips from their audio and score them against the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli.options import ConfigOpt, ProfileOpt, SetOpt
from daetalker.cli.options import data_dvc_for as _data_dvc
from daetalker.cli.options import mlflow_wanted as _mlflow_wanted


def read_champion(path: Path) -> dict[str, float]:
    """The flat numbers of a champion's metrics.json (for the report's comparison column)."""
    from daetalker.errors import InputMediaError

    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputMediaError(path, "bad_metrics", f"not JSON ({e})", "pass the metrics.json `evaluate` wrote") from e
    if not isinstance(data, dict):
        raise InputMediaError(path, "bad_metrics", "not a JSON object", "pass the metrics.json `evaluate` wrote")
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


app = typer.Typer()


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[str, typer.Option("--model", help="Bundle folder or models:/NAME@ALIAS.")],
    data: Annotated[Path, typer.Option("--data", help="Preprocessed dataset (manifest.parquet + clips/).")],
    out: Annotated[Path, typer.Option("--out", help="Output: metrics.json, videos/, report/report.html.")],
    syncnet_weights: Annotated[Path, typer.Option("--syncnet-weights", help="SyncNet weights for LSE-D/C.")],
    profile: ProfileOpt = "tiny",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    split: Annotated[str, typer.Option("--split", help="Manifest split to evaluate.")] = "test",
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="DDIM steps (default: the bundle's).")] = None,
    max_clips: Annotated[Optional[int], typer.Option("--max-clips", min=1, help="Evaluate the first N clips only.")] = None,
    fid_frames_per_clip: Annotated[
        Optional[int], typer.Option("--fid-frames-per-clip", min=1, help="Cap frames per clip fed to FID (CPU cost).")
    ] = None,
    champion_metrics: Annotated[
        Optional[Path], typer.Option("--champion-metrics", help="metrics.json of the champion, for the report.")
    ] = None,
    mlflow: Annotated[
        Optional[bool],
        typer.Option("--mlflow/--no-mlflow", help="Log to MLflow; default: only when MLFLOW_TRACKING_URI is set."),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment.")] = "daetalker-evaluate",
) -> None:
    """Generate every clip of a split from its audio and score it against the ground truth.

    Writes OUT/metrics.json (lse_c, lse_d, fid, pose_mae, ... + a ground_truth block and
    per_clip rows, with the SyncNet hash and encoding) and OUT/report/report.html.
    """
    from daetalker import outputs
    from daetalker.config import load_config
    from daetalker.evaluate.evaluate import evaluate_model

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--model": model, "--data": data, "--syncnet-weights": syncnet_weights,
                                         "--champion-metrics": champion_metrics, "--config": config})
    cfg = load_config(profile, config, set_ or [])
    champion = read_champion(champion_metrics) if champion_metrics else None
    kwargs = dict(syncnet_weights=syncnet_weights, cfg=cfg, split=split, steps=steps, champion_metrics=champion,
                  max_clips=max_clips, fid_frames_per_clip=fid_frames_per_clip)
    if _mlflow_wanted(mlflow, True):
        from daetalker import tracking

        with tracking.start_run(experiment, "evaluate", config=cfg, data_dvc=_data_dvc(data),
                                tags={"daetalker.step": "evaluate", "model": model, "data_dir": str(data)}):
            result = evaluate_model(model, data, out, **kwargs)
    else:
        result = evaluate_model(model, data, out, **kwargs)
    flat = {k: v for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
    typer.echo(json.dumps({**flat, "metrics": str(result.metrics_path), "report": str(result.report_path)},
                          indent=2))
