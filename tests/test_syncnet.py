"""SyncNet experts: the official architecture's state dict, checkpoints, and a calibration run.

The calibration trains a light SyncNet on a fake speaker whose "mouth" (a dark
bar in the lower half of the crop) opens with the loudness of the audio, then
checks that LSE ranks sync the right way on held-out clips and that the AV
offset finds known shifts (sign convention: audio advanced by k frames -> +k).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from margins import record, train_seed

from daetalker.config.syncnet import SyncNetConfig
from daetalker.errors import CheckpointError, DaetalkerError
from daetalker.evaluate.lse import audio_embeddings, lip_embeddings, lse, lse_from_embeddings
from daetalker.evaluate.syncnet import (
    LightSyncNet,
    OfficialSyncNet,
    lip_windows,
    load_syncnet,
    mfcc_windows,
)
from daetalker.evaluate.syncnet_train import REPORT, train_syncnet
from daetalker.checkpoint import file_sha256
from daetalker.train.loop import MemoryLogger

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost


# ------------------------------------------------------------ fake speaker
def fake_speech(rng: np.random.Generator, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mouth opening in [0, 1] and 16 kHz audio whose loudness follows it."""
    syllables = (rng.random(n_frames) < 0.5) * rng.uniform(0.4, 1.0, n_frames)
    opening = np.convolve(syllables, [0.25, 0.5, 0.25], mode="same")
    t = np.arange(n_frames * 640) / 16000
    envelope = np.interp(t * 25 - 0.5, np.arange(n_frames), opening)
    f0 = rng.uniform(120, 220)
    voice = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5))
    audio = 0.5 * envelope * voice + 0.003 * rng.standard_normal(t.size)
    return opening, np.clip(audio, -1, 1)


def fake_frames(rng: np.random.Generator, opening: np.ndarray, res: int) -> np.ndarray:
    """uint8 (N, res, res, 3): noisy skin, a dark bar at 3/4 height whose height follows the opening."""
    frames = np.empty((len(opening), res, res, 3), np.uint8)
    skin = rng.uniform(120, 200)
    for i, o in enumerate(opening):
        img = skin + 6 * rng.standard_normal((res, res, 3))
        cy, h = int(0.75 * res) + rng.integers(-1, 2), 1 + o * res / 5
        img[int(cy - h / 2):int(np.ceil(cy + h / 2)), res // 4:3 * res // 4] = 40
        frames[i] = np.clip(img, 0, 255)
    return frames


def write_fake_dataset(root: Path, n_train: int = 6, n_val: int = 3, n_frames: int = 150, res: int = 32,
                       seed: int = 0) -> Path:
    """The preprocess layout: manifest.parquet + clips/<id>/{frames.npy, audio.wav, landmarks.npy}."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_train + n_val):
        cid = f"clip{k:03d}"
        d = root / "clips" / cid
        d.mkdir(parents=True)
        opening, audio = fake_speech(rng, n_frames)
        np.save(d / "frames.npy", fake_frames(rng, opening, res))
        sf.write(d / "audio.wav", audio, 16000, subtype="PCM_16")
        np.save(d / "landmarks.npy", np.zeros((n_frames, 468, 3), np.float32))
        rows.append({"clip_id": cid, "n_frames": n_frames, "split": "train" if k < n_train else "val",
                     "resolution": res})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


TINY = dict(lip_height=8, lip_width=16, lip_channels=(16, 32, 32), audio_channels=(16, 32, 32), embed_dim=64,
            lr=1e-3, batch_size=64, log_every=50, eval_every=0, eval_pairs_per_clip=32, mlflow=False)


# ------------------------------------------------------------- official
def test_official_architecture_matches_syncnet_python() -> None:
    """Names and shapes of SyncNetModel.S (joonson/syncnet_python), so syncnet_v2.model loads."""
    sd = OfficialSyncNet().state_dict()
    expected = {
        "netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.4.weight": (192, 64, 3, 3),
        "netcnnaud.8.weight": (384, 192, 3, 3), "netcnnaud.11.weight": (256, 384, 3, 3),
        "netcnnaud.14.weight": (256, 256, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
        "netcnnaud.19.running_var": (512,),
        "netfcaud.0.weight": (512, 512), "netfcaud.1.running_mean": (512,), "netfcaud.3.weight": (1024, 512),
        "netfclip.0.weight": (512, 512), "netfclip.3.bias": (1024,),
        "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
        "netcnnlip.8.weight": (256, 256, 1, 3, 3), "netcnnlip.11.weight": (256, 256, 1, 3, 3),
        "netcnnlip.14.weight": (256, 256, 1, 3, 3), "netcnnlip.18.weight": (512, 256, 1, 6, 6),
        "netcnnlip.19.bias": (512,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert {k.split(".")[0] for k in sd} == {"netcnnaud", "netfcaud", "netfclip", "netcnnlip"}
    assert len(sd) == 102  # 14 BatchNorms x 5 tensors + 12 convs x 2 + 4 linears x 2
    m = OfficialSyncNet().eval()
    with torch.no_grad():
        assert m.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert m.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_official_input_is_bgr_224_in_0_255() -> None:
    frames = np.zeros((6, 64, 64, 3), np.uint8)
    frames[..., 0] = 200  # red
    x = OfficialSyncNet().prepare_frames(frames)
    assert x.shape == (6, 3, 224, 224)
    assert float(x[:, 2].min()) == 200.0 and float(x[:, :2].abs().max()) == 0.0  # red is channel 2 in BGR


def test_load_official_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = {k: v for k, v in OfficialSyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "syncnet_v2.model"  # saved as torch<1.0 did: no num_batches_tracked
    torch.save(sd, path)
    model = load_syncnet(path)
    assert isinstance(model, OfficialSyncNet) and not model.training
    assert model.weights_sha256 == file_sha256(path)[0]
    assert torch.equal(model.state_dict()["netcnnlip.0.weight"], sd["netcnnlip.0.weight"])
    sd.pop("netfclip.3.bias")
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="netfclip.3.bias"):
        load_syncnet(path)
    torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="neither"):
        load_syncnet(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_syncnet(tmp_path / "missing.model")


# ---------------------------------------------------------------- light
def test_light_windows_and_embeddings() -> None:
    model = LightSyncNet(lip_size=(16, 32), lip_channels=(8, 16), audio_channels=(8, 16), embed_dim=12).eval()
    frames = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    prepared = model.prepare_frames(frames)
    assert prepared.shape == (12, 3, 16, 32) and float(prepared.abs().max()) <= 1.0
    # lower half only: changing the top half leaves the lip view unchanged
    changed = frames.copy()
    changed[:, :16] = 0
    assert torch.equal(model.prepare_frames(changed), prepared)
    w = lip_windows(prepared, 3, 4)
    assert w.shape == (4, 3, 5, 16, 32) and torch.equal(w[2, :, 4], prepared[3 + 2 + 4])
    mfcc = torch.arange(13 * 47, dtype=torch.float32).reshape(13, 47)  # 12 frames -> 47 steps
    a = mfcc_windows(mfcc, 0, 7)
    assert a.shape == (7, 1, 13, 20) and torch.equal(a[6, 0], mfcc[:, 24:44])
    with torch.no_grad():
        e = model.forward_lip(w)
        assert e.shape == (4, 12) and torch.allclose(e.norm(dim=1), torch.ones(4))
        assert model.forward_aud(a).shape == (7, 12) and float(model.forward_aud(a).min()) >= 0.0


def test_bf16_training_probability_stays_fp32_inside_the_bce_range() -> None:
    """syncnet.bf16: the two streams run under autocast, the cosine in fp32, so p never rounds to 1
    (bf16 holds 1 - 1e-6 as 1.0 and the BCE of an off-sync pair would be inf) and stays near fp32's."""
    from daetalker.evaluate.syncnet_train import sync_probability

    torch.manual_seed(0)
    model = LightSyncNet(lip_size=(16, 32), lip_channels=(8, 16), audio_channels=(8, 16), embed_dim=12)
    lip, aud = torch.randn(8, 3, 5, 16, 32), torch.randn(8, 1, 13, 20)
    p = sync_probability(model, lip, aud, bf16=True)
    assert p.dtype == torch.float32 and float(p.max()) <= 1 - 1e-6 and float(p.min()) >= 1e-6
    torch.testing.assert_close(p, sync_probability(model, lip, aud), atol=0.05, rtol=0)
    loss = torch.nn.functional.binary_cross_entropy(p, torch.zeros(8))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(w.grad).all() for w in model.parameters() if w.grad is not None)


def test_train_refuses_dataset_without_heldout(tmp_path: Path) -> None:
    data = write_fake_dataset(tmp_path / "data", n_train=2, n_val=0, n_frames=30)
    with pytest.raises(DaetalkerError, match="val or test"):
        train_syncnet(data, tmp_path / "out", SyncNetConfig(**TINY, max_steps=1))


# ------------------------------------------------------------ calibration
STEPS = 400


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("syncnet")
    data = write_fake_dataset(root / "data")
    logger = MemoryLogger()
    result = train_syncnet(data, root / "out", SyncNetConfig(**TINY, max_steps=STEPS, seed=train_seed()), logger=logger)
    return data, result, logger


def clip(data: Path, cid: str) -> tuple[np.ndarray, np.ndarray]:
    frames = np.load(data / "clips" / cid / "frames.npy", mmap_mode="r")
    audio, _ = sf.read(data / "clips" / cid / "audio.wav", dtype="float32")
    return frames, audio


def advance(audio: np.ndarray, k: int) -> np.ndarray:
    """Audio k frames ahead of the video (k < 0: behind), as in a mis-muxed file: the gap is room tone."""
    floor = 0.003 * np.random.default_rng(k + 100).standard_normal(640 * abs(k)).astype(audio.dtype)
    if k >= 0:
        return np.concatenate([audio[640 * k:], floor])
    return np.concatenate([floor, audio[:640 * k]])


@pytest.mark.slow
def test_training_writes_verified_checkpoint_and_report(trained) -> None:
    data, result, logger = trained
    report = json.loads(result.report.read_text())
    assert result.report.name == REPORT and report["sha256"] == result.sha256
    assert file_sha256(result.checkpoint)[0] == result.sha256
    assert report["steps"] == STEPS and report["train_clips"] == 6 and report["train_windows"] == 6 * 145
    val = report["heldout"]["val"]
    record("syncnet_fake_accuracy", train_seed(), val_accuracy=val["accuracy"],
           p_sync_gap=val["p_sync_in_sync"] - val["p_sync_off_sync"])
    assert val["clips"] == 3 and val["accuracy"] > 0.65 and val["p_sync_in_sync"] > val["p_sync_off_sync"]
    losses = [v for _, v in logger.metrics["syncnet/loss"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    model = load_syncnet(result.checkpoint)
    assert isinstance(model, LightSyncNet) and model.weights_sha256 == result.sha256
    assert float(model.mfcc_std.min()) > 0.0 and float(model.mfcc_mean[0]) > 5.0  # stats of int16-scale audio
    # a torn checkpoint is refused, not scored with
    torn = result.checkpoint.with_name("torn.pt")
    torn.write_bytes(result.checkpoint.read_bytes()[:-100])
    torn.with_name("torn.pt.sha256").write_text(result.checkpoint.with_name("latest.pt.sha256").read_text())
    with pytest.raises(CheckpointError, match="torn"):
        load_syncnet(torn)


@pytest.mark.slow
def _calibration_figures(data: Path, model, val: list[str]) -> dict[str, float]:
    """The worst clip's distance from each bar of the calibration test (for bench/stability.py)."""
    out: dict[str, float] = {"own_offset_err": 0, "shift_offset_err": 0, "other_d_gap": 9, "c0_share": 0}
    for n, cid in enumerate(val):
        frames, audio = clip(data, cid)
        own = lse(frames, audio, model)
        lip_emb = lip_embeddings(model, frames, own.n_windows)
        other = lse(lip_emb, clip(data, val[(n + 1) % 3])[1], model)
        shifted = lse(lip_emb, advance(audio, 10), model)
        out["own_offset_err"] = max(out["own_offset_err"], abs(own.offset))  # bar: <= 1
        out["shift_offset_err"] = max(out["shift_offset_err"], abs(shifted.offset - 10))  # bar: <= 1
        out["other_d_gap"] = min(out["other_d_gap"], other.lse_d - own.lse_d)  # bar: > 0
        out["c0_share"] = max(out["c0_share"], shifted.lse_c0 / own.lse_c0)  # bar: < 0.5
    return out


def test_lse_calibration_on_heldout_clips(trained) -> None:
    """Own audio beats another clip's on both scores; shifts are found with the documented sign.

    A shift within +-vshift is what the AV offset reports: LSE-D takes the best offset,
    so shifted audio loses only the windows whose partners fall in the protocol's zero
    padding (D_shift - D_own = sum over those 10 windows of (||lip|| - d_match) / W),
    and LSE-C (a median over a window of offsets moved by 10) carries no reliable sign;
    read at offset 0 (``lse_d0`` / ``lse_c0``) the shift shows plainly.
    """
    data, result, _ = trained
    model = load_syncnet(result.checkpoint)
    val = ["clip006", "clip007", "clip008"]
    figures = _calibration_figures(data, model, val)
    record("syncnet_fake_calibration", train_seed(), **figures)
    for n, cid in enumerate(val):
        frames, audio = clip(data, cid)
        own = lse(frames, audio, model)
        assert own.weights_sha256 == result.sha256 and own.n_windows == 145
        assert abs(own.offset) <= 1, (cid, own.offset)
        np.testing.assert_array_equal(lse(frames, audio, model).dists, own.dists)  # deterministic in eval mode
        lip_emb = lip_embeddings(model, frames, own.n_windows)
        other = lse(lip_emb, clip(data, val[(n + 1) % 3])[1], model)
        assert own.lse_d < other.lse_d and own.lse_c > other.lse_c, (cid, own, other)
        shifted = lse(lip_emb, advance(audio, 10), model)
        assert abs(shifted.offset - 10) <= 1, (cid, shifted.offset)
        assert own.lse_d < shifted.lse_d, (cid, own.lse_d, shifted.lse_d)
        # read at offset 0, the shifted audio is far out of sync
        assert shifted.lse_d0 - own.lse_d0 > 5 * (shifted.lse_d - own.lse_d) > 0
        assert shifted.lse_c0 < own.lse_c0 / 2
        for k in range(-5, 6):
            assert abs(lse(lip_emb, advance(audio, k), model).offset - k) <= 1, (cid, k)


def test_lse_from_embeddings_agrees_with_lse_on_a_model(tmp_path: Path) -> None:
    """The windowed path and the pure function meet: same embeddings, same numbers."""
    data = write_fake_dataset(tmp_path / "data", n_train=1, n_val=0, n_frames=20)
    frames, audio = clip(data, "clip000")
    model = LightSyncNet(lip_size=(8, 16), lip_channels=(8,), audio_channels=(8,), embed_dim=8).eval()
    r = lse(frames, audio, model, vshift=3)
    pure = lse_from_embeddings(lip_embeddings(model, frames, 15), audio_embeddings(model, audio, 15), vshift=3)
    np.testing.assert_allclose(r.dists, pure.dists, rtol=1e-6)
    assert r.n_windows == 15 and r.weights_sha256 == "untrained"


# -------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_train_syncnet(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from daetalker.cli import app

    data = write_fake_dataset(tmp_path / "data", n_train=2, n_val=1, n_frames=40)
    overrides = ["syncnet.max_steps=3", "syncnet.batch_size=4", "syncnet.lip_height=16", "syncnet.lip_width=32",
                 "syncnet.lip_channels=[8]", "syncnet.audio_channels=[8]", "syncnet.embed_dim=8",
                 "syncnet.eval_pairs_per_clip=4"]
    args = ["train-syncnet", "--data", str(data), "--out", str(tmp_path / "out"), "--profile", "tiny", "--no-mlflow"]
    for o in overrides:
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["sha256"] == file_sha256(tmp_path / "out" / "latest.pt")[0] and out["steps"] == 3
    assert (tmp_path / "out" / REPORT).is_file()
