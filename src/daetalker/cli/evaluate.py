"""``daetalker evaluate``: generate held-out clips from their audio and score them against the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from daetalker.cli.options import ConfigOpt, ExperimentOpt, MlflowOpt, ProfileOpt, SetOpt, echo_json, stage_config, stage_run


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
    split: Annotated[str, typer.Option("--split", help="Manifest split to evaluate: train, val, test, or "
                                       "heldout (val + test).")] = "test",
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="DDIM steps (default: the bundle's).")] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", min=0.0, max=10.0, help="Reference guidance "
                        "(default: the bundle's dae.guidance; 1 = plain DDIM).")] = None,
    max_clips: Annotated[
        Optional[int], typer.Option("--max-clips", min=1, help="Evaluate N clips, spread evenly in clip-id order "
                                    "(default: evaluate.max_clips, whose 0 means every clip).")
    ] = None,
    fid_frames_per_clip: Annotated[
        Optional[int], typer.Option("--fid-frames-per-clip", min=1, help="Cap frames per clip fed to FID (CPU cost).")
    ] = None,
    champion_metrics: Annotated[
        Optional[Path], typer.Option("--champion-metrics", help="metrics.json of the champion, for the report.")
    ] = None,
    mlflow: MlflowOpt = None,
    experiment: ExperimentOpt = "daetalker-evaluate",
) -> None:
    """Generate every clip of a split from its audio and score it against the ground truth.

    Writes OUT/metrics.json (lse_c, lse_d, fid, pose_mae, ... + a ground_truth block and
    per_clip rows, with the SyncNet hash and encoding) and OUT/report/report.html.
    """
    from daetalker import outputs
    from daetalker.registry.log_model import local_bundle
    from daetalker.stages.evaluation import evaluate

    outputs.require_dir_target("--out", out)
    outputs.refuse_inputs("--out", out, {"--model": model, "--data": data, "--syncnet-weights": syncnet_weights,
                                         "--champion-metrics": champion_metrics, "--config": config})
    cfg = stage_config(profile, config, set_)
    champion = read_champion(champion_metrics) if champion_metrics else None
    with local_bundle(model) as bundle:  # models:/ URIs: fetched from the project's registry, verified
        echo_json(evaluate(stage_run(experiment, mlflow), bundle, data, out, cfg, syncnet_weights=syncnet_weights,
                           champion_metrics=champion, split=split, steps=steps, guidance=guidance,
                           max_clips=max_clips or cfg.evaluate.max_clips or None,
                           fid_frames_per_clip=fid_frames_per_clip, source=model))
