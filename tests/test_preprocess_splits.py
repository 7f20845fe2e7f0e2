"""Splits of small datasets (docs/dataset.md, Splits): with fewer than three recordings every kept
segment is cut in time into train, val and test clips (``within_source_by_time``); with three or
more, splits are drawn per source as before. The strategy is recorded in preprocess.json."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from daetalker.config import load_config
from daetalker.data import dataset as ds


# ------------------------------------------------------------------ units
def test_time_split_ranges_hold_out_the_end_of_each_segment():
    assert ds.time_split_ranges(1000, 0.1, 0.1, 25) == [("train", 0, 800), ("val", 800, 900), ("test", 900, 1000)]
    # every part at least min_frames (a clip validation accepts)
    assert ds.time_split_ranges(164, 0.1, 0.1, 25) == [("train", 0, 114), ("val", 114, 139), ("test", 139, 164)]
    # too short for three parts: val goes first, then test; train always stays
    assert ds.time_split_ranges(60, 0.1, 0.1, 25) == [("train", 0, 35), ("test", 35, 60)]
    assert ds.time_split_ranges(40, 0.1, 0.1, 25) == [("train", 0, 40)]
    assert ds.time_split_ranges(1000, 0.0, 0.2, 25) == [("train", 0, 800), ("test", 800, 1000)]


def test_the_strategy_is_per_source_only_with_three_sources_one_of_them_in_train():
    shas = [f"{i:064x}" for i in range(200)]
    train = [s for s in shas if ds.assign_split(s, 0.1, 0.1, 0) == "train"]
    held = [s for s in shas if ds.assign_split(s, 0.1, 0.1, 0) != "train"]

    def strategy(sources: list[str]) -> str:
        return ds.split_strategy(ds.assign_splits(sources, 0.1, 0.1, 0))

    assert strategy(held[:1]) == strategy(train[:2]) == ds.BY_TIME  # one recording, or two
    assert strategy(held[:3]) == ds.BY_TIME  # three, none drawn into train: nothing would train
    assert strategy(train[:3]) == strategy(held[:2] + train[:1]) == ds.PER_SOURCE
    assert strategy([]) == ds.PER_SOURCE  # nothing to split


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Three 4-5 s recordings of the synthetic speaker (clip_000k.mp4 + .wav + .parquet)."""
    from daetalker.config.synth import SynthConfig
    from daetalker.synth.corpus import synth_corpus

    root = tmp_path_factory.mktemp("corpus")
    synth_corpus(root, minutes=0.3, seed=2, cfg=SynthConfig(size=128, clip_seconds=4.0), progress=False)
    assert (root / "clip_0002.mp4").is_file()
    return root


def use(corpus: Path, inp: Path, *clips: int) -> Path:
    """``inp`` holds exactly the recordings ``clips`` of the corpus."""
    shutil.rmtree(inp, ignore_errors=True)
    inp.mkdir(parents=True)
    for k in clips:
        for f in corpus.glob(f"clip_{k:04d}.*"):
            shutil.copy(f, inp)
    return inp


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_one_recording_is_cut_in_time_into_train_val_and_test(corpus, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from daetalker.cli import app
    from daetalker.data.audio_features import mel_params
    from daetalker.data.preprocess import preprocess_dataset
    from daetalker.data.validate import validate_dataset
    from daetalker.features.log_mel import log_mel
    from daetalker.train.frames_dataset import FramesDataset

    cfg = load_config("tiny").preprocess
    inp, out = use(corpus, tmp_path / "in", 0), tmp_path / "out"
    s = preprocess_dataset(inp, out, cfg)
    assert s.split_strategy == ds.BY_TIME and s.splits == {"train": 1, "val": 1, "test": 1}
    record = json.loads((out / ds.RUN_RECORD).read_text())
    assert record["split_strategy"] == "within_source_by_time"
    m = ds.load_manifest(out).sort_values("start_frame")
    seg = m["clip_id"].iloc[0].removesuffix("-train")
    assert list(m["clip_id"]) == [f"{seg}-train", f"{seg}-val", f"{seg}-test"]
    assert list(m["split"]) == ["train", "val", "test"] and (m["segment"] == 0).all()
    # consecutive, never overlapping, the held-out parts at the end
    assert list(m["start_frame"]) == list(np.cumsum([0, *m["n_frames"][:-1]]))
    assert (m["n_frames"][1:] >= 25).all() and m["n_frames"].iloc[0] > m["n_frames"][1:].sum()
    assert [c["cut_from"] for c in record["sources"]["clip_0000.mp4"]["clips"]] == [seg] * 3
    assert sorted(p.name for p in (out / ds.CLIPS).iterdir()) == sorted(m["clip_id"])

    # the parts are the whole segment cut at the same frames (the per-source layout of the same input)
    monkeypatch.setattr(ds, "split_strategy", lambda splits: ds.PER_SOURCE)
    whole_out = tmp_path / "whole"
    preprocess_dataset(inp, whole_out, cfg)
    monkeypatch.undo()
    whole = ds.clip_dir(whole_out, seg)
    parts = [ds.clip_dir(out, c) for c in m["clip_id"]]
    for name in ("frames.npy", "landmarks.npy"):
        assert np.array_equal(np.concatenate([np.load(p / name) for p in parts]), np.load(whole / name))
    for name in ("labels.parquet", ds.GROUND_TRUTH):
        cut = pd.concat([pd.read_parquet(p / name) for p in parts], ignore_index=True)
        full = pd.read_parquet(whole / name)
        assert list(pd.read_parquet(parts[1] / name)["frame"]) == list(range(m["n_frames"].iloc[1]))
        pd.testing.assert_frame_equal(cut.drop(columns="frame"), full.drop(columns="frame"))
    audio = [sf.read(p / "audio.wav", dtype="int16")[0] for p in parts]
    assert np.array_equal(np.concatenate(audio), sf.read(whole / "audio.wav", dtype="int16")[0])
    for p, a in zip(parts, audio):  # each part's mel is its own wav's, as for any clip
        np.testing.assert_allclose(np.load(p / "mel.npy"), log_mel(a / 32768.0, **mel_params(cfg)), atol=1e-4)

    # valid, and the trainers find every split
    assert validate_dataset(out, replace(cfg, min_usable_minutes=0.05)).success
    assert len(FramesDataset(out)) == m["n_frames"].iloc[0]
    assert len(FramesDataset(out, splits=("val", "test"))) == m["n_frames"][1:].sum()

    # a rerun changes no byte and says which strategy it used
    before = snapshot(out)
    res = CliRunner().invoke(app, ["preprocess", "--in", str(inp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "splits within_source_by_time: train 1, val 1, test 1" in res.output
    assert snapshot(out) == before


@pytest.mark.slow
def test_a_third_recording_switches_to_per_source_as_a_fresh_run_would(corpus, tmp_path):
    from daetalker.data.preprocess import preprocess_dataset

    cfg = load_config("tiny").preprocess
    inp, out = tmp_path / "in", tmp_path / "out"
    s = preprocess_dataset(use(corpus, inp, 0, 1), out, cfg)
    assert s.split_strategy == ds.BY_TIME and s.splits == {"train": 2, "val": 2, "test": 2}
    two = snapshot(out)

    s = preprocess_dataset(use(corpus, inp, 0, 1, 2), out, cfg)
    assert s.split_strategy == ds.PER_SOURCE and s.n_reused == 0  # the cut ones are processed again, whole
    m = ds.load_manifest(out)
    draws = ds.assign_splits(sorted(m["source_sha256"]), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    assert dict(zip(m["source_sha256"], m["split"])) == draws
    assert m["clip_id"].str.endswith("-s0").all() and "cut_from" not in (out / ds.RUN_RECORD).read_text()
    assert json.loads((out / ds.RUN_RECORD).read_text())["split_strategy"] == "per_source"
    fresh = tmp_path / "fresh"
    preprocess_dataset(inp, fresh, cfg)
    assert snapshot(out) == snapshot(fresh)

    # and back: with two recordings again, the dataset is the one two gave
    s = preprocess_dataset(use(corpus, inp, 0, 1), out, cfg)
    assert s.split_strategy == ds.BY_TIME and snapshot(out) == two


@pytest.mark.slow
def test_a_rerun_repairs_a_truncated_clip_file(corpus, tmp_path):
    from daetalker.data.preprocess import preprocess_dataset
    from daetalker.data.validate import validate_dataset

    cfg = load_config("tiny").preprocess
    inp, out = use(corpus, tmp_path / "in", 0), tmp_path / "out"
    preprocess_dataset(inp, out, cfg)
    good = snapshot(out)
    frames = ds.clip_dir(out, ds.load_manifest(out)["clip_id"].iloc[0]) / "frames.npy"
    frames.write_bytes(frames.read_bytes()[: frames.stat().st_size // 2])
    result = validate_dataset(out, replace(cfg, min_usable_minutes=0.05))
    assert [f.column for f in result.failed] == ["unreadable"]
    assert f"{frames.relative_to(out)}: cannot be read: mmap length is greater than file size" in str(result.failed[0])
    s = preprocess_dataset(inp, out, cfg)  # the fix the message gives
    assert s.n_reused == 0
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("validation")} == good
