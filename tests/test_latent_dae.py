"""The DAE in the first stage's latent space (issue 16): training, checkpoints, resume, extraction,
reconstruction and generation go through the frozen autoencoder; pixel-space behaviour is unchanged.

A micro autoencoder (32 px -> 16x16x4) and a micro UNet keep every test at a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from daetalker import checkpoint as ckpt_io
from daetalker.config import load_config
from daetalker.config.base import to_dict
from daetalker.errors import CheckpointError, ConfigError
from daetalker.models.device import autocast
from daetalker.models.first_stage import FirstStage
from daetalker.models.loading import load_dae
from daetalker.train.frames_dataset import FramesDataset
from test_dae_train import MICRO, write_fake_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LATENT = [*MICRO, "dae.space=latent", "dae.image_size=32", "dae.max_steps=8", "dae.ckpt_every=4",
          "dae.lr_decay_steps=8", "dae.dropout=0.0", "dae.bf16=true", "autoencoder.image_size=32",
          "autoencoder.channels=[8,16]"]  # bf16: CPUs with AVX512-BF16 train in it; resume stays bitwise


def save_first_stage(data: Path, out: Path, cfg, seed: int = 0) -> Path:
    """An (untrained) first stage with its latent statistics set, saved as train-autoencoder saves it."""
    torch.manual_seed(seed)
    fs = FirstStage.from_config(cfg.autoencoder)
    frames = torch.stack([FramesDataset(data, image_size=32)[i] for i in range(16)])
    fs.set_latent_statistics(fs.encode_raw(frames).detach())
    ckpt_io.save_checkpoint({"step": 0, "autoencoder_config": to_dict(cfg.autoencoder), "model": fs.state_dict()},
                            out, 0, keep=1)  # fmt: skip
    return out / ckpt_io.LATEST


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from daetalker.train.dae_trainer import train_dae

    root = tmp_path_factory.mktemp("latent")
    data = write_fake_dataset(root / "data", res=32)
    cfg = load_config("tiny", overrides=LATENT)
    ae = save_first_stage(data, root / "ae", cfg)
    result = train_dae(data, root / "dae", cfg, first_stage=ae, device="cpu")
    return data, cfg, ae, result


def test_first_stage_standardises_its_grid(setup):
    data, cfg, ae, _ = setup
    from daetalker.models.loading import load_first_stage

    fs, ae_cfg, sha = load_first_stage(ae)
    assert (fs.factor, fs.latent_size, fs.latent_channels) == (2, 16, 4) and sha == ckpt_io.verify(ae)["sha256"]
    frames = torch.stack([FramesDataset(data, image_size=32)[i] for i in range(16)])
    with torch.no_grad():
        lat = fs.encode(frames)  # (16, 4, 16, 16)
        assert lat.shape == (16, 4, 16, 16)
        per_channel = lat.transpose(0, 1).flatten(1)
        torch.testing.assert_close(per_channel.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
        torch.testing.assert_close(per_channel.std(1), torch.ones(4), atol=1e-3, rtol=0)
        assert fs.decode(lat).shape == (16, 3, 32, 32) and float(fs.decode(lat).abs().max()) <= 1.0


def test_latent_dae_trains_on_the_grid_and_keeps_the_first_stage_frozen(setup):
    _, cfg, ae, result = setup
    state = ckpt_io.load_checkpoint(result.checkpoint)
    assert state["first_stage"]["sha256"] == ckpt_io.verify(ae)["sha256"]
    assert state["dae_config"]["space"] == "latent"
    model, dcfg = load_dae(result.checkpoint)
    assert (model.pixel_size, model.image_size, model.channels) == (32, 16, 4) and not model.clips_x0
    saved = ckpt_io.load_checkpoint(ae)["model"]
    for k, v in model.first_stage.state_dict().items():  # 8 steps of Adam left the autoencoder alone
        assert torch.equal(v, saved[k]), k
    assert all(not p.requires_grad for p in model.first_stage.parameters())
    opt_params = sum(len(g["params"]) for g in state["optimizer"]["param_groups"])
    assert opt_params == len(list(model.encoder.parameters())) + len(list(model.unet.parameters()))


def test_latent_resume_is_bitwise_identical_and_refuses_another_autoencoder(setup, tmp_path):
    from daetalker.train.dae_trainer import train_dae

    data, cfg, ae, result = setup
    half = load_config("tiny", overrides=[*LATENT, "dae.max_steps=4"])
    train_dae(data, tmp_path / "run", half, first_stage=ae, device="cpu")
    resumed = train_dae(data, tmp_path / "run", cfg, resume=True, first_stage=ae, device="cpu")
    a, b = ckpt_io.load_checkpoint(result.checkpoint), ckpt_io.load_checkpoint(resumed.checkpoint)
    for part in ("model", "ema"):
        sa, sb = a[part] if part == "model" else a[part]["model"], b[part] if part == "model" else b[part]["model"]
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{part}.{k} differs after a resume at step 4"

    other = save_first_stage(data, tmp_path / "other-ae", cfg, seed=1)
    with pytest.raises(CheckpointError, match="trained on autoencoder"):
        train_dae(data, tmp_path / "run", load_config("tiny", overrides=[*LATENT, "dae.max_steps=12"]), resume=True,
                  first_stage=other, device="cpu")  # fmt: skip


def test_space_and_autoencoder_must_agree(setup, tmp_path):
    from daetalker.train.dae_trainer import train_dae

    data, cfg, ae, _ = setup
    with pytest.raises(ConfigError, match="pass the first-stage autoencoder"):
        train_dae(data, tmp_path / "a", cfg, device="cpu")
    with pytest.raises(ConfigError, match="uses no autoencoder"):
        train_dae(data, tmp_path / "b", load_config("tiny", overrides=MICRO), first_stage=ae, device="cpu")
    wrong = load_config("tiny", overrides=[*LATENT, "dae.image_size=64"])
    with pytest.raises(ConfigError, match="encodes 32 px frames"):
        train_dae(data, tmp_path / "c", wrong, first_stage=ae, device="cpu")


def test_extraction_and_reconstruction_go_through_the_first_stage(setup, tmp_path):
    from daetalker.diffusion import linear_schedule
    from daetalker.train.latents import extract_latents
    from daetalker.train.reconstruction import reconstruct

    data, cfg, _, result = setup
    out = extract_latents(data, result.checkpoint, tmp_path / "lat", device="cpu")
    z = np.load(out / "latents" / "a.npy")
    assert z.shape == (20, 16) and np.isfinite(z).all()
    model, dcfg = load_dae(result.checkpoint)
    frames = torch.stack([FramesDataset(data, splits=("val",), image_size=32)[i] for i in range(4)])
    with torch.no_grad(), autocast(torch.device("cpu"), dcfg.bf16):  # as extraction runs it
        again = model.encode_frames(torch.stack([FramesDataset(data, image_size=32)[i] for i in range(4)])).float()
    np.testing.assert_allclose(z[:4], again.numpy(), atol=2e-3)  # a batch of 4, not 64
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    noise_dec, inv_dec = reconstruct(model, frames, 3, sched, invert_steps=3)
    assert noise_dec.shape == inv_dec.shape == (4, 3, 32, 32)
    assert float(noise_dec.abs().max()) <= 1.0 and float(inv_dec.abs().max()) <= 1.0


def test_latent_bundle_generates_a_video_at_the_frame_size(tmp_path):
    from daetalker.bundle.build import make_test_bundle
    from daetalker.evaluate.evaluate import decode_video
    from daetalker.generate.model import load_bundle
    from daetalker.generate.video import render_video

    bundle = make_test_bundle(tmp_path / "bundle", profile="tiny", overrides=(*LATENT, "dae.sample_steps=2",
                                                              "s2l.d_model=32", "s2l.ffn_dim=32", "s2l.heads=2"))
    talker = load_bundle(bundle)
    assert (talker.dae.pixel_size, talker.dae.channels) == (32, 4)
    sf.write(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    for noise in ("reference", "random"):
        res = render_video(talker, tmp_path / "a.wav", tmp_path / f"{noise}.mp4", noise=noise, video_size=64,
                           progress=False)  # fmt: skip
        frames = decode_video(res.path, 64, res.n_frames)
        assert res.n_frames == 25 and frames.shape == (25, 64, 64, 3)
