"""Diffusion maths: schedule values, noising, DDIM against closed-form denoisers, exact-number regressions."""

from __future__ import annotations

import math

import pytest
import torch

from daetalker.config import DAEConfig
from daetalker.diffusion import (
    box_weights,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    eps_from_v,
    eps_loss,
    linear_schedule,
    min_snr_weights,
    predict_x0,
    q_sample,
    reference_guided,
    v_target,
)
from daetalker.models import DiffusionAutoencoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost

SCHED = linear_schedule(1000, 1e-4, 0.02)



def test_linear_schedule_matches_ddpm():
    assert SCHED.betas[0].item() == pytest.approx(1e-4)
    assert SCHED.betas[-1].item() == pytest.approx(0.02)
    assert SCHED.alphas_cumprod[0].item() == pytest.approx(0.9999)
    # alpha_bar_T of DDPM's linear schedule (Ho et al. 2020): ~4.04e-5, so x_T is almost pure noise
    assert SCHED.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)
    assert SCHED.alphas_cumprod[499].item() == pytest.approx(0.078587, rel=1e-4)
    assert torch.all(SCHED.alphas_cumprod[1:] < SCHED.alphas_cumprod[:-1])


def test_ddim_timesteps_evenly_strided():
    assert ddim_timesteps(1000, 4) == [0, 333, 666, 999]
    assert ddim_timesteps(1000, 20)[:4] == [0, 53, 105, 158] and ddim_timesteps(1000, 20)[-1] == 999
    assert ddim_timesteps(10, 10) == list(range(10))
    assert ddim_timesteps(1000, 1) == [999]
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 0)
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 1001)


def test_q_sample_and_predict_x0_are_inverse():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = q_sample(SCHED, x0, t, noise)
    a = SCHED.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert torch.allclose(predict_x0(x_t, noise, a), x0, atol=2e-4)
    # at t = T-1 the signal is almost gone: x_t's statistics are the noise's
    big = q_sample(SCHED, torch.ones(1, 1, 256, 256), torch.tensor([999]), torch.randn(1, 1, 256, 256, generator=g))
    assert big.mean().item() == pytest.approx(0.0, abs=0.02) and big.std().item() == pytest.approx(1.0, abs=0.02)


def test_eps_loss_is_mse_and_min_snr_reweights_it():
    a, b = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    assert eps_loss(a, b).item() == pytest.approx(4.0)
    assert eps_loss(a, b, torch.tensor([1.0, 0.5])).item() == pytest.approx(3.0)
    w = min_snr_weights(SCHED, torch.tensor([0, 100, 500, 999]), gamma=5.0)
    snr0 = 0.9999 / 0.0001
    assert w[0].item() == pytest.approx(5.0 / snr0, rel=1e-4)  # nearly clean: heavily down-weighted
    assert w[2:].tolist() == [1.0, 1.0]  # SNR <= 5: the plain eps loss
    assert 0 < w[1].item() < 1
    # v-prediction: the same weight on the x0 error, min(SNR, gamma), so min(SNR, gamma) / (SNR + 1)
    wv = min_snr_weights(SCHED, torch.tensor([0, 999]), gamma=5.0, prediction="v")
    assert wv[0].item() == pytest.approx(5.0 / (snr0 + 1), rel=1e-4)
    a999 = float(SCHED.alphas_cumprod[999])
    assert wv[1].item() == pytest.approx((a999 / (1 - a999)) / (a999 / (1 - a999) + 1), rel=1e-4)


def test_v_prediction_round_trips_to_the_noise_and_x0():
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    a = SCHED.alpha_bar(t, x0)
    x_t = q_sample(SCHED, x0, t, noise)
    v = v_target(x0, noise, a)
    eps = eps_from_v(x_t, v, a)
    torch.testing.assert_close(eps, noise, atol=2e-5, rtol=0)  # a perfect v model is a perfect eps model
    torch.testing.assert_close(predict_x0(x_t[:3], eps[:3], a[:3]), x0[:3], atol=1e-3, rtol=0)
    # at t = T-1 eps-prediction cannot give x0 (it divides by sqrt(a) ~ 0.006) but v can: x0 = sqrt(a) x_t - sqrt(1-a) v
    torch.testing.assert_close(a.sqrt() * x_t - (1 - a).sqrt() * v, x0, atol=1e-5, rtol=0)


def test_pixel_weights_make_a_weighted_mean_and_box_weights_cover_the_box():
    w = box_weights(torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]]), 4, extra=3.0)
    assert w.shape == (2, 1, 4, 4)
    # pixel centres 0.125, 0.375, 0.625, 0.875: columns 1 (x in [.25, .5]), rows 2-3 (y in [.5, 1])
    expect = torch.ones(4, 4)
    expect[2:, 1] = 4.0
    assert torch.equal(w[0, 0], expect) and torch.equal(w[1, 0], torch.ones(4, 4))  # empty box: plain
    pred, target = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    target[:, :, 2:, 1] = 1.0  # errors only inside sample 0's box
    per0 = (4.0 * 2) / (4.0 * 2 + 14)  # weighted mean over one channel's pixels (all channels alike)
    per1 = 2 / 16
    assert eps_loss(pred, target, pixel_weights=w).item() == pytest.approx((per0 + per1) / 2, rel=1e-6)
    assert eps_loss(pred, target, torch.tensor([1.0, 0.0]), w).item() == pytest.approx(per0 / 2, rel=1e-6)
    assert eps_loss(pred, target).item() == pytest.approx(2 / 16)


def _point_mass_eps(c: torch.Tensor):
    """The exact denoiser when all data equal c: eps = (x_t - sqrt(a) c) / sqrt(1 - a)."""

    def model(x, t, z):
        a = SCHED.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * c) / (1 - a).sqrt()

    return model


def _gaussian_eps(mu: float, s: float):
    """The exact denoiser for x0 ~ N(mu, s^2) per pixel: E[eps | x_t]."""

    def model(x, t, z):
        a = SCHED.alphas_cumprod[t].double().view(-1, 1, 1, 1)
        return ((1 - a).sqrt() * (x.double() - a.sqrt() * mu) / (a * s * s + 1 - a)).float()

    return model


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_ddim_sample_recovers_a_point_mass(steps):
    c = torch.linspace(-0.9, 0.9, 48).view(1, 3, 4, 4)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    z = torch.zeros(2, 1)
    out = ddim_sample(_point_mass_eps(c), x_T, z, steps, SCHED)
    assert torch.allclose(out, c.expand_as(out), atol=1e-3)  # float32 at alpha_bar ~ 4e-5


def test_ddim_maps_noise_to_the_data_distribution_and_inverts():
    """With the exact denoiser of N(mu, s^2) data, DDIM is the probability-flow ODE: x0 = mu + s x_T."""
    mu, s = 0.3, 0.2
    model = _gaussian_eps(mu, s)
    g = torch.Generator().manual_seed(2)
    x_T = torch.randn(1, 1, 64, 64, generator=g)
    z = torch.zeros(1, 1)
    samples = [ddim_sample(model, x_T, z, n, SCHED, clip_x0=False) for n in (10, 100, 1000)]
    errors = [(x0 - (mu + s * x_T)).abs().max().item() for x0 in samples]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01, errors
    x0 = samples[-1]
    assert x0.mean().item() == pytest.approx(mu + s * x_T.mean().item(), abs=2e-3)
    assert x0.std().item() == pytest.approx(s * x_T.std().item(), rel=0.01)

    # inversion then sampling returns the data, closer with more steps
    data = mu + s * torch.randn(1, 1, 64, 64, generator=g)
    recon = [(ddim_sample(model, ddim_invert(model, data, z, n, SCHED), z, n, SCHED, clip_x0=False) - data)
             .abs().max().item() for n in (5, 50, 200)]
    assert recon[0] > recon[1] > recon[2] and recon[2] < 0.05, recon
    # and the inverted code is (close to) the noise that produced the data
    x_T_inv = ddim_invert(model, data, z, 200, SCHED)
    assert torch.allclose(x_T_inv, (data - mu) / s, atol=0.1)


def _conditional_gaussian_eps(s: float):
    """The exact denoiser for x0 ~ N(z, s^2) per pixel, z (B, 1) the condition: eps is affine in z."""

    def model(x, t, z):
        a = SCHED.alphas_cumprod[t].double().view(-1, 1, 1, 1)
        mu = z.double().view(-1, 1, 1, 1)
        return ((1 - a).sqrt() * (x.double() - a.sqrt() * mu) / (a * s * s + 1 - a)).float()

    return model


@pytest.mark.parametrize("scale", [0.0, 2.0, 3.5])
def test_reference_guidance_moves_the_sample_scale_times_as_far_from_the_reference(scale):
    """eps is affine in the condition, so guiding with z_ref samples N(z_ref + w (z - z_ref), s^2) exactly."""
    s, z_ref = 0.2, torch.tensor([[0.1]])
    model = _conditional_gaussian_eps(s)
    x_T = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3)).expand(3, -1, -1, -1)
    z = torch.tensor([[0.1], [0.3], [-0.2]])  # the reference itself, and two moves away from it
    plain = ddim_sample(model, x_T, z, 1000, SCHED, clip_x0=False)
    guided = ddim_sample(reference_guided(model, z_ref, scale), x_T, z, 1000, SCHED, clip_x0=False)
    shift = (guided - plain).mean((1, 2, 3))  # the plain sample is z + s x_T (same x_T, same s x_T)
    want = z_ref[0, 0] + scale * (z[:, 0] - z_ref[0, 0]) - z[:, 0]
    assert torch.allclose(shift, want, atol=5e-3), (shift, want)
    assert torch.allclose(guided[0], plain[0], atol=1e-5)  # z == z_ref: the reference decodes to itself
    assert torch.allclose(guided - guided.mean((1, 2, 3), keepdim=True), plain - plain.mean((1, 2, 3), keepdim=True),
                          atol=5e-3)  # the noise's detail is untouched


def test_reference_guidance_of_scale_one_is_the_model_and_negative_is_refused():
    model = _conditional_gaussian_eps(0.2)
    assert reference_guided(model, torch.zeros(1, 1), 1.0) is model
    with pytest.raises(ValueError, match="guidance scale"):
        reference_guided(model, torch.zeros(1, 1), -1.0)


def test_ddim_step_with_clipping_keeps_x0_in_range():
    x = torch.full((1, 1, 2, 2), 3.0)
    eps = torch.zeros_like(x)
    out = ddim_step(x, eps, 0.5, 1.0, clip_x0=True)  # x0 = 3 / sqrt(.5) -> clipped to 1
    assert torch.allclose(out, torch.ones_like(out))
    assert ddim_step(x, eps, 0.5, 1.0, clip_x0=False).max().item() == pytest.approx(3 / math.sqrt(0.5), rel=1e-6)


MICRO = DAEConfig(
    image_size=16, base_channels=8, channel_mult=(1, 2), enc_channel_mult=(1, 2), num_res_blocks=1,
    enc_num_res_blocks=1, attn_resolutions=(8,), embed_dim=32, latent_dim=16, dropout=0.0,
)


def _random_micro_model() -> DiffusionAutoencoder:
    """A micro DAE with every weight random (the zero-init convs would make eps == 0)."""
    torch.manual_seed(0)
    model = DiffusionAutoencoder.from_config(MICRO).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_exact_numbers_of_a_tiny_model():
    """Regression numbers (as diffusers does): any silent change to the maths or the model moves them.

    The UNet perturbs the exact Gaussian denoiser, so DDIM stays in range and every step counts.
    """
    model = _random_micro_model()
    exact = _gaussian_eps(0.0, 0.5)

    def eps(x, t, z):
        return exact(x, t, z) + 0.1 * model.unet(x, t, z)

    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    x_T = torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        z = model.encode(x0)
        noise = torch.randn(2, 3, 16, 16, generator=g)
        t = torch.tensor([10, 700])
        loss = eps_loss(model(x0, q_sample(SCHED, x0, t, noise), t), noise)
    sample = ddim_sample(eps, x_T, z, 10, SCHED, clip_x0=False)
    inverted = ddim_invert(eps, x0, z, 10, SCHED)
    got = {
        "z_sum": z.sum().item(),
        "z_abs": z.abs().mean().item(),
        "loss": loss.item(),
        "sample_sum": sample.sum().item(),
        "sample_abs": sample.abs().mean().item(),
        "inverted_sum": inverted.sum().item(),
        "inverted_abs": inverted.abs().mean().item(),
    }
    for k, v in EXPECTED_NUMBERS.items():
        assert got[k] == pytest.approx(v, rel=1e-3, abs=1e-3), (k, got)
    assert set(EXPECTED_NUMBERS) == set(got)


# Recorded from this implementation (torch 2.13 CPU); the analytic tests above pin down correctness.
EXPECTED_NUMBERS: dict[str, float] = {
    "z_sum": 1.076102,
    "z_abs": 0.0844164,
    "loss": 0.9698898,
    "sample_sum": -49.29929,
    "sample_abs": 0.2995345,
    "inverted_sum": 58.29556,
    "inverted_abs": 0.9506618,
}
