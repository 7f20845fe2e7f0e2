"""The DAE networks: reference sizes, tensor contracts, zero-init behaviour, conditioning on z."""

from __future__ import annotations

import pytest
import torch

from daetalker.config import DAEConfig, load_config
from daetalker.diffusion import eps_loss, linear_schedule, q_sample
from daetalker.models import DiffusionAutoencoder, count_parameters
from daetalker.models.encoder import LatentNorm
from daetalker.models.first_stage import FirstStage
from daetalker.models.nn_blocks import AttentionBlock, norm_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost

MICRO = DAEConfig(
    image_size=16, base_channels=8, channel_mult=(1, 2), enc_channel_mult=(1, 2), num_res_blocks=1,
    enc_num_res_blocks=1, attn_resolutions=(8,), embed_dim=32, latent_dim=16, dropout=0.0,
)



def _meta_params(profile: str) -> int:
    with torch.device("meta"):  # count without allocating 170M floats
        cfg = load_config(profile)
        first = FirstStage.from_config(cfg.autoencoder) if cfg.dae.space == "latent" else None
        return count_parameters(DiffusionAutoencoder.from_config(cfg.dae, first))


@pytest.mark.parametrize("profile,reference", [("base128", 128.5e6), ("paper256", 168.5e6)])
def test_reference_profiles_match_diffae_sizes(profile, reference):
    n = _meta_params(profile)
    assert abs(n - reference) / reference < 0.05, f"{profile}: {n / 1e6:.2f}M parameters"


def test_tiny_profile_is_cpu_sized():
    assert _meta_params("tiny") < 5e6 and _meta_params("tiny-pixel") < 5e6


def test_group_norm_groups():
    assert norm_groups(128) == 32 and norm_groups(512) == 32  # the paper's GroupNorm(32)
    assert norm_groups(32) == 8 and norm_groups(8) == 2 and norm_groups(3) == 1
    assert all(c % norm_groups(c) == 0 for c in range(1, 600))


def test_shapes_and_attention_placement():
    model = DiffusionAutoencoder.from_config(MICRO)
    x0 = torch.rand(3, 3, 16, 16) * 2 - 1
    z = model.encode(x0)
    assert z.shape == (3, 16)
    eps = model.unet(x0, torch.tensor([0, 5, 999]), z)
    assert eps.shape == x0.shape
    # attention at the 8x8 level: 1 down block, 2 up blocks, the middle; the encoder: 1 + middle
    assert sum(isinstance(m, AttentionBlock) for m in model.unet.modules()) == 4
    assert sum(isinstance(m, AttentionBlock) for m in model.encoder.modules()) == 2
    with pytest.raises(AssertionError):
        model.unet(torch.zeros(3, 3, 8, 8), torch.zeros(3, dtype=torch.long), z)


def test_zero_init_then_z_gets_gradient_after_updates():
    torch.manual_seed(0)
    model = DiffusionAutoencoder.from_config(MICRO)
    sched = linear_schedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        t = torch.randint(0, 1000, (4,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = eps_loss(model(x0, q_sample(sched, x0, t, noise), t), noise)
        opt.zero_grad()
        loss.backward()
        enc_grad = sum(p.grad.abs().sum().item() for p in model.encoder.parameters() if p.grad is not None)
        opt.step()
        return enc_grad

    # zero-initialised output convs: eps == 0 and no gradient reaches z (nor the encoder) at step 0
    assert model.unet(x0, torch.zeros(4, dtype=torch.long), torch.randn(4, 16)).abs().max().item() == 0.0
    assert step() == 0.0
    grads = [step() for _ in range(3)]
    assert grads[-1] > 0.0

    # after the updates, the output depends on z
    t = torch.full((4,), 500)
    with torch.no_grad():
        a = model.unet(x0, t, torch.zeros(4, 16))
        b = model.unet(x0, t, torch.ones(4, 16))
    assert (a - b).abs().max().item() > 1e-6


def test_channels_last_gives_the_same_output():
    torch.manual_seed(1)
    model = DiffusionAutoencoder.from_config(MICRO)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # make the zero-init convs non-trivial
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([3, 600])
    with torch.no_grad():
        ref = model(x0, x0, t)
        cl = model.to(memory_format=torch.channels_last)(
            x0.contiguous(memory_format=torch.channels_last), x0.contiguous(memory_format=torch.channels_last), t
        )
    assert torch.allclose(ref, cl, atol=1e-5)


def test_encoder_is_batch_independent():
    """GroupNorm (not BatchNorm): a frame's latent does not depend on its batch mates (extraction relies on it)."""
    torch.manual_seed(2)
    model = DiffusionAutoencoder.from_config(MICRO).eval()
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model.encode(x)[2:3], model.encode(x[2:3]), atol=1e-5)


def test_config_rejects_sizes_that_do_not_divide():
    with pytest.raises(ValueError):
        DAEConfig(image_size=20, channel_mult=(1, 2, 2, 2), enc_channel_mult=(1, 2))


def test_latent_norm_standardises_in_training_and_uses_calibrated_statistics_in_eval():
    torch.manual_seed(3)
    cfg = DAEConfig(**{**MICRO.__dict__, "latent_norm": True})
    model = DiffusionAutoencoder.from_config(cfg)
    frames = torch.rand(12, 3, 16, 16) * 2 - 1
    z = model.encode(frames)  # training mode: the batch's own statistics
    assert torch.allclose(z.mean(0), torch.zeros(16), atol=1e-4)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(16), atol=0.02)  # eps vs raw var ~1e-4
    raw = model.encoder(frames, normalize=False)
    assert raw.std(0).mean() < 0.2 * raw.abs().mean()  # why it exists: raw z barely varies across frames

    model.eval()
    model.encoder.calibrate(frames, batch_size=5)
    assert isinstance(model.encoder.latent_norm, LatentNorm)
    with torch.no_grad():
        z_eval = model.encode(frames)
        assert torch.allclose(z_eval, z, atol=1e-3)  # calibrated on the same frames: same standardisation
        one = model.encode(frames[3:4])  # eval: a frame's latent does not depend on its batch
    assert torch.allclose(one, z_eval[3:4], atol=1e-5)
