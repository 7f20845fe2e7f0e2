"""The head motion speech does not explain: AR(1) sampling, fitting, the model's buffers and --pose (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_s2l_model import F_BINS, K, tiny_model

from daetalker.generate.pose import resolve_pose, sampled_motion
from daetalker.models.pose_residual import RHO_MAX, ResidualMoments, sample_ar1

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ar1_draws_have_the_asked_std_and_correlation_and_follow_the_seed():
    sigma, rho = torch.tensor([2.0, 0.5, 1.0]), torch.tensor([0.95, 0.5, 0.0])
    x = sample_ar1(40_000, sigma, rho, torch.Generator().manual_seed(0)).double()  # (n, 3)
    # 40k draws of rho 0.95 hold ~1,000 independent ones: std within 10%, lag-1 correlation within 0.03
    np.testing.assert_allclose(x.std(0).numpy(), sigma.numpy(), rtol=0.1)
    lag1 = ((x[1:] * x[:-1]).mean(0) / (x**2).mean(0)).numpy()
    np.testing.assert_allclose(lag1, rho.numpy(), atol=0.03)
    again = sample_ar1(100, sigma, rho, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, sample_ar1(100, sigma, rho, torch.Generator().manual_seed(0)))
    assert not torch.equal(again, sample_ar1(100, sigma, rho, torch.Generator().manual_seed(1)))
    assert sample_ar1(10, torch.zeros(3), rho, torch.Generator()).abs().max() == 0  # not fitted: no motion
    assert torch.isfinite(sample_ar1(50, sigma, torch.full((3,), 1.5), torch.Generator())).all()  # rho clamped


def test_moments_recover_sigma_and_rho_from_masked_sequences():
    sigma, rho = torch.tensor([1.5, 0.3, 0.8]), torch.tensor([0.9, 0.7, 0.3])
    moments = ResidualMoments(3)
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        r = sample_ar1(2_000, sigma, rho, gen)
        valid = torch.rand(2_000, generator=gen) > 0.1  # frames without a face are left out
        r[~valid] = float("nan")
        moments.add(r, valid)
    got_sigma, got_rho = moments.fit()
    np.testing.assert_allclose(got_sigma.numpy(), sigma.numpy(), rtol=0.08)
    np.testing.assert_allclose(got_rho.numpy(), rho.numpy(), atol=0.04)
    assert float(ResidualMoments(3).fit()[0].abs().max()) == 0.0 and RHO_MAX < 1


def test_model_adds_the_offset_to_its_prediction_and_loads_old_checkpoints():
    model = tiny_model().eval()
    t = 10
    x = torch.randn(1, K * t, F_BINS)
    offset = torch.zeros(1, t, 3)
    offset[..., 0] = 15.0
    free = model(x)
    moved = model(x, pose_offset=offset)
    torch.testing.assert_close(moved.latent, model(x, pose=free.pose + offset).latent, atol=1e-5, rtol=1e-5)
    assert (moved.latent - free.latent).abs().mean() > 1e-2
    torch.testing.assert_close(moved.pose, free.pose)  # the predictor's own output is untouched

    # A checkpoint from before the residual was fitted loads as "not fitted": no sampled motion.
    old = {k: v for k, v in model.state_dict().items() if "pose_residual" not in k}
    fresh = tiny_model(seed=1)
    fresh.set_pose_residual(torch.ones(3), torch.full((3,), 0.5))
    fresh.load_state_dict(old)
    assert float(fresh.sample_pose_residual(20, seed=0).abs().max()) == 0.0


def test_predicted_motion_samples_seeded_motion_and_the_default_does_not():
    model = tiny_model().eval()
    model.set_stats(pose_std=torch.tensor([4.0, 2.0, 2.0]))
    model.set_pose_residual(torch.tensor([1.0, 0.5, 0.5]), torch.tensor([0.95, 0.9, 0.9]))
    a = sampled_motion("predicted-motion", model, 500, seed=7)
    assert a.shape == (500, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, sampled_motion(" predicted-motion ", model, 500, seed=7))
    assert not np.array_equal(a, sampled_motion("predicted-motion", model, 500, seed=8))
    assert 2.0 < float(a[:, 0].std()) < 6.0  # ~ 1.0 unit x 4 degrees (500 draws of rho 0.95: loose)
    for spec in (None, "predicted", "constant:0,0,0"):  # the default is the regression alone
        assert sampled_motion(spec, model, 500, seed=7) is None
    assert resolve_pose("predicted-motion", 4) is None


def test_served_requests_take_every_predicted_pose_and_no_pose_file():
    import pandas as pd

    from daetalker.registry.clips import ClipError, ClipLimits, parse_rows

    limits = ClipLimits()
    for pose in ("predicted", "predicted-motion", "constant:5,0,0"):
        (clip,) = parse_rows(pd.DataFrame([{"audio": "AAAA", "pose": pose}]), limits)
        assert clip.pose == pose
    with pytest.raises(ClipError, match="pose"):
        parse_rows(pd.DataFrame([{"audio": "AAAA", "pose": "/etc/passwd.csv"}]), limits)
