"""speech2latent model, Conformer attention, loss and speech features (issue 5, items 1-2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from daetalker.config.base import from_dict
from daetalker.config.preprocess import PreprocessConfig
from daetalker.config.s2l import S2LConfig
from daetalker.errors import AssetError, ConfigError
from daetalker.features import LogMelExtractor, PretrainedSpeechEncoder, make_extractor
from daetalker.features.log_mel import LOG_FLOOR, hz_to_mel, magnitude_spectrogram, mel_to_hz
from daetalker.models.conformer import RelPositionSelfAttention, lengths_to_mask, relative_positional_encoding
from daetalker.models.speech2latent import Speech2Latent, s2l_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # micro models: threads only cost

K = 4  # mel frames per video frame
F_BINS = 16


def tiny_model(seed: int = 0, **kw) -> Speech2Latent:
    torch.manual_seed(seed)
    args = dict(
        feature_dim=F_BINS,
        frames_per_video_frame=K,
        latent_dim=8,
        dim=32,
        heads=2,
        ffn_dim=64,
        conv_kernel=5,
        dropout=0.1,
        blocks_before=1,
        blocks_after=1,
        pose_predictor_dim=32,
    )
    return Speech2Latent(**(args | kw))



# --- model -----------------------------------------------------------------------------------


def test_paper_config_shapes_and_size():
    cfg = S2LConfig()
    model = Speech2Latent.from_config(cfg, feature_dim=80, frames_per_video_frame=4, latent_dim=512).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert 24e6 < n_params < 30e6, n_params  # 8 blocks x ~3.15M + front-end, adaptor, head
    out = model(torch.randn(2, 4 * 10, 80), lengths=torch.tensor([10, 7]))
    assert out.latent.shape == (2, 10, 512) and out.pose.shape == (2, 10, 3)
    assert out.latent[1, 7:].abs().max() == 0 and out.pose[1, 7:].abs().max() == 0  # padded frames zeroed


def test_padding_does_not_change_valid_frames():
    model = tiny_model().eval()
    model.set_stats(pose_mean=torch.tensor([1.0, -2.0, 0.5]), pose_std=torch.tensor([10.0, 5.0, 3.0]))
    t = 9
    x = torch.randn(1, K * t, F_BINS)
    pose = torch.randn(1, t, 3) * 5
    ref = model(x, pose=pose)
    junk_x, junk_pose = torch.randn(1, K * 6, F_BINS) * 50, torch.randn(1, 6, 3) * 50

    right = model(torch.cat([x, junk_x], 1), pose=torch.cat([pose, junk_pose], 1), lengths=torch.tensor([t]))
    torch.testing.assert_close(right.latent[:, :t], ref.latent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right.pose[:, :t], ref.pose, atol=1e-5, rtol=1e-5)

    # Left padding under a mask is a pure shift: relative positions make the model translation-equivariant.
    mask = torch.cat([torch.zeros(1, 6, dtype=torch.bool), torch.ones(1, t, dtype=torch.bool)], 1)
    left = model(torch.cat([junk_x, x], 1), pose=torch.cat([junk_pose, pose], 1), mask=mask)
    torch.testing.assert_close(left.latent[:, 6:], ref.latent, atol=1e-5, rtol=1e-5)

    # A batch of unequal lengths gives each item what it gets alone.
    x2, pose2 = torch.randn(1, K * 5, F_BINS), torch.randn(1, 5, 3)
    batch = model(
        torch.cat([x, torch.cat([x2, junk_x[:, : K * 4]], 1)]),
        pose=torch.cat([pose, torch.cat([pose2, junk_pose[:, :4]], 1)]),
        lengths=torch.tensor([t, 5]),
    )
    torch.testing.assert_close(batch.latent[1, :5], model(x2, pose=pose2).latent[0], atol=1e-5, rtol=1e-5)


def test_relative_attention_is_shift_but_not_reversal_equivariant():
    torch.manual_seed(0)
    d, t = 16, 7
    attn = RelPositionSelfAttention(dim=d, heads=2, dropout=0.0).eval()
    x = torch.randn(1, t, d)
    out = attn(x, relative_positional_encoding(t, d), torch.ones(1, t, dtype=torch.bool))

    shifted = torch.cat([torch.randn(1, 3, d) * 10, x], 1)
    mask = torch.tensor([[False] * 3 + [True] * t])
    out_shifted = attn(shifted, relative_positional_encoding(t + 3, d), mask)
    torch.testing.assert_close(out_shifted[:, 3:], out, atol=1e-5, rtol=1e-5)

    # Content-only attention would commute with reversing the sequence; i - j is signed, so this does not.
    out_rev = attn(x.flip(1), relative_positional_encoding(t, d), torch.ones(1, t, dtype=torch.bool))
    assert (out_rev.flip(1) - out).abs().max() > 1e-2

    # The encoding is indexed by i - j: row T-1 is distance 0 (sin 0 = 0, cos 0 = 1).
    pe = relative_positional_encoding(t, d)
    assert pe.shape == (2 * t - 1, d)
    torch.testing.assert_close(pe[t - 1, :4], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert lengths_to_mask(torch.tensor([2, 0]), 3).tolist() == [[True, True, False], [False, False, False]]


def test_pose_controls_the_output_and_trains_only_through_its_paths():
    model = tiny_model().eval()
    t = 12
    x = torch.randn(2, K * t, F_BINS)
    yaw_left = torch.zeros(2, t, 3)
    yaw_left[..., 0] = -20.0
    out_a = model(x, pose=yaw_left)
    out_b = model(x, pose=-yaw_left)
    assert (out_a.latent - out_b.latent).abs().mean() > 1e-2  # a different pose sequence changes the latents
    torch.testing.assert_close(out_a.pose, out_b.pose)  # ... but not the pose the speech predicts

    # Without a pose the prediction drives the projector; unlabelled (NaN) frames fall back to it.
    free = model(x)
    torch.testing.assert_close(free.latent, model(x, pose=free.pose).latent, atol=1e-5, rtol=1e-5)
    partial = yaw_left.clone()
    partial[:, 5:] = float("nan")
    mixed = torch.cat([yaw_left[:, :5], free.pose[:, 5:]], 1)
    torch.testing.assert_close(model(x, pose=partial).latent, model(x, pose=mixed).latent, atol=1e-5, rtol=1e-5)

    # Latent loss with ground-truth pose: gradient reaches the projector, not the predictor.
    model.train()
    full = torch.ones(2, t, dtype=torch.bool)
    out = model(x, pose=yaw_left)
    s2l_loss(out.latent, torch.randn_like(out.latent), out.pose, None, full)["loss"].backward()
    assert model.pose_projector.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.pose_predictor.parameters())
    # The pose loss is what trains the predictor.
    model.zero_grad(set_to_none=True)
    out = model(x, pose=yaw_left)
    s2l_loss(out.latent.detach(), out.latent.detach(), out.pose, yaw_left, full)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pose_predictor.parameters())


def test_s2l_loss_numbers():
    mask = torch.tensor([[True, True, False]])
    latent_target = torch.ones(1, 3, 4)
    latent_target[0, 2] = 100.0  # padded frame: must not count
    pose_target = torch.full((1, 3, 3), 2.0)
    pose_target[0, 1] = float("nan")  # no label: must not count
    pose_pred = torch.zeros(1, 3, 3)
    std = torch.tensor([2.0, 2.0, 2.0])
    l1 = s2l_loss(torch.zeros(1, 3, 4), latent_target, pose_pred, pose_target, mask, pose_std=std, pose_weight=0.5)
    assert l1["latent_mse"].item() == pytest.approx(1.0)
    assert l1["pose"].item() == pytest.approx(1.0)  # |0 - 2| / 2 on the one labelled valid frame
    assert l1["loss"].item() == pytest.approx(1.5)
    pose_pred[0, 0] = torch.tensor([2.0, 6.0, 2.0])  # errors 0, 4, 0 -> /2 -> 0, 2, 0
    mse = s2l_loss(torch.zeros(1, 3, 4), latent_target, pose_pred, pose_target, mask, pose_std=std, pose_loss="mse")
    assert mse["pose"].item() == pytest.approx(4.0 / 3)
    assert torch.isfinite(mse["loss"])


def test_predictor_learns_pose_from_speech():
    # Pose is a function of the input's first bin (smoothed over each video frame): learnable.
    model = tiny_model(dropout=0.0)
    model.set_stats(pose_std=torch.tensor([10.0, 10.0, 10.0]))
    torch.manual_seed(1)
    x = torch.randn(4, K * 16, F_BINS)
    pose = 10.0 * x[..., 0].view(4, 16, K).mean(-1, keepdim=True).expand(4, 16, 3).contiguous()
    mask = torch.ones(4, 16, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(x, pose=pose)
        loss = s2l_loss(out.latent, torch.zeros_like(out.latent), out.pose, pose, mask, pose_std=model.pose_std)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
        losses.append(loss["pose"].item())
    assert losses[-1] < losses[0] / 8, (losses[0], losses[-1])  # measured: 0.54 -> 0.028


def test_tiny_model_overfits_a_random_mapping():
    model = tiny_model(dropout=0.0)
    torch.manual_seed(2)
    x = torch.randn(4, K * 20, F_BINS)
    target = torch.randn(4, 20, 8)
    pose = torch.randn(4, 20, 3)
    lengths = torch.tensor([20, 17, 20, 12])
    mask = lengths_to_mask(lengths, 20)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = last = None
    for step in range(100):
        out = model(x, lengths=lengths, pose=pose)
        loss = s2l_loss(out.latent, target, out.pose, pose, mask)["latent_mse"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    assert last < first / 50, (first, last)  # measured: 1.33 -> < 1e-3 by step 50


def test_config_validation_and_builder():
    with pytest.raises(ConfigError, match="odd"):
        from_dict(S2LConfig, {"conv_kernel": 12})
    with pytest.raises(ConfigError, match="divisible"):
        from_dict(S2LConfig, {"d_model": 100, "heads": 3})
    with pytest.raises(ConfigError, match="s2l.features"):
        from_dict(S2LConfig, {"features": "mfcc"}, prefix="s2l")
    cfg = from_dict(S2LConfig, {"d_model": 64, "ffn_dim": 64, "blocks_before": 1, "blocks_after": 2})
    model = Speech2Latent.from_config(cfg, feature_dim=80, frames_per_video_frame=4, latent_dim=16)
    assert len(model.encoder.blocks) == 1 and len(model.decoder.blocks) == 2 and model.head.out_features == 16


# --- speech features ---------------------------------------------------------------------------


def test_log_mel_frames_and_hand_checked_values():
    ext = LogMelExtractor.from_config(PreprocessConfig())
    assert (ext.frames_per_video_frame, ext.dim) == (4, 80)
    sr = 16000
    for n_video in (1, 7, 25):
        assert ext(np.zeros(640 * n_video, np.float32)).shape == (4 * n_video, 80)
    assert ext(np.zeros(640 * 3, np.float32)).min() == pytest.approx(math.log(LOG_FLOOR))

    # Slaney scale: 3 f / 200 below 1 kHz, 27 mels per factor 6.4 above.
    assert hz_to_mel(1000.0) == pytest.approx(15.0) and hz_to_mel(6400.0) == pytest.approx(42.0)
    assert mel_to_hz(hz_to_mel(3210.0)) == pytest.approx(3210.0)
    # Band centres are 82 points evenly spaced in mel from 55 Hz to 7600 Hz; by hand, centre of band 10:
    mel_lo, mel_hi = 55 * 3 / 200, 15 + math.log(7600 / 1000) * 27 / math.log(6.4)
    f10 = (mel_lo + 11 * (mel_hi - mel_lo) / 81) * 200 / 3
    assert f10 == pytest.approx(450.41, abs=0.01)
    t = np.arange(640 * 10) / sr
    mel = ext(0.5 * np.sin(2 * np.pi * f10 * t))
    assert mel.shape == (40, 80) and int(mel.mean(0).argmax()) == 10
    assert ext(0.5 * np.sin(2 * np.pi * 3000.0 * t)).mean(0).argmax() > 40  # higher pitch, higher band

    # STFT magnitude of a sine on an FFT bin (1 kHz = bin 32 of 512 at 16 kHz): A * sum(hann(400)) / 2 = 100 A.
    sine_1k = torch.from_numpy(0.5 * np.sin(2 * np.pi * 1000.0 * t))
    spec = magnitude_spectrogram(sine_1k, n_fft=512, win_length=400, hop_length=160)
    assert spec.shape == (40, 257) and int(spec[20].argmax()) == 32
    assert spec[20, 32].item() == pytest.approx(50.0, rel=1e-6)
    # int16 input is scaled to [-1, 1].
    wav16 = (0.5 * np.sin(2 * np.pi * f10 * t) * 32768).astype(np.int16)
    np.testing.assert_array_equal(ext(wav16), ext(wav16.astype(np.float32) / 32768.0))
    assert np.abs(ext(wav16)[:, 5:16] - mel[:, 5:16]).max() < 1e-3  # near the peak, rounding is invisible


class _TinyEncoder(torch.nn.Module):
    """A 50 Hz 'speech encoder': conv with a 400-sample window and 320-sample stride, 12 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 12, 400, stride=320)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv(wav[:, None]).transpose(1, 2),)  # (1, N, 12), as a traced HF model's tuple


def test_pretrained_encoder_from_local_torchscript(tmp_path):
    missing = tmp_path / "wav2vec2.pt"
    with pytest.raises(AssetError) as e:
        make_extractor(S2LConfig(features="pretrained", encoder_path=str(missing)), PreprocessConfig())
    assert str(missing) in str(e.value) and "s2l.encoder_path" in str(e.value)
    bad = tmp_path / "state_dict.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(AssetError, match="not a TorchScript module"):
        PretrainedSpeechEncoder(bad)

    torch.jit.script(_TinyEncoder()).save(str(missing))
    ext = make_extractor(S2LConfig(features="pretrained", encoder_path=str(missing)), PreprocessConfig())
    assert isinstance(ext, PretrainedSpeechEncoder) and (ext.dim, ext.frames_per_video_frame) == (12, 2)
    feats = ext(np.random.default_rng(0).standard_normal(640 * 13).astype(np.float32))
    assert feats.shape == (26, 12) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert isinstance(make_extractor(S2LConfig(features="log_mel"), PreprocessConfig()), LogMelExtractor)
