"""The Kubeflow pipeline: compiled YAML, thin components, and a local end-to-end run."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from daetalker.kubeflow.context import RunContext
from pipelines.local import compile_pipeline


def test_compile_is_deterministic_and_loads_back(tmp_path):
    from kfp import components

    a = compile_pipeline(tmp_path / "a.yaml").read_bytes()
    b = compile_pipeline(tmp_path / "b.yaml").read_bytes()
    assert a == b
    spec = yaml.safe_load(a)
    tasks = spec["root"]["dag"]["tasks"]
    assert {"synth-corpus", "preprocess", "validate", "version-data", "train-autoencoder", "train-dae",
            "extract-latents", "train-s2l", "package-model", "train-syncnet", "evaluate",
            "register-and-gate"} <= set(tasks)
    # the DAG is a chain: each stage waits for the one before it
    assert tasks["validate"]["dependentTasks"] == ["preprocess"]
    assert tasks["train-autoencoder"]["dependentTasks"] == ["version-data"]
    assert tasks["train-dae"]["dependentTasks"] == ["train-autoencoder", "version-data"]
    loaded = components.load_component_from_file(str(tmp_path / "a.yaml"))
    assert loaded.name == "train-speaker"


def test_components_are_thin_wrappers_over_steps():
    import inspect

    from components import data, evaluation, registry, training

    for comp in (data.synth_corpus, data.preprocess, data.validate, data.version_data,
                 training.train_autoencoder, training.train_dae, training.extract_latents, training.train_s2l,
                 registry.package_model, evaluation.train_syncnet, evaluation.evaluate,
                 registry.register_and_gate):
        src = inspect.getsource(comp.python_func)
        assert "daetalker.stages.steps" in src, comp.name
        assert len(src.splitlines()) < 20, f"{comp.name} holds logic; move it into daetalker"


def test_run_context_round_trip(tmp_path):
    ctx = RunContext(speaker="ana", profile="tiny", workspace=str(tmp_path), overrides=("dae.lr=1e-3",),
                     parent_run_id="abc", tags={"k": "v"})
    back = RunContext.from_json(ctx.to_json())
    assert back == ctx
    assert back.config().dae.lr == pytest.approx(1e-3)
    assert back.raw_dir() == tmp_path / "data" / "raw" / "ana"


RUN_OVERRIDES = ["dae.max_steps=4", "dae.ckpt_every=2", "dae.log_every=2", "dae.sample_every=4",
                 "dae.sample_steps=2", "s2l.max_steps=4", "s2l.ckpt_every=2", "s2l.log_every=2",
                 "s2l.val_every=4", "syncnet.max_steps=4", "syncnet.log_every=2", "syncnet.eval_every=4",
                 "preprocess.min_usable_minutes=0.1", "autoencoder.max_steps=4", "autoencoder.ckpt_every=2",
                 "autoencoder.log_every=2", "autoencoder.sample_every=4", "autoencoder.stats_frames=64",
                 "autoencoder.eval_frames=8", "evaluate.max_clips=1"]  # one held-out clip: the wiring is under test


@pytest.mark.slow
def test_local_pipeline_runs_every_step_and_logs_to_mlflow(mlflow_server, tmp_path):
    """kfp.local end to end on a short synthetic corpus with a few DAE steps."""
    from mlflow.tracking import MlflowClient

    from pipelines.local import run_local

    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    result = run_local(
        tmp_path / "out", speaker="pipe", profile="tiny", workspace=ws, synth_minutes=0.35,
        overrides=RUN_OVERRIDES,
    )
    assert (ws / "data.dvc").is_file()
    assert (ws / "data" / "processed" / "pipe" / "manifest.parquet").is_file()
    out = json.loads((tmp_path / "out" / "pipeline_outputs.json").read_text())
    assert out == result.outputs
    assert out["model"] == "talker-pipe" and out["version"] == "1"
    # registered and gated: always challenger, champion only when every threshold held
    assert out["aliases"]["challenger"] == "1"
    assert (out["aliases"].get("champion") == "1") == out["passed"]
    metrics = json.loads(open(out["metrics"]).read())
    assert {"lse_c", "lse_d", "fid", "pose_mae", "syncnet_sha256", "ground_truth"} <= set(metrics)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                            out["sample_video"]], capture_output=True, text=True, check=True).stdout.split()
    assert probe == ["h264", "aac"]
    client = MlflowClient()
    exp = client.get_experiment_by_name("daetalker-pipe")
    runs = client.search_runs([exp.experiment_id])
    steps = {r.data.tags.get("daetalker.step"): r for r in runs}
    assert {"pipeline", "synth", "preprocess", "validate", "version-data", "train-autoencoder", "train-dae",
            "extract-latents", "train-s2l", "package", "train-syncnet", "evaluate", "register-promote"} <= set(steps)
    parent = steps["pipeline"].info.run_id
    for name in ("synth", "preprocess", "validate", "version-data", "train-autoencoder", "train-dae",
                 "extract-latents", "train-s2l", "package", "train-syncnet", "evaluate", "register-promote"):
        assert steps[name].info.status == "FINISHED", name
        assert steps[name].data.tags["mlflow.parentRunId"] == parent, name
    assert steps["pipeline"].info.status == "FINISHED"
    assert steps["train-dae"].data.tags["data_hash"] == steps["version-data"].data.tags["dvc.data_hash"]
    assert result.steps == {"ok": 12}  # the tiny profile's DAE is latent: train-autoencoder trains
    assert sorted(p.name for p in (tmp_path / "out" / "logs").iterdir())[:3] == [
        "00-pipeline.log", "01-synth-corpus.log", "02-preprocess.log"]
    (dae_log,) = (tmp_path / "out" / "logs").glob("*-train-dae.log")
    assert "train-dae" in dae_log.read_text()

    # Nothing changed: the training and evaluation steps come from the cache, nothing is registered again.
    again = run_local(tmp_path / "out", speaker="pipe", profile="tiny", workspace=ws, synth_minutes=0.35,
                      overrides=RUN_OVERRIDES)
    assert again.steps == {"ok": 5, "cached": 7}, again.steps
    assert again.outputs["version"] == "1" and again.outputs["registered"] == "already v1"
    assert again.seconds < 0.5 * result.seconds


@pytest.mark.slow
def test_speaker_add_then_local_retrain_speaker_trains_the_published_revision(mlflow_server, tmp_path):
    """Onboarding from a folder of videos, then retrain-speaker on what it published, with kfp.local."""
    from typer.testing import CliRunner

    from daetalker.bundle.build import TEST_OVERRIDES
    from daetalker.cli import app
    from daetalker.config import load_config
    from daetalker.synth.corpus import write_corpus
    from daetalker.versioning import dvc_repo
    from pipelines.local import run_local

    footage = tmp_path / "footage"
    write_corpus(footage, minutes=0.35, seed=3, cfg=load_config("tiny").synth)
    (footage / "notes").mkdir()
    (footage / "notes" / "broken.mp4").write_bytes(b"not a video")  # quarantined, the rest go on
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    add = ["speaker", "add", "bo", "--videos", str(footage), "--root", str(ws), "--no-mlflow", "--profile",
           "tiny-pixel", "--set", "preprocess.min_usable_minutes=0.1", "--set", "syncnet.neg_other_clip=0.3"]
    r = CliRunner().invoke(app, add)
    assert r.exit_code == 0, r.output
    assert "settings kept in" in r.output  # and versioned with the footage: the run below applies them
    assert "syncnet.neg_other_clip=0.3" in (ws / "data" / "raw" / "bo" / "speaker.yaml").read_text()
    rev = dvc_repo.data_hash(ws)
    assert f"data revision {rev} pushed and published" in r.output and "1 quarantined" in r.output
    assert (ws / "data" / "raw" / "bo" / "notes" / "broken.mp4").is_file()
    r = CliRunner().invoke(app, add)  # the same footage again: nothing copied, the same revision
    assert r.exit_code == 0 and "0 file(s) copied in" in r.output and dvc_repo.data_hash(ws) == rev

    # the pixel profile at 16 px: the stages are the ones the test above runs; here the wiring is under test
    micro = [o for o in TEST_OVERRIDES if not o.startswith("dae.sample_steps")]
    result = run_local(tmp_path / "out", speaker="bo", profile="tiny-pixel", workspace=ws,
                       overrides=RUN_OVERRIDES + micro, pipeline="retrain-speaker")
    out = result.outputs
    assert out["model"] == "talker-bo" and out["version"] == "1" and out["aliases"]["challenger"] == "1"
    assert result.steps == {"ok": 12}  # check out + the 11 stages of train_and_release
    metrics = json.loads(open(out["metrics"]).read())
    assert metrics["clips"] == 1 and metrics["steps"] == 2  # evaluate.max_clips reaches the pipeline's step
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("daetalker-bo").experiment_id])
    dae = next(r for r in runs if r.data.tags.get("daetalker.step") == "train-dae")
    assert dae.data.tags["daetalker.data_rev"] == rev and dae.data.tags["daetalker.runner"] == "kfp.local"
    sync = next(r for r in runs if r.data.tags.get("daetalker.step") == "train-syncnet")
    assert sync.data.params["syncnet.neg_other_clip"] == "0.3"  # the speaker's setting, from the revision
