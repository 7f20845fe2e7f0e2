"""LSE-D / LSE-C by the SyncNet protocol: MFCC, window plumbing, distances, offset sign."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daetalker.errors import DaetalkerError
from daetalker.evaluate.lse import LseResult, lse, lse_from_embeddings, mean_lse, protocol_length
from daetalker.evaluate.mfcc import mfcc, pcm16_units, protocol_mfcc


def reference_signal() -> np.ndarray:
    """1 s of int16 audio: a swept tone with a 3 Hz envelope, a hiss, and 50 ms of digital silence."""
    t = np.arange(16000) / 16000
    chirp = 8000 * np.sin(2 * np.pi * 220 * t * (1 + t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    hiss = 700 * np.sin(2 * np.pi * 5003.7 * t**1.7)
    sig = np.round(chirp + hiss).astype(np.int16)
    sig[:800] = 0
    return sig


# Reference values: python_speech_features 0.6, `mfcc(reference_signal(), 16000)` (defaults),
# computed in a scratch venv; the package is not a dependency of the project.
PSF_SUM = -3503.1543547889632
PSF_ROW_50 = [18.965483878129, -3.974672101267, 24.050530387005, -21.176946647838, -29.875362303364,
              -13.738225822224, -56.643184222657, 17.121238691776, -35.620741432852, 38.556532592941,
              -0.260164695918, 24.500163662895, 12.092132103272]
PSF_ROW_LAST = [19.144294907813, -1.471790138995, 6.188455884279, -44.218145735698, -16.171359572157,
                -33.992581102038, 20.306094924523, 5.181150451243, 36.116460968325, -7.076204212073,
                3.835268096036, -31.19223601155, -4.466624567658]


def test_mfcc_matches_python_speech_features() -> None:
    m = mfcc(reference_signal())
    assert m.shape == (99, 13)  # 25 frames of 640 samples -> 4 * 25 - 1 steps
    assert m.sum() == pytest.approx(PSF_SUM, abs=1e-8)
    np.testing.assert_allclose(m[50], PSF_ROW_50, atol=1e-9)
    np.testing.assert_allclose(m[-1], PSF_ROW_LAST, atol=1e-9)
    # digital silence: energy and filterbank floors at machine eps, c0 = log(eps)
    assert m[0, 0] == pytest.approx(np.log(np.finfo(float).eps))
    np.testing.assert_allclose(m[0, 1:], 0.0, atol=1e-12)


def test_float_audio_is_scaled_to_int16_units_like_wavfile() -> None:
    sig = reference_signal()
    np.testing.assert_array_equal(pcm16_units(sig.astype(np.float32) / 32768.0), sig.astype(np.float64))
    np.testing.assert_allclose(protocol_mfcc(sig / 32768.0), protocol_mfcc(sig), atol=1e-12)
    assert protocol_mfcc(sig).shape == (13, 99)
    with pytest.raises(ValueError, match="mono"):
        pcm16_units(np.zeros((100, 2)))


def test_lse_hand_computed_in_sync() -> None:
    # 1-D embeddings, vshift 1: audio padded to [0, 1, 2, 3, 0].
    # window 0 vs [0,1,2] -> 1,0,1; window 1 vs [1,2,3] -> 1,0,1; window 2 vs [2,3,0] -> 1,0,3
    # D = [1, 0, 5/3]: LSE-D 0, median 1 -> LSE-C 1, argmin j=1 -> offset 1 - 1 = 0.
    r = lse_from_embeddings(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [3.0]]), vshift=1)
    np.testing.assert_allclose(r.dists, [1.0, 0.0, 5.0 / 3.0], atol=2e-6)  # torch's eps 1e-6 on each difference
    assert r.lse_d == pytest.approx(0.0, abs=2e-6)
    assert r.lse_c == pytest.approx(1.0, abs=2e-6)
    assert r.offset == 0 and r.n_windows == 3
    assert r.lse_d0 == r.lse_d and r.lse_c0 == pytest.approx(r.lse_c)  # in sync: offset 0 is the best offset
    assert r.offsets.tolist() == [1, 0, -1]
    assert r.frame_dists.shape == (3, 3)


def test_lse_hand_computed_audio_ahead_gives_positive_offset() -> None:
    # audio window i holds what lip window i + 1 shows: the audio runs one frame ahead.
    # padded audio [0, 2, 3, 4, 0]; lip 1 -> 1,1,2; lip 2 -> 0,1,2; lip 3 -> 0,1,3
    # D = [1/3, 1, 7/3]: argmin j=0 -> offset +1; LSE-D 1/3; LSE-C 1 - 1/3.
    r = lse_from_embeddings(np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [3.0], [4.0]]), vshift=1)
    np.testing.assert_allclose(r.dists, [1 / 3, 1.0, 7 / 3], atol=2e-6)
    assert r.offset == 1
    assert r.lse_d == pytest.approx(1 / 3, abs=2e-6)
    assert r.lse_c == pytest.approx(2 / 3, abs=2e-6)
    # read at offset 0 instead: D(0) = 1, the median -> LSE-C at 0 is 0
    assert r.lse_d0 == pytest.approx(1.0, abs=2e-6) and r.lse_c0 == pytest.approx(0.0, abs=2e-6)
    assert r.as_dict()["lse_d0"] == r.lse_d0 and r.as_dict()["lse_c0"] == r.lse_c0


def test_lse_offset_recovers_a_known_shift_of_embeddings() -> None:
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((80, 16))
    lip = seq[10:60]
    for k in (-7, -1, 0, 3, 15):
        aud = seq[10 + k:60 + k]  # audio window i = lip window i + k: audio ahead by k
        r = lse_from_embeddings(lip, aud)
        assert r.offset == k
        # at the match, windows whose partner i - k lies in the zero padding count ||lip[i]||;
        # the others leave only torch's eps: the protocol keeps both in the mean
        outside = [i for i in range(50) if not 0 <= i - k < 50]
        expected = (sum(np.linalg.norm(lip[i] + 1e-6) for i in outside) + (50 - len(outside)) * 4e-6) / 50
        assert r.lse_d == pytest.approx(expected, abs=1e-9)
        assert r.dists.shape == (31,)
        assert r.lse_c == pytest.approx(np.median(r.dists) - r.dists.min())


def test_lse_from_embeddings_rejects_empty_and_mismatched() -> None:
    with pytest.raises(DaetalkerError, match="window"):
        lse_from_embeddings(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(AssertionError):
        lse_from_embeddings(np.zeros((5, 4)), np.zeros((6, 4)))


class ProbeSyncNet(torch.nn.Module):
    """Embeds window i as (mean of frames i..i+4, mean of the window's 20 c0 values): exposes the slicing."""

    kind = "probe"
    weights_sha256 = "probe-hash"

    def prepare_frames(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames)).float().mean(dim=(1, 2, 3))  # (N,)
        return x[:, None, None, None].expand(-1, 3, 1, 1)

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 5, 1, 1)
        return torch.stack([x[:, 0].mean(dim=(1, 2, 3)), torch.zeros(len(x))], dim=1)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 13, 20)
        return torch.stack([torch.zeros(len(x)), x[:, 0, 0].mean(dim=1)], dim=1)


def test_lse_slices_windows_as_the_protocol() -> None:
    n_frames, samples = 40, 640 * 38 + 100  # audio shorter than video: L = min(40, 38) = 38
    frames = np.repeat(np.arange(n_frames, dtype=np.uint8)[:, None, None, None], 3, axis=3)
    frames = np.broadcast_to(frames, (n_frames, 4, 4, 3)).copy()
    audio = (np.sin(np.arange(samples) * 0.05) * np.linspace(0.01, 0.9, samples)).astype(np.float32)
    model = ProbeSyncNet().eval()
    r = lse(frames, audio, model, vshift=2)
    assert protocol_length(n_frames, samples) == 38 and r.n_windows == 33  # range(0, L - 5)
    c0 = protocol_mfcc(audio)[0]
    lip = np.arange(33) + 2.0  # mean of frames i..i+4
    aud = np.array([c0[4 * i:4 * i + 20].mean() for i in range(33)])
    expected = lse_from_embeddings(np.stack([lip, 0 * lip], 1), np.stack([0 * aud, aud], 1), vshift=2)
    np.testing.assert_allclose(r.dists, expected.dists, rtol=1e-5)
    assert r.weights_sha256 == "probe-hash"
    # reusing the lip embeddings against the same audio gives the same result
    again = lse(torch.from_numpy(np.stack([lip, 0 * lip], 1)).float(), audio, model, vshift=2)
    np.testing.assert_allclose(again.dists, r.dists, rtol=1e-5)
    with pytest.raises(DaetalkerError, match="6 frames"):
        lse(frames[:5], audio, model)


def test_mean_lse_refuses_mixed_weights() -> None:
    a = LseResult(8.0, 2.0, 0, np.r_[np.full(15, 10.0), 8.0, np.full(15, 10.0)], "aaa")
    b = LseResult(6.0, 4.0, -3, np.r_[np.full(12, 10.0), 6.0, 10.0, 10.0, 9.0, np.full(15, 10.0)], "aaa")
    assert mean_lse([a, b]) == {"lse_d": 7.0, "lse_c": 3.0, "lse_d0": 8.5, "lse_c0": 1.5, "av_offset_abs": 1.5,
                                "syncnet_sha256": "aaa", "videos": 2}
    with pytest.raises(AssertionError, match="different SyncNet weights"):
        mean_lse([a, LseResult(6.0, 4.0, 1, np.zeros(31), "bbb")])
    assert a.as_dict()["syncnet_sha256"] == "aaa"
