"""The first-stage autoencoder's trainer (``train-autoencoder``, issue 16) on a tiny config and fake frames.

32 px frames of the moving disc of tests/test_dae_train.py, a two-level network
(8, 16 channels: a 16x16x4 grid), a few dozen steps: loss falls, every
checkpoint loads with ``load_first_stage`` and standardises the latents, a
crash + resume ends bitwise where an uninterrupted run ends, and the held-out
report scores a perfect and a noisy reconstruction as it should.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from daetalker import checkpoint as ckpt_io
from daetalker.config import load_config
from daetalker.errors import CheckpointError
from daetalker.train.frames_dataset import FramesDataset
from daetalker.train.loop import MemoryLogger
from test_dae_train import _flatten, write_fake_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost

TINY_AE = [
    "autoencoder.image_size=32", "autoencoder.channels=[8,16]", "autoencoder.batch_size=8",
    "autoencoder.max_steps=24", "autoencoder.lr_decay_steps=24", "autoencoder.warmup_steps=2",
    "autoencoder.ckpt_every=4", "autoencoder.log_every=1", "autoencoder.sample_every=12",
    "autoencoder.sample_count=2", "autoencoder.stats_frames=40", "autoencoder.eval_frames=6",
    "autoencoder.bf16=false", "autoencoder.num_workers=0", "autoencoder.mlflow=false",
]  # fmt: skip
CLIPS = (("a", 20, "train"), ("b", 20, "train"), ("c", 12, "val"))  # 40 training frames


def tiny_config(*extra: str):
    return load_config("tiny", overrides=[*TINY_AE, *extra])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_fake_dataset(tmp_path_factory.mktemp("data"), res=32, clips=CLIPS)


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny config (the baseline of the resume test)."""
    from daetalker.train.autoencoder_trainer import train_autoencoder

    out = tmp_path_factory.mktemp("ref")
    train_autoencoder(data_dir, out, tiny_config(), device="cpu")
    return out


def losses(run: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    return {m["step"]: m["loss"] for m in lines if "loss" in m}


# ------------------------------------------------------------------ the loss
def test_the_loss_weights_the_mouth_box_and_sees_edges():
    from daetalker.diffusion import box_weights
    from daetalker.train.autoencoder_trainer import reconstruction_loss

    x = torch.zeros(1, 3, 8, 8)
    shifted = x.clone()
    shifted[..., 2:6, 2:6] = 0.5  # a square: an L1 error inside, edges in both gradient maps
    loss, l1, grad = reconstruction_loss(shifted, x, None, 1.0)
    assert l1.item() == pytest.approx(0.5 * 16 / 64)
    assert grad.item() == pytest.approx(2 * 0.5 * 8 / 56)  # 8 edge differences of 0.5 per map, 8x7 each
    assert loss.item() == pytest.approx(l1.item() + grad.item())
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]])  # the square itself, weight 1 + 3
    _, l1_w, _ = reconstruction_loss(shifted, x, box_weights(box, 8, 3.0), 0.0)
    assert l1_w.item() == pytest.approx(0.5 * 16 * 4 / (48 + 16 * 4))
    assert reconstruction_loss(x, x, None, 1.0)[0].item() == 0.0


# ------------------------------------------------------------------ training
def test_training_writes_its_outputs_and_loss_falls(reference_run):
    m = losses(reference_run)
    assert sorted(m) == list(range(1, 25))
    first, last = np.mean([m[s] for s in (1, 2, 3)]), np.mean([m[s] for s in (22, 23, 24)])
    assert last < 0.7 * first, (first, last)
    result = json.loads((reference_run / "result.json").read_text())
    assert result["final_step"] == 24 and result["metrics"]["images_per_s"] > 0
    assert {"psnr_samples", "latent_scale_0", "latent_shift_3"} <= set(result["metrics"])
    assert sorted(p.name for p in (reference_run / "samples").iterdir()) == ["step_00000012.png", "step_00000024.png"]
    assert sorted(p.name for p in (reference_run / "checkpoints").glob("step_*.pt")) == [
        "step_00000020.pt", "step_00000024.pt"]  # keep_checkpoints=2
    import cv2

    grid = cv2.imread(str(reference_run / "samples" / "step_00000024.png"))
    assert grid.shape == (2 * 32, 3 * 32, 3)  # two held-out frames: frame | reconstruction | error x4


def test_the_checkpoint_loads_and_its_latents_are_standardised(reference_run, data_dir):
    from daetalker.models.loading import load_first_stage

    path = reference_run / "checkpoints" / "latest.pt"
    model, acfg, sha = load_first_stage(path)
    assert sha == ckpt_io.verify(path)["sha256"] and (acfg.image_size, acfg.latent_size) == (32, 16)
    frames = torch.stack(list(FramesDataset(data_dir, splits=("train",), image_size=32)))  # the 40 stats frames
    with torch.no_grad():
        z = model.encode(frames)
        assert z.shape == (40, 4, 16, 16)
        assert model.decode(z[:3]).shape == (3, 3, 32, 32)
    per_channel = z.transpose(0, 1).flatten(1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(per_channel.std(1).numpy(), 1.0, atol=1e-4)
    # every checkpoint, not only the last, carries its own statistics
    state = ckpt_io.load_checkpoint(reference_run / "checkpoints" / "step_00000020.pt")
    assert not torch.equal(state["model"]["scale"], torch.ones(4))
    assert not torch.equal(state["model"]["scale"], model.scale)


class _Crash(Exception):
    pass


class CrashAt(MemoryLogger):
    """Raises when step ``at`` is logged: the run dies as a killed one would, between two checkpoints."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step == self.at and "loss" in metrics:
            raise _Crash(step)


def test_crash_then_resume_is_bitwise_identical(data_dir, reference_run, tmp_path):
    from daetalker.train.autoencoder_trainer import train_autoencoder

    crash_at = random.Random().randrange(5, 21)  # a random step, checkpoints every 4
    with pytest.raises(_Crash):
        train_autoencoder(data_dir, tmp_path, tiny_config(), logger=CrashAt(crash_at), device="cpu")
    newest = ckpt_io.checkpoint_candidates(tmp_path / "checkpoints")[0]
    with open(newest, "r+b") as f:  # torn as well: resume must fall back to the one before
        f.truncate(100)
    with pytest.raises(CheckpointError, match="--resume"):
        train_autoencoder(data_dir, tmp_path, tiny_config(), device="cpu")
    train_autoencoder(data_dir, tmp_path, tiny_config(), resume=True, device="cpu")

    ref = ckpt_io.load_checkpoint(reference_run / "checkpoints" / "latest.pt")
    got = ckpt_io.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert got["step"] == ref["step"] == 24
    for part in ("model", "optimizer", "rng"):
        flat_ref, flat_got = _flatten(ref[part]), _flatten(got[part])
        assert flat_ref.keys() == flat_got.keys()
        for k in flat_ref:
            a, b = flat_ref[k], flat_got[k]
            same = torch.equal(a, b) if torch.is_tensor(a) else a == b
            assert same, f"{part}.{k} differs after a crash at step {crash_at}"
    assert losses(tmp_path) == losses(reference_run)  # one line per step, the uninterrupted curve


def test_resume_refuses_a_different_architecture(data_dir, reference_run):
    from daetalker.train.autoencoder_trainer import train_autoencoder

    with pytest.raises(CheckpointError, match="channels"):
        train_autoencoder(data_dir, reference_run, tiny_config("autoencoder.channels=[8,8]"), resume=True)
    with pytest.raises(CheckpointError, match="batch_size"):
        train_autoencoder(data_dir, reference_run, tiny_config("autoencoder.batch_size=4"), resume=True)


# ------------------------------------------------------------------ the held-out report
class Reconstructs(torch.nn.Module):
    """A stand-in first stage: the frame itself, plus Gaussian noise of std ``noise``."""

    def __init__(self, noise: float) -> None:
        super().__init__()
        self.image_size, self.noise = 32, noise
        self.unused = torch.nn.Parameter(torch.zeros(1))  # where it runs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))


def test_the_report_scores_a_perfect_and_a_noisy_reconstruction(data_dir):
    from daetalker.evaluate.first_stage import PSNR_CAP, finite_metrics, score_first_stage

    perfect = score_first_stage(Reconstructs(0.0), data_dir, frames=4)
    assert (perfect["frames"], perfect["split"]) == (4, "held_out")
    assert perfect["psnr"] == PSNR_CAP and perfect["ssim"] == pytest.approx(1.0)
    noisy = score_first_stage(Reconstructs(0.1), data_dir, frames=4)
    assert 15 < noisy["psnr"] < 30 and noisy["ssim"] < 0.9  # std 0.1 of [-1, 1]: ~26 dB
    # the disc is no face: no mouth to correlate, and MLflow gets only the finite figures
    assert noisy["face_found_rate_real"] == 0.0 and math.isnan(noisy["mouth_pearson"])
    logged = finite_metrics(noisy)
    assert {"heldout_psnr", "heldout_ssim", "heldout_frames"} <= set(logged) and "heldout_mouth_pearson" not in logged


# ------------------------------------------------------------------ the command
CLI = str(Path(sys.executable).with_name("daetalker"))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_command_trains_and_refuses_bad_input(data_dir, tmp_path):
    (tmp_path / "notdata").mkdir()
    cases = [  # (args, words of the message)
        (["--data", str(data_dir), "--out", str(data_dir / "run")], ["is inside the input --data"]),
        (["--data", "notdata", "--out", "run"], ["notdata/manifest.parquet", "daetalker preprocess"]),
        (["--data", str(data_dir), "--out", "run", "--set", "autoencoder.channels=[2,4]"], ["channels"]),
        (["--data", str(data_dir), "--out", "run", "--set", "autoencoder.image_size=30"], ["divisible"]),
    ]
    for args, words in cases:
        r = run_cli("train-autoencoder", *args, "--no-mlflow", cwd=tmp_path)
        text = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2 and "Traceback" not in text, text[-2000:]
        assert all(w in text for w in words), (words, text[-2000:])
    assert not (tmp_path / "run").exists() and not (data_dir / "run").exists()

    sets = [a for s in [*TINY_AE, "autoencoder.max_steps=2"] for a in ("--set", s)]
    r = run_cli("train-autoencoder", "--data", str(data_dir), "--out", "run", "--no-mlflow", "--device", "cpu",
                *sets, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    checkpoint = tmp_path / out["checkpoint"]  # as --out was given: relative to where it ran
    assert out["final_step"] == 2 and checkpoint == tmp_path / "run" / "checkpoints" / "latest.pt"
    assert out["held_out"]["frames"] == 6 and out["sha256"] == ckpt_io.verify(checkpoint)["sha256"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["held_out"]["split"] == "held_out"
    # train-dae takes it as --autoencoder and checks it against its config
    r = run_cli("train-dae", "--data", str(data_dir), "--out", "dae", "--autoencoder", out["checkpoint"],
                "--no-mlflow", "--set", "dae.image_size=64", cwd=tmp_path)  # fmt: skip
    text = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in text and "--autoencoder run/checkpoints/latest.pt" in text, text
