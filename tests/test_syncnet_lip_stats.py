"""LightSyncNet's lip standardisation (issue 14): set from the training frames, kept in the checkpoint,
identity for checkpoints written before it existed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daetalker.errors import CheckpointError
from daetalker.evaluate.syncnet import LightSyncNet, light_checkpoint, load_syncnet
from daetalker.evaluate.syncnet_train import SyncClip, set_lip_statistics

ARCH = dict(lip_size=(8, 16), lip_channels=(8, 8), audio_channels=(8,), embed_dim=8)


def lip_clip(cid: str, n: int, offset: float, gen: torch.Generator) -> SyncClip:
    lips = (offset + 0.3 * torch.randn(n, 3, 8, 16, generator=gen)).clamp(-1, 1).half()
    return SyncClip(cid, lips, torch.zeros(13, 4 * n + 16), n - 5)


def test_lip_statistics_are_the_training_frames_mean_face_and_spread() -> None:
    gen = torch.Generator().manual_seed(0)
    clips = [lip_clip("a", 30, 0.2, gen), lip_clip("b", 50, -0.1, gen)]
    model = LightSyncNet(**ARCH)
    set_lip_statistics(model, clips)
    frames = torch.cat([c.lips.float() for c in clips])
    torch.testing.assert_close(model.lip_mean, frames.mean(dim=0))
    torch.testing.assert_close(model.lip_std, (frames - frames.mean(dim=0)).pow(2).mean(dim=(0, 2, 3)).sqrt())
    # forward_lip sees the frames minus the mean face, in units of the spread
    plain = LightSyncNet(**ARCH)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("lip_mean", "lip_std")},
                          strict=False)
    model.eval(), plain.eval()
    x = torch.stack([frames[i:i + 5].movedim(0, 1) for i in (0, 40)])  # (2, 3, 5, 8, 16)
    standardised = (x - model.lip_mean[:, None]) / model.lip_std[:, None, None, None]
    torch.testing.assert_close(model.forward_lip(x), plain.forward_lip(standardised))


def test_checkpoint_without_lip_statistics_loads_with_identity_ones(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LightSyncNet(**ARCH).eval()
    state = light_checkpoint(model)
    old = {**state, "model": {k: v for k, v in state["model"].items() if k not in ("lip_mean", "lip_std")}}
    torch.save(old, tmp_path / "old.pt")
    loaded = load_syncnet(tmp_path / "old.pt")
    assert isinstance(loaded, LightSyncNet)
    assert not loaded.lip_mean.any() and bool((loaded.lip_std == 1).all())
    x = torch.rand(2, 3, 5, 8, 16) * 2 - 1
    torch.testing.assert_close(loaded.forward_lip(x), model.forward_lip(x))  # scores as before

    torch.save({**state, "model": {**state["model"], "bogus": torch.zeros(1)}}, tmp_path / "bogus.pt")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_syncnet(tmp_path / "bogus.pt")
    del state["model"]["aud.0.0.weight"]
    torch.save(state, tmp_path / "torn.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_syncnet(tmp_path / "torn.pt")
