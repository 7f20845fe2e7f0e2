"""DAE training infrastructure: data, sampler, checkpoints, EMA, bit-exact resume, DDP, latent extraction.

Everything runs a micro model on 16x16 fake frames so that the end-to-end tests
(SIGKILL + resume, torchrun with 2 processes) take seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from daetalker import checkpoint as ckpt_io
from daetalker.config import load_config
from daetalker.errors import CheckpointError, DaetalkerError
from daetalker.train.ema import EMA
from daetalker.train.frames_dataset import FramesDataset
from daetalker.train.sampler import ResumableShardedSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost

MICRO = [
    "dae.space=pixel", "dae.image_size=16", "dae.base_channels=8", "dae.channel_mult=[1,2]",
    "dae.enc_channel_mult=[1,2]", "dae.num_res_blocks=1", "dae.enc_num_res_blocks=1", "dae.attn_resolutions=[8]",
    "dae.embed_dim=32", "dae.latent_dim=16", "dae.dropout=0.1", "dae.batch_size=8", "dae.max_steps=24", "dae.ckpt_every=4",
    "dae.log_every=1", "dae.sample_every=0", "dae.sample_steps=3", "dae.sample_count=2", "dae.num_workers=0",
    "dae.bf16=false", "dae.channels_last=false", "dae.lr=1e-3", "dae.warmup_steps=3", "dae.ema_decay=0.9",
    "dae.latent_norm=true", "dae.latent_calib_frames=16", "dae.min_snr_gamma=5", "dae.lr_decay_steps=24",
]
CLI = str(Path(sys.executable).with_name("daetalker"))
ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "OMP_NUM_THREADS": "1"}



def write_fake_dataset(root: Path, res: int = 16, clips=(("a", 20, "train"), ("b", 20, "train"), ("c", 12, "val")),
                       landmarks: bool = True):
    """A dataset in preprocess's layout: a bright disc that moves and changes size, per-frame truth;
    the "lips" landmarks box the disc (the tiny profile weights the loss there)."""
    from daetalker.face.mesh import MOUTH

    rows = []
    yy, xx = np.mgrid[0:res, 0:res]
    for k, (cid, n, split) in enumerate(clips):
        phase = np.arange(n) / 3.0 + k
        cx, r = res / 2 + res / 5 * np.sin(phase), res / 6 + res / 10 * (1 + np.cos(1.7 * phase)) / 2
        disc = ((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - res / 2) ** 2) < r[:, None, None] ** 2
        frames = np.stack([40 + 180 * disc, 60 + 100 * disc, np.full_like(disc, 90, dtype=np.int64)], -1)
        d = root / "clips" / cid
        d.mkdir(parents=True)
        np.save(d / "frames.npy", frames.astype(np.uint8))
        if landmarks:
            marks = np.zeros((n, 468, 3), np.float32)
            marks[:, :, 0], marks[:, :, 1] = cx[:, None], res / 2
            marks[:, MOUTH[0], :2] = np.stack([cx - r, np.full(n, res / 2) - r], 1)
            marks[:, MOUTH[1], :2] = np.stack([cx + r, np.full(n, res / 2) + r], 1)
            np.save(d / "landmarks.npy", marks)
        pd.DataFrame({"frame": np.arange(n), "yaw": cx, "mouth_open": r}).to_parquet(d / "ground_truth.parquet")
        rows.append({"clip_id": cid, "n_frames": n, "split": split, "resolution": res, "has_ground_truth": True})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_fake_dataset(tmp_path_factory.mktemp("data"))


def train_cli(data: Path, out: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    cmd = [CLI, "train-dae", "--data", str(data), "--out", str(out), "--no-mlflow", "--device", "cpu"]
    for s in [*MICRO, *extra]:
        cmd += ["--set", s]
    if resume:
        cmd.append("--resume")
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def read_metrics(run: Path) -> dict[int, dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    return {m["step"]: m for m in lines if "loss" in m}


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory) -> Path:
    """An uninterrupted run of the micro config (the baseline of the resume test)."""
    out = tmp_path_factory.mktemp("ref")
    finish(train_cli(data_dir, out))
    return out


# ----------------------------------------------------------------- data
def test_frames_dataset_reads_split_range_and_resizes(data_dir):
    train = FramesDataset(data_dir, splits=("train",))
    assert len(train) == 40 and train.locate(25) == (1, 5)
    x = train[25]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    raw = np.load(data_dir / "clips" / "b" / "frames.npy")[5]
    assert torch.allclose(x, torch.from_numpy(raw).permute(2, 0, 1).float() / 127.5 - 1)
    assert len(FramesDataset(data_dir, splits=("val",))) == 12
    assert FramesDataset(data_dir, splits=None, image_size=8)[0].shape == (3, 8, 8)
    with pytest.raises(DaetalkerError, match="no frames"):
        FramesDataset(data_dir, splits=("test",))
    with pytest.raises(IndexError):
        train[40]


def test_sampler_is_deterministic_resumable_and_shards_the_global_batch():
    full = ResumableShardedSampler(10, seed=3)
    stream = [i for i, _ in zip(full, range(35))]
    assert sorted(stream[:10]) == list(range(10)) and stream[:10] != stream[10:20]  # new order each epoch
    # resuming at sample 17 continues the same stream
    assert [i for i, _ in zip(ResumableShardedSampler(10, seed=3, start=17), range(18))] == stream[17:35]
    # two ranks with per-rank batch 2 see exactly the single-process batch of 4 each step
    ranks = [iter(ResumableShardedSampler(10, rank=r, world_size=2, seed=3)) for r in range(2)]
    for step in range(2):
        union = sorted(next(it) for it in ranks for _ in range(2))
        assert union == sorted(stream[4 * step : 4 * step + 4])


# ----------------------------------------------------------------- checkpoints
def test_checkpoint_is_atomic_verified_and_torn_files_are_skipped(tmp_path):
    (tmp_path / ".step_00000001.pt.abc.tmp").write_bytes(b"half a write from a killed run")
    for step in (1, 2, 3, 4):
        ckpt_io.save_checkpoint({"step": step, "w": torch.full((1000,), float(step))}, tmp_path, step, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "latest.pt", "latest.pt.sha256", "step_00000003.pt", "step_00000003.pt.sha256",
        "step_00000004.pt", "step_00000004.pt.sha256",
    ]  # pruned to 2, no temp files left
    assert ckpt_io.load_checkpoint(tmp_path / "latest.pt")["step"] == 4

    newest = tmp_path / "step_00000004.pt"
    with open(newest, "r+b") as f:  # tear it: lose the tail
        f.truncate(newest.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="torn"):
        ckpt_io.load_checkpoint(newest)
    path, state = ckpt_io.load_latest(tmp_path)
    assert path.name == "step_00000003.pt" and torch.equal(state["w"], torch.full((1000,), 3.0))

    # same length, flipped byte: caught by the hash
    data = bytearray((tmp_path / "step_00000003.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "step_00000003.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        ckpt_io.load_checkpoint(tmp_path / "step_00000003.pt")
    assert ckpt_io.load_latest(tmp_path) is None

    # a file whose sidecar never got written (killed between the two renames) is not trusted
    torch.save({"step": 9}, tmp_path / "step_00000009.pt")
    with pytest.raises(CheckpointError, match="never finished"):
        ckpt_io.load_checkpoint(tmp_path / "step_00000009.pt")


def test_checkpoint_refuses_pickled_objects(tmp_path):
    ckpt_io.save_checkpoint({"obj": Path("x")}, tmp_path, 1)  # saving works, loading must not unpickle it
    with pytest.raises(CheckpointError, match="not a loadable"):
        ckpt_io.load_checkpoint(tmp_path / "latest.pt")


def test_ema_update_rule():
    live = torch.nn.Linear(2, 1)
    ema = EMA(live, decay=0.9)
    start = live.weight.detach().clone()
    with torch.no_grad():
        live.weight.add_(1.0)
    ema.update(live)
    assert torch.allclose(ema.model.weight, start + 0.1)
    live.register_buffer("stat", torch.zeros(1))
    keep = EMA(live, decay=0.9, copy_buffers=False)
    live.stat.fill_(5.0)
    keep.update(live)
    assert keep.model.stat.item() == 0.0  # the EMA model's own buffers (e.g. calibrated latent stats)
    warm = EMA(live, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    warm.num_updates = 10_000
    assert warm.current_decay() == pytest.approx(0.999)


def test_lr_schedule_warms_up_then_decays_to_zero():
    from daetalker.train.loop import scheduled_lr

    lrs = [scheduled_lr(s, 1.0, 2, 10) for s in range(11)]
    assert lrs[:3] == [0.5, 1.0, 1.0] and lrs[10] == 0.0
    assert all(a > b for a, b in zip(lrs[2:10], lrs[3:10]))  # monotone cosine decay
    assert lrs[6] == pytest.approx(0.5)  # half way through the decay
    assert [scheduled_lr(s, 1.0, 0) for s in (0, 99)] == [1.0, 1.0]  # the paper: constant


def test_mouth_boxes_come_from_the_lip_landmarks(tmp_path):
    from daetalker.errors import DaetalkerError
    from daetalker.face.mesh import MOUTH
    from daetalker.train.frames_dataset import mouth_box

    data = write_fake_dataset(tmp_path, res=16, clips=(("a", 4, "train"),), landmarks=False)
    with pytest.raises(DaetalkerError, match="landmarks.npy"):  # names the file and the fix
        FramesDataset(data, mouth_boxes=True)
    marks = np.zeros((4, 468, 3), np.float32)
    marks[:, :, :2] = 8.0  # every other landmark at the centre
    marks[:, MOUTH[0], :2] = [4.0, 10.0]  # lips span x 4..12, y 10..12 (crop px at 16)
    marks[:, MOUTH[1], :2] = [12.0, 12.0]
    marks[:, MOUTH[2:], :2] = [8.0, 11.0]
    np.save(data / "clips" / "a" / "landmarks.npy", marks)
    x, box = FramesDataset(data, mouth_boxes=True, image_size=8)[2]
    assert x.shape == (3, 8, 8)  # boxes are fractions of the crop, so resizing keeps them
    # (x0, y0, x1, y1) = (4, 10, 12, 12) / 16, grown by a quarter of the size on each side
    np.testing.assert_allclose(box.numpy(), [0.125, 0.59375, 0.875, 0.78125], atol=1e-6)
    assert np.all(mouth_box(np.full((468, 3), 20.0), 16) <= 1.0)  # clipped to the crop


# ----------------------------------------------------------------- end to end
@pytest.mark.slow
def test_training_writes_its_outputs_and_loss_falls(data_dir, reference_run):
    from daetalker.diffusion import eps_loss, linear_schedule, q_sample
    from daetalker.models.loading import dae_config_from_checkpoint
    from daetalker.models import DiffusionAutoencoder

    m = read_metrics(reference_run)
    assert sorted(m) == list(range(1, 25))
    # the trained weights denoise a fixed batch better than the zero-output initial model (loss 1)
    state = torch.load(reference_run / "checkpoints" / "latest.pt", weights_only=True)
    model = DiffusionAutoencoder.from_config(dae_config_from_checkpoint(state))
    model.load_state_dict(state["model"])
    g = torch.Generator().manual_seed(0)
    x0 = torch.stack([FramesDataset(data_dir, splits=("train",))[i] for i in range(0, 40, 5)])
    t = torch.linspace(50, 950, 8).long()
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        x_t = q_sample(linear_schedule(), x0, t, noise)
        trained = eps_loss(model.eps(x_t, t, model.encode(x0)), noise).item()  # eps whatever the UNet predicts
    assert trained < 0.92 * noise.pow(2).mean().item(), trained  # measured 0.87 after 24 micro steps
    assert (reference_run / "samples" / "step_00000024.png").is_file()
    result = json.loads((reference_run / "result.json").read_text())
    assert result["final_step"] == 24 and result["metrics"]["images_per_s"] > 0
    ckpts = sorted(p.name for p in (reference_run / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000016.pt", "step_00000020.pt", "step_00000024.pt"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(data_dir, reference_run, tmp_path):
    kill_at = random.Random().randrange(5, 21)  # a random step, checkpoints every 4
    proc = train_cli(data_dir, tmp_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        m = tmp_path / "metrics.jsonl"
        if m.is_file() and len(m.read_text().splitlines()) >= kill_at:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"training ended before the kill at step {kill_at}"

    # tear the newest checkpoint as well: resume must skip it and fall back to the one before
    newest = ckpt_io.checkpoint_candidates(tmp_path / "checkpoints")
    if newest:
        with open(newest[0], "r+b") as f:
            f.truncate(100)
    finish(train_cli(data_dir, tmp_path, resume=True))

    ref = torch.load(reference_run / "checkpoints" / "latest.pt", weights_only=True)
    got = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert got["step"] == ref["step"] == 24
    for part in ("model", "ema", "optimizer", "rng", "noise_rng"):
        flat_ref, flat_got = _flatten(ref[part]), _flatten(got[part])
        assert flat_ref.keys() == flat_got.keys()
        for k in flat_ref:
            a, b = flat_ref[k], flat_got[k]
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b, f"{part}.{k} differs after a kill at {kill_at}"
    # the loss curve on disk is the uninterrupted one: one line per step, no duplicates from the killed run
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if x]
    assert [m["step"] for m in lines if "loss" in m] == list(range(1, 25))
    assert {s: m["loss"] for s, m in read_metrics(tmp_path).items()} == {
        s: m["loss"] for s, m in read_metrics(reference_run).items()
    }


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        return _flatten(dict(enumerate(obj)), prefix)
    return {prefix.rstrip("."): obj}


@pytest.mark.slow
def test_torchrun_two_processes_match_one(data_dir, tmp_path):
    """DDP (gloo) with a global batch of 8 over 2 ranks follows the single-process loss curve."""
    steps = ["dae.max_steps=10", "dae.dropout=0.0"]  # dropout masks would differ between the layouts
    single = tmp_path / "one"
    finish(train_cli(data_dir, single, *steps))
    ddp = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           CLI, "train-dae", "--data", str(data_dir), "--out", str(ddp), "--no-mlflow", "--device", "cpu"]
    for s in [*MICRO, *steps]:
        cmd += ["--set", s]
    finish(subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    a, b = read_metrics(single), read_metrics(ddp)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    # step 1: same weights, same global batch, same noise -> equal up to float summation order
    assert b[1]["loss"] == pytest.approx(a[1]["loss"], rel=1e-5)
    for s in a:  # later, Adam amplifies last-bit gradient differences a little (measured <= 8e-4)
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=5e-3), (s, a[s]["loss"], b[s]["loss"])
        assert b[s]["images_per_s"] > 0
    # one writer: a single set of checkpoints and one metrics line per step
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == 11  # 10 losses + final reconstruction


@pytest.mark.slow
def test_resume_refuses_a_different_architecture(data_dir, reference_run):
    from daetalker.train.dae_trainer import train_dae

    cfg = load_config("tiny", overrides=[*MICRO, "dae.base_channels=16", "dae.max_steps=30"])
    with pytest.raises(CheckpointError, match="base_channels"):
        train_dae(data_dir, reference_run, cfg, resume=True)
    with pytest.raises(CheckpointError, match="--resume"):
        train_dae(data_dir, reference_run, load_config("tiny", overrides=MICRO), resume=False)


@pytest.mark.slow
def test_extract_latents_layout_and_values(data_dir, reference_run, tmp_path):
    from daetalker.models.latent_stats import load_latent_stats, load_reference_frame
    from daetalker.models.loading import load_dae
    from daetalker.train.latents import extract_latents

    ckpt = reference_run / "checkpoints" / "latest.pt"
    out = extract_latents(data_dir, ckpt, tmp_path / "lat", batch_size=7)
    index = json.loads((out / "latents.json").read_text())
    assert index["checkpoint_sha256"] == ckpt_io.file_sha256(ckpt)[0] and index["latent_dim"] == 16
    assert [c["clip_id"] for c in index["clips"]] == ["a", "b", "c"]

    model, _ = load_dae(ckpt)
    lat = {c: np.load(out / "latents" / f"{c}.npy") for c in "abc"}
    assert lat["a"].shape == (20, 16) and lat["c"].shape == (12, 16) and lat["a"].dtype == np.float32
    # row i is frame i of the clip, encoded by the EMA encoder
    frames = FramesDataset(data_dir, splits=("val",))
    with torch.no_grad():
        direct = model.encode(torch.stack([frames[i] for i in (0, 11)])).numpy()
    # the latent norm divides by a small raw std, which magnifies batch-size-dependent fp32 rounding
    np.testing.assert_allclose(lat["c"][[0, 11]], direct, atol=1e-4)
    assert np.abs(lat["c"][0] - lat["c"][5]).max() > 1e-4  # frames differ, latents differ

    ema_w = torch.load(ckpt, weights_only=True)["ema"]["model"]["encoder.out_proj.weight"]
    assert torch.equal(model.encoder.out_proj.weight, ema_w)

    mean, std = load_latent_stats(out)
    train = np.concatenate([lat["a"], lat["b"]]).astype(np.float64)
    np.testing.assert_allclose(mean, train.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, train.std(0), rtol=1e-5)

    # the reference frame: the training frame whose normalised latent is nearest the mean, stored as is
    dist = {c: (((lat[c] - mean) / std) ** 2).sum(1) for c in "ab"}
    best = min(((d.min(), c, int(d.argmin())) for c, d in dist.items()))
    assert index["reference_frame"] == {"clip_id": best[1], "index": best[2]}
    stored = np.load(data_dir / "clips" / best[1] / "frames.npy")[best[2]]
    np.testing.assert_array_equal(load_reference_frame(out), stored)


@pytest.mark.slow
def test_mlflow_gets_metrics_grids_config_and_lineage(data_dir, tmp_path, monkeypatch):
    """The CLI path: tracking.start_run around train_dae logs loss, lr, images/s, grids and the config."""
    import mlflow

    from daetalker import tracking
    from daetalker.train.dae_trainer import train_dae
    from daetalker.train.loop import MlflowLogger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = load_config("tiny", overrides=[*MICRO, "dae.max_steps=2"])
    with tracking.start_run("dae-test", "train-dae", config=cfg) as run:
        train_dae(data_dir, tmp_path / "run", cfg, logger=MlflowLogger())
    client = mlflow.tracking.MlflowClient()
    got = client.get_run(run.info.run_id)
    assert {"loss", "lr", "images_per_s", "psnr_noise_decode", "psnr_inverted_decode"} <= set(got.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert got.data.params["dae.image_size"] == "16" and "git_commit" in got.data.tags
    assert any("reconstructions" in a.path for a in client.list_artifacts(run.info.run_id, "images"))
