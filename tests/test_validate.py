"""Dataset validation with great-expectations on a small dataset written in the real layout."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from daetalker.config import load_config
from daetalker.data import dataset as ds
from daetalker.data.validate import ValidationFailed, validate_dataset

R, N = 64, 30  # resolution, frames per clip (1.2 s)


def write_clip(root: Path, cid: str, n: int = N, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    c = ds.clip_dir(root, cid)
    c.mkdir(parents=True)
    with ds.NpyWriter(c / "frames.npy", (n, R, R, 3), np.uint8) as w:
        w.write(rng.integers(0, 255, (n, R, R, 3), dtype=np.uint8))
    np.save(c / "landmarks.npy", rng.uniform(5, R - 5, (n, 468, 3)).astype(np.float32))
    np.save(c / "mel.npy", rng.normal(-5, 2, (4 * n, 80)).astype(np.float32))
    sf.write(c / "audio.wav", (rng.normal(0, 0.05, 640 * n) * 32767).astype(np.int16), 16000, subtype="PCM_16")
    labels = pd.DataFrame({"frame": np.arange(n), "yaw": rng.normal(0, 8, n), "pitch": rng.normal(0, 5, n),
                           "roll": rng.normal(0, 3, n), "mouth_open": rng.uniform(0, 0.2, n),
                           "det_score": rng.uniform(0.7, 1, n), "face_found": np.ones(n, bool)})
    ds.write_table(labels.astype({c: np.float32 for c in ("yaw", "pitch", "roll", "mouth_open", "det_score")}),
                   c / "labels.parquet")
    return dict(clip_id=cid, source=f"{cid}.mp4", source_sha256=f"{seed:064x}", segment=0, start_frame=0,
                n_frames=n, fps=25.0, duration_s=n / 25, src_width=512, src_height=512, crop_x0=40, crop_y0=20,
                crop_size=420, resolution=R, detection_rate=0.99, n_faces_max=1, audio_dbfs=-24.0, silent=False,
                split="train", has_ground_truth=False)


def write_dataset(root: Path, rows: list[dict]) -> None:
    ds.write_table(pd.DataFrame(rows), root / ds.MANIFEST, ds.MANIFEST_SCHEMA)
    ds.write_table(pd.DataFrame({"source": ["bad.mp4"], "reason": ["no_face"], "detail": ["none"]}),
                   root / ds.QUARANTINE, ds.QUARANTINE_SCHEMA)


@pytest.fixture
def cfg():
    return replace(load_config("tiny-pixel").preprocess, min_usable_minutes=0.05)  # 3 s, 64 px crops


@pytest.fixture
def good(tmp_path):
    root = tmp_path / "good"
    write_dataset(root, [write_clip(root, f"speaker-{i}-s0", seed=i + 1) for i in range(3)])
    return root


def test_a_sound_dataset_passes_with_a_deterministic_report(good, cfg):
    result = validate_dataset(good, cfg)
    assert result.success and result.failed == [] and result.evaluated == 35
    assert result.n_clips == 3 and result.usable_minutes == pytest.approx(3 * 1.2 / 60)
    report = json.loads(result.json_path.read_text())
    assert report["success"] and report["frames"] == 3 * N and report["quarantined_sources"] == 1
    assert [s["suite"] for s in report["suites"]] == ["manifest", "frames"]
    assert "PASSED" in result.html_path.read_text()
    first = (result.json_path.read_bytes(), result.html_path.read_bytes())
    validate_dataset(good, cfg)  # validating again changes no byte of the versioned folder
    assert (result.json_path.read_bytes(), result.html_path.read_bytes()) == first
    result.raise_for_failure()  # no-op


def test_failures_name_the_expectations_and_the_clips(tmp_path, cfg):
    root = tmp_path / "bad"
    rows = [write_clip(root, f"speaker-{i}-s0", seed=i + 1) for i in range(3)]
    # speaker-0: audio one sample short of 640 per frame
    c0 = ds.clip_dir(root, "speaker-0-s0")
    wav, _ = sf.read(c0 / "audio.wav", dtype="int16")
    sf.write(c0 / "audio.wav", wav[:-1], 16000, subtype="PCM_16")
    # speaker-1: a NaN pose and a landmark outside the crop
    c1 = ds.clip_dir(root, "speaker-1-s0")
    labels = pd.read_parquet(c1 / "labels.parquet")
    labels.loc[7, "yaw"] = np.nan
    ds.write_table(labels, c1 / "labels.parquet")
    lm = np.load(c1 / "landmarks.npy")
    lm[3, 100, 0] = R + 2.0
    np.save(c1 / "landmarks.npy", lm)
    # speaker-2: listed twice, and its crop mostly outside the frame
    rows[2].update(crop_x0=400, crop_y0=300)
    write_dataset(root, rows + [rows[2]])

    result = validate_dataset(root, cfg)
    assert not result.success
    failed = {(f.expectation, f.column): f.clips for f in result.failed}
    assert failed[("expect_column_pair_values_to_be_equal", "audio_samples,expected_audio_samples")] == [
        "speaker-0-s0"]
    assert failed[("expect_column_values_to_not_be_null", "yaw")] == ["speaker-1-s0"]
    assert failed[("expect_column_values_to_be_between", "landmark_max")] == ["speaker-1-s0"]
    assert failed[("expect_column_values_to_be_unique", "clip_id")] == ["speaker-2-s0"]
    assert failed[("expect_column_values_to_be_between", "crop_visible")] == ["speaker-2-s0"]
    # the repeated clip also repeats its frames in the per-frame table
    assert failed[("expect_compound_columns_to_be_unique", "['clip_id', 'frame']")] == ["speaker-2-s0"]
    assert len(result.failed) == 6
    with pytest.raises(ValidationFailed, match=r"fails 6 expectation\(s\)[\s\S]*audio_samples.*speaker-0-s0"):
        result.raise_for_failure()
    page = result.html_path.read_text()
    assert "FAILED" in page and "speaker-1-s0" in page
    report = json.loads(result.json_path.read_text())
    assert not report["success"] and len(report["failed"]) == 6


def test_a_truncated_frames_file_is_one_failure_naming_the_file_cause_and_fix(good, cfg):
    frames = ds.clip_dir(good, "speaker-1-s0") / "frames.npy"
    frames.write_bytes(frames.read_bytes()[: frames.stat().st_size // 2])  # a copy cut short
    result = validate_dataset(good, cfg)
    assert [(f.expectation, f.column, f.clips) for f in result.failed] == [
        ("expect_column_values_to_be_null", "unreadable", ["speaker-1-s0"])]  # not one per hidden length
    line = str(result.failed[0])
    assert ("clips/speaker-1-s0/frames.npy: cannot be read: mmap length is greater than file size "
            "(truncated or corrupt? fix: re-run `daetalker preprocess` with the same --in and --out") in line
    report = json.loads(result.json_path.read_text())
    assert report["failed"] == [line] and "clips/speaker-1-s0/frames.npy" in result.html_path.read_text()
    with pytest.raises(ValidationFailed, match=r"fails 1 expectation\(s\)[\s\S]*speaker-1-s0/frames.npy"):
        result.raise_for_failure()


def test_missing_and_corrupt_files_each_named_once(good, cfg):
    (ds.clip_dir(good, "speaker-0-s0") / "landmarks.npy").unlink()
    (ds.clip_dir(good, "speaker-2-s0") / "labels.parquet").write_bytes(b"PAR1 not a table")
    result = validate_dataset(good, cfg)
    assert [f.column for f in result.failed] == ["unreadable"]
    assert sorted(result.failed[0].clips) == ["speaker-0-s0", "speaker-2-s0"]
    detail = result.failed[0].detail
    assert "clips/speaker-0-s0/landmarks.npy: missing (fix: re-run `daetalker preprocess`" in detail
    assert "clips/speaker-2-s0/labels.parquet: cannot be read:" in detail


def test_a_dataset_without_train_clips_fails_with_the_fix(tmp_path, cfg):
    root = tmp_path / "one-source"
    rows = [write_clip(root, f"talk-s0-{s}", n=40, seed=1) for s in ("val", "test")]  # 3.2 s: enough minutes
    for row, split in zip(rows, ("val", "test")):
        row["split"] = split
    write_dataset(root, rows)
    result = validate_dataset(root, cfg)
    assert [(f.expectation, f.column) for f in result.failed] == [
        ("expect_column_distinct_values_to_contain_set", "split")]
    assert "fix: the train split is empty: re-run `daetalker preprocess` into this folder" in str(result.failed[0])


def test_the_report_names_the_split_strategy(good, cfg):
    assert json.loads(validate_dataset(good, cfg).json_path.read_text())["split_strategy"] is None  # no record
    (good / ds.RUN_RECORD).write_text(json.dumps({"split_strategy": ds.BY_TIME}))
    result = validate_dataset(good, cfg)
    assert json.loads(result.json_path.read_text())["split_strategy"] == "within_source_by_time"
    assert "(within_source_by_time)" in result.html_path.read_text()


def test_too_few_usable_minutes_fail_the_dataset(good, cfg):
    result = validate_dataset(good, replace(cfg, min_usable_minutes=5.0))
    assert [(f.expectation, f.column) for f in result.failed] == [("expect_column_sum_to_be_between", "usable_s")]
    assert "observed 3.6" in str(result.failed[0])


def test_cli_exit_code_follows_the_verdict(good, tmp_path):
    from typer.testing import CliRunner

    from daetalker.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "--data", str(good), "--no-mlflow", "--profile", "tiny-pixel",
                             "--set", "preprocess.min_usable_minutes=0.05"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "35/35 expectations passed on 3 clips" in ok.output
    bad = runner.invoke(app, ["validate", "--data", str(good), "--no-mlflow", "--profile", "tiny-pixel"])  # 0.2 min
    assert bad.exit_code != 0 and isinstance(bad.exception, ValidationFailed)
    assert "usable_s" in str(bad.exception)


@pytest.mark.slow
def test_the_report_is_logged_to_mlflow(good, cfg, mlflow_server):
    import mlflow

    from daetalker.stages import data as stages
    from daetalker.stages.run import StageRun

    result = stages.validate(StageRun("data"), good, load_config("tiny-pixel", None, ["preprocess.min_usable_minutes=0.05"]))
    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("data")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    run = runs[0]
    assert run.info.run_name == "validate" and run.data.tags["validation_success"] == "true"
    assert run.data.metrics["clips"] == 3 and run.data.metrics["expectations_failed"] == 0
    assert run.data.params["preprocess.resolution"] == "64"
    names = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    assert names == {"validation/validation.json", "validation/validation.html"}
    assert result.success
