"""Data faults are named: a truncated clip file, an empty train split and a preprocess run
that keeps nothing each fail with the file and the fix, not a bare numpy error or exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daetalker.data import dataset as ds
from daetalker.train.frames_dataset import FramesDataset

CLI = str(Path(sys.executable).with_name("daetalker"))
ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "OMP_NUM_THREADS": "1"}
FIX = "fix: re-run `daetalker preprocess`"


def write_frames_dataset(root: Path, clips: tuple[tuple[str, int, str], ...]) -> Path:
    """manifest.parquet and clips/<id>/frames.npy (and mel.npy), the files the training datasets read."""
    rng = np.random.default_rng(0)
    for cid, n, _ in clips:
        d = ds.clip_dir(root, cid)
        d.mkdir(parents=True)
        np.save(d / "frames.npy", rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8))
        np.save(d / "mel.npy", rng.normal(size=(4 * n, 80)).astype(np.float32))
    pd.DataFrame({"clip_id": [c for c, _, _ in clips], "n_frames": [n for _, n, _ in clips],
                  "split": [s for _, _, s in clips]}).to_parquet(root / ds.MANIFEST)
    return root


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short


# ------------------------------------------------------------------ training datasets
def test_an_empty_train_split_is_refused_naming_the_manifest_and_the_fix(tmp_path):
    from daetalker.train.s2l_dataset import load_clips

    root = write_frames_dataset(tmp_path, (("talk-s0", 30, "val"),))  # one recording, drawn into val
    with pytest.raises(ds.EmptySplitError) as e:
        FramesDataset(root, splits=("train",))
    msg = str(e.value)
    assert msg.startswith(f"{root / ds.MANIFEST}: no frames in split(s) ['train'] (clips per split: val 1)")
    assert "nothing to train on (fix: re-run `daetalker preprocess` into this folder" in msg
    assert "splits each one by time" in msg
    with pytest.raises(ds.EmptySplitError, match=r"manifest.parquet: no frames in split\(s\) \['train'\].*fix:"):
        load_clips(root, tmp_path / "latents", ("train",), 4)
    # a held-out split the trainers can do without: named, no fix to apply
    with pytest.raises(ds.EmptySplitError) as e:
        FramesDataset(root, splits=("test",))
    assert "fix" not in str(e.value)


def test_a_truncated_frames_file_is_named_with_the_cause_and_the_fix(tmp_path):
    root = write_frames_dataset(tmp_path, (("a-s0", 30, "train"), ("b-s0", 30, "train")))
    truncate(ds.clip_dir(root, "b-s0") / "frames.npy")
    with pytest.raises(ds.DatasetError) as e:  # when the dataset opens, not at some step mid-training
        FramesDataset(root)
    path = ds.clip_dir(root, "b-s0") / "frames.npy"
    assert str(e.value).startswith(f"{path}: cannot be read: mmap length is greater than file size "
                                   f"(truncated or corrupt? {FIX} with the same --in and --out")
    with pytest.raises(ds.DatasetError, match="b-s0/frames.npy: cannot be read"):
        ds.open_frames(root, "b-s0")


def test_a_frames_file_shorter_than_the_manifest_is_named(tmp_path):
    root = write_frames_dataset(tmp_path, (("a-s0", 30, "train"),))
    np.save(ds.clip_dir(root, "a-s0") / "frames.npy", np.zeros((20, 16, 16, 3), np.uint8))
    with pytest.raises(ds.DatasetError, match=r"a-s0/frames.npy: 20 frames, the manifest says 30 \(" + FIX):
        FramesDataset(root)


def test_a_truncated_mel_file_is_named_for_speech2latent(tmp_path):
    from daetalker.train.s2l_dataset import load_clips

    root = write_frames_dataset(tmp_path, (("a-s0", 30, "train"),))
    truncate(ds.clip_dir(root, "a-s0") / "mel.npy")
    with pytest.raises(ds.DatasetError, match=r"a-s0/mel.npy: cannot be read: .*" + FIX):
        load_clips(root, tmp_path / "latents", ("train",), 4)


@pytest.mark.slow
def test_train_dae_prints_the_fault_without_a_traceback_and_exits_2(tmp_path):
    def train(data: Path) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, "train-dae", "--data", str(data), "--out", str(tmp_path / "run"), "--no-mlflow",
                               "--device", "cpu"], env=ENV, capture_output=True, text=True, timeout=300)

    empty = write_frames_dataset(tmp_path / "empty", (("talk-s0", 30, "test"),))
    r = train(empty)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]
    assert "no frames in split(s) ['train']" in r.stderr and "fix: re-run `daetalker preprocess`" in r.stderr
    torn = write_frames_dataset(tmp_path / "torn", (("a-s0", 30, "train"),))
    truncate(ds.clip_dir(torn, "a-s0") / "frames.npy")
    r = train(torn)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]
    assert "a-s0/frames.npy: cannot be read: mmap length is greater than file size" in r.stderr


# ------------------------------------------------------------------ preprocess keeps nothing
def test_preprocess_that_keeps_nothing_fails_after_writing_its_reports(tmp_path):
    from daetalker.config import load_config
    from daetalker.data.preprocess import NothingKept, preprocess_dataset

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.mp4").write_text("these are my notes, not a video\n")
    (tmp_path / "in" / "empty.mp4").write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(NothingKept) as e:
        preprocess_dataset(tmp_path / "in", out, load_config("tiny").preprocess)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'in'}: nothing usable was kept: all 2 source(s) quarantined "
                          "(empty_file 1, unreadable 1)")
    assert f"reason and fix are in {out / ds.QUARANTINE}" in msg and "then re-run `daetalker preprocess`" in msg
    # nothing done is lost: the quarantine report and the run record are written
    q = pd.read_parquet(out / ds.QUARANTINE)
    assert sorted(q["reason"]) == ["empty_file", "unreadable"]
    assert json.loads((out / ds.RUN_RECORD).read_text())["sources"]["notes.mp4"]["status"] == "quarantined"
    assert e.value.summary.n_clips == 0 and e.value.summary.n_quarantined == 2


def test_preprocess_of_a_folder_without_media_names_the_fix(tmp_path):
    from daetalker.config import load_config
    from daetalker.data.preprocess import NothingKept, preprocess_dataset

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("videos to come\n")
    with pytest.raises(NothingKept, match=r"no video or audio file found.*1 other file\(s\) ignored.*fix: point "
                                          r"--in at the folder of the speaker's videos"):
        preprocess_dataset(tmp_path / "in", tmp_path / "out", load_config("tiny").preprocess)
    assert (tmp_path / "out" / ds.QUARANTINE).is_file()


@pytest.mark.slow
def test_cli_preprocess_exits_2_when_nothing_is_kept(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.mp4").write_text("not a video\n")
    r = subprocess.run([CLI, "preprocess", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "nothing usable was kept" in r.stderr and "quarantine.parquet" in r.stderr
    assert (tmp_path / "out" / ds.QUARANTINE).is_file()
