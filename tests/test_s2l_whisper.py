"""s2l.features=whisper-tiny end to end: features cached from each clip's audio.wav, speech2latent trained on
them, a bundle that records them, and a video generated from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from daetalker.bundle import read_manifest
from daetalker.bundle.build import TEST_OVERRIDES, bundle_from_training, make_test_bundle
from daetalker.config import load_config
from daetalker.errors import CheckpointError, ConfigError
from daetalker.features import log_mel
from daetalker.generate.model import load_talker
from daetalker.generate.video import generate_video
from daetalker.models.loading import load_s2l
from daetalker.train.loop import MemoryLogger
from daetalker.train.s2l_trainer import train_s2l

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LATENT_DIM = 16  # the test DAE's (TEST_OVERRIDES)
TINY_S2L = [
    "s2l.features=whisper-tiny", "s2l.d_model=32", "s2l.heads=2", "s2l.ffn_dim=32", "s2l.conv_kernel=3",
    "s2l.blocks_before=1", "s2l.blocks_after=1", "s2l.frontend_kernel=3", "s2l.pose_predictor_dim=16",
    "s2l.pose_predictor_layers=1", "s2l.batch_size=4", "s2l.window_seconds=0.8", "s2l.lr=3e-3",
    "s2l.log_every=1", "s2l.val_every=4", "s2l.ckpt_every=4", "s2l.bf16=false", "s2l.num_workers=0",
    "s2l.mlflow=false",
]


def _audio(n_frames: int, seed: int) -> np.ndarray:
    """Syllable-like bursts of a gliding tone over noise, 640 samples per frame."""
    rng = np.random.default_rng(seed)
    t = np.arange(640 * n_frames) / 16000
    env = np.clip(np.sin(2 * np.pi * (2.5 + seed) * t), 0, None)
    tone = np.sin(2 * np.pi * (150 + 60 * seed + 50 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (0.3 * env * tone + 0.01 * rng.normal(size=t.shape)).astype(np.float32)


def write_dataset(root: Path, clips=(("a", 40, "train"), ("b", 33, "train"), ("v", 25, "val"))) -> tuple[Path, Path]:
    """audio.wav, mel.npy, labels.parquet and latents (a fixed function of each frame's loudness) per clip."""
    data, lat = root / "data", root / "latents"
    (lat / "latents").mkdir(parents=True)
    proj = np.random.default_rng(9).normal(size=(1, LATENT_DIM)).astype(np.float32)
    rows, all_z = [], []
    for k, (cid, n, split) in enumerate(clips):
        d = data / "clips" / cid
        d.mkdir(parents=True)
        wav = _audio(n, k)
        sf.write(d / "audio.wav", wav, 16000, subtype="PCM_16")
        np.save(d / "mel.npy", log_mel(wav))  # preprocess writes both
        loud = np.sqrt((wav.reshape(n, 640) ** 2).mean(1, keepdims=True))  # (n, 1)
        z = (loud * 10 @ proj + 1.0).astype(np.float32)
        np.save(lat / "latents" / f"{cid}.npy", z)
        pd.DataFrame({"frame": np.arange(n), "yaw": np.sin(np.arange(n) / 5.0), "pitch": 0.0 * np.arange(n),
                      "roll": 0.0 * np.arange(n), "face_found": np.ones(n, bool)}).to_parquet(d / "labels.parquet")
        rows.append({"clip_id": cid, "n_frames": n, "split": split})
        all_z += [z] if split == "train" else []
    pd.DataFrame(rows).to_parquet(data / "manifest.parquet")
    allz = np.concatenate(all_z)
    np.savez(lat / "latent_stats.npz", mean=allz.mean(0), std=allz.std(0) + 1e-3, count=len(allz))
    return data, lat


def _cfg(*extra: str):
    return load_config("tiny", None, [*TEST_OVERRIDES, *TINY_S2L, *extra])


def test_train_bundle_and_generate_on_whisper_features(tmp_path: Path) -> None:
    data, lat = write_dataset(tmp_path)
    logger = MemoryLogger()
    run = tmp_path / "run"
    result = train_s2l(data, lat, run, _cfg("s2l.max_steps=8"), logger=logger, device="cpu")

    # features: 2 rows of 384 per video frame, from audio.wav, cached beside the run (not in the data folder)
    cached = {p.stem: np.load(p) for p in (run / "features" / "whisper-tiny").glob("*.npy")}
    assert {c: f.shape for c, f in cached.items()} == {"a": (80, 384), "b": (66, 384), "v": (50, 384)}
    assert not list(data.rglob("*whisper*"))
    key = json.loads((run / "features" / "whisper-tiny" / "a.json").read_text())
    assert key["extractor"].startswith("whisper-tiny:1a5afae06a4d")
    losses = [v for _, v in logger.metrics["latent_mse"]]
    assert len(losses) == 8 and np.isfinite(losses).all()
    assert np.isfinite([v for _, v in logger.metrics["val_loss"]]).all()
    model, scfg, dims = load_s2l(result.checkpoint)
    assert scfg.features == "whisper-tiny"
    assert dims == {"feature_dim": 384, "frames_per_video_frame": 2, "latent_dim": LATENT_DIM}
    assert abs(float(model.feature_mean.mean()) - cached["a"].mean()) < 0.5  # stats of whisper features, not mel

    # resuming reuses the cache; a resume with other features is refused
    mtime = (run / "features" / "whisper-tiny" / "a.npy").stat().st_mtime_ns
    train_s2l(data, lat, run, _cfg("s2l.max_steps=9"), resume=True, device="cpu")
    assert (run / "features" / "whisper-tiny" / "a.npy").stat().st_mtime_ns == mtime
    with pytest.raises(CheckpointError, match="features"):
        train_s2l(data, lat, run, _cfg("s2l.max_steps=10", "s2l.features=log_mel"), resume=True, device="cpu")

    # a bundle records the features (and the weights' hash); generation computes them from the input audio
    dae = make_test_bundle(tmp_path / "random") / "dae.pt"
    bundle = bundle_from_training(dae, result.checkpoint, lat, tmp_path / "bundle")
    meta = read_manifest(bundle).meta
    assert meta["speech_features"] == "whisper-tiny" and meta["speech_features_asset"] == "whisper_tiny_en_ct2.bin"
    assert meta["speech_features_sha256"].startswith("1a5afae06a4d")
    sf.write(tmp_path / "in.wav", _audio(30, 3), 16000)
    out = generate_video(bundle, tmp_path / "in.wav", tmp_path / "o.mp4", steps=2, progress=False)
    assert out.n_frames == 30 and out.path.stat().st_size > 0


def test_bundle_whose_record_disagrees_with_its_config_is_refused(tmp_path: Path) -> None:
    bundle = make_test_bundle(tmp_path / "b", overrides=(*TEST_OVERRIDES, "s2l.features=whisper-tiny"))
    assert read_manifest(bundle).meta["speech_features"] == "whisper-tiny"
    talker = load_talker(bundle, torch.device("cpu"))
    assert talker.s2l.k == 2 and talker.s2l.feature_mean.shape == (384,)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["meta"]["speech_features"] = "log_mel"
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="speech features 'log_mel'"):
        load_talker(bundle, torch.device("cpu"))
