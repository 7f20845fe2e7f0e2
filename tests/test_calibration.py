"""SyncNet calibration (issue 6): the plumbing on an exact oracle, then trained experts on held-out clips.

The oracle embeds a lip window as the brightness of its 5 frames and an audio window
as the log energy of its 5 frames, on video whose brightness *is* its audio's log
energy: every property must hold exactly, and a model blind to the video must fail
them. The slow tests train the project's SyncNet (small budgets) and score clips it
never saw: synthetic speaker clips (held-out split) and real clips (the rest of every
clip after training on its first half; skipped without $DAETALKER_REAL_CLIPS).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from daetalker.errors import DaetalkerError
from daetalker.evaluate.calibration import (
    HeldOutClip,
    calibrate,
    failures,
    format_recovery,
    format_rows,
    load_heldout,
    margins,
    offset_recovery,
    shift_audio,
    time_split,
    worst_margins,
)
from daetalker.evaluate.mfcc import protocol_mfcc

pytestmark = pytest.mark.usefixtures("torch_threads")  # micro models: one thread (threads only cost)


# ------------------------------------------------------------------ oracle
def frame_energy(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames,) mean protocol c0 (log energy) over each frame's 4 MFCC steps."""
    c0 = protocol_mfcc(audio)[0]
    return np.array([c0[4 * f:4 * f + 4].mean() for f in range(n_frames)])


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-9)


class OracleSyncNet(torch.nn.Module):
    """Lip window -> its 5 brightnesses; audio window -> its 5 per-frame log energies (both centred, unit norm)."""

    kind = "oracle"
    weights_sha256 = "oracle"

    def __init__(self, sees_video: bool = True) -> None:
        super().__init__()
        self.sees_video = sees_video
        self.eval()

    def prepare_frames(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames)).double().mean(dim=(1, 2, 3))  # (N,)
        return x[:, None, None, None].expand(-1, 3, 1, 1)

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        seen = x[:, 0, :, 0, 0] if self.sees_video else torch.arange(5.0).expand(len(x), 5)
        return _unit(seen.double())

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return _unit(x[:, 0, 0].double().reshape(len(x), 5, 4).mean(dim=2))


def oracle_clip(seed: int, n_frames: int = 90) -> HeldOutClip:
    """Speech-like noise with a random loudness per frame; each frame's brightness is that frame's log energy."""
    rng = np.random.default_rng(seed)
    loud = np.repeat(10 ** rng.uniform(-2.5, -0.5, n_frames), 640)
    audio = np.clip(loud * rng.standard_normal(640 * n_frames), -1, 1)
    audio = (audio * 32767).astype(np.int16)
    e = frame_energy(audio, n_frames)
    level = np.round(40 + 180 * (e - e.min()) / (e.max() - e.min()))
    frames = np.broadcast_to(level[:, None, None, None], (n_frames, 4, 4, 3)).astype(np.uint8)
    return HeldOutClip(f"oracle{seed}", frames, audio)


def test_shift_audio_advances_by_whole_frames_and_keeps_length() -> None:
    audio = np.arange(640 * 6)
    ahead = shift_audio(audio, 2)
    assert len(ahead) == len(audio) and ahead[0] == 1280 and ahead[-1] == 1279  # rolled, not cut
    np.testing.assert_array_equal(shift_audio(ahead, -2), audio)


def test_oracle_meets_every_property_and_a_blind_model_fails_them() -> None:
    clips = [oracle_clip(s) for s in range(3)]
    rows = calibrate(OracleSyncNet(), clips)
    recovery = {c.clip_id: offset_recovery(OracleSyncNet(), c) for c in clips}
    assert failures(rows, recovery) == [], format_rows(rows)
    for r in rows:
        own = r.scores["own"]
        assert own.offset == 0 and own.lse_d0 == own.lse_d and own.lse_c0 == pytest.approx(own.lse_c)
        assert r.scores["shift+10"].offset == 10 and r.scores["shift-10"].offset == -10  # lse.py's sign
        assert r.scores["shift+10"].lse_d0 > own.lse_d0 + 0.3
    assert [r.other_clip for r in rows] == ["oracle1", "oracle2", "oracle0"]
    assert all(found == {k: k for k in range(-5, 6)} for found in recovery.values()), format_recovery(recovery)

    blind = OracleSyncNet(sees_video=False)
    rows = calibrate(blind, clips)
    failed = failures(rows, {c.clip_id: offset_recovery(blind, c) for c in clips})
    assert any("own audio at AV offset" in f or "not worse than own" in f for f in failed)
    assert any("reported as AV offset" in f for f in failed)


def test_other_step_picks_whose_audio_is_the_mismatch() -> None:
    clips = [oracle_clip(s, n_frames=40) for s in range(4)]
    rows = calibrate(OracleSyncNet(), clips, other_step=2)
    assert [r.other_clip for r in rows] == ["oracle2", "oracle3", "oracle0", "oracle1"]
    assert failures(rows) == [], format_rows(rows)
    for bad in (0, 4):
        with pytest.raises(ValueError, match="other_step"):
            calibrate(OracleSyncNet(), clips, other_step=bad)


def test_calibration_refuses_too_few_or_too_short_clips() -> None:
    with pytest.raises(DaetalkerError, match=">= 2 held-out clips"):
        calibrate(OracleSyncNet(), [oracle_clip(0)])
    with pytest.raises(DaetalkerError, match="too short to shift by 10"):
        calibrate(OracleSyncNet(), [oracle_clip(0, n_frames=15), oracle_clip(1)])


# ------------------------------------------------------------------ time split
def write_dataset(root: Path, lengths: dict[str, int]) -> Path:
    rows = []
    for k, (cid, n) in enumerate(lengths.items()):
        d = root / "clips" / cid
        d.mkdir(parents=True)
        frames = np.full((n, 8, 8, 3), k, np.uint8) + np.arange(n, dtype=np.uint8)[:, None, None, None]
        np.save(d / "frames.npy", frames)  # frame i of clip k: k + i everywhere
        sf.write(d / "audio.wav", (np.arange(640 * n) % 1000).astype(np.int16), 16000, subtype="PCM_16")
        rows.append({"clip_id": cid, "n_frames": n, "split": "train", "resolution": 8})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


def test_time_split_trains_on_heads_and_holds_out_tails(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", {"b": 41, "a": 30})
    out = time_split(data, tmp_path / "split", train_fraction=0.5)
    m = pd.read_parquet(out / "manifest.parquet")
    assert m[["clip_id", "split", "n_frames"]].values.tolist() == [
        ["a-head", "train", 15], ["a-tail", "test", 15], ["b-head", "train", 20], ["b-tail", "test", 21]]
    tail = load_heldout(out, ("test",))
    assert [c.clip_id for c in tail] == ["a-tail", "b-tail"]
    whole = np.load(data / "clips" / "b" / "frames.npy")
    np.testing.assert_array_equal(tail[1].frames, whole[20:])
    audio, _ = sf.read(data / "clips" / "b" / "audio.wav", dtype="int16")
    np.testing.assert_array_equal(tail[1].audio, audio[640 * 20:])  # the tail's sound stays on the tail's frames
    with pytest.raises(DaetalkerError, match="cannot be split"):
        time_split(write_dataset(tmp_path / "short", {"c": 10}), tmp_path / "split2", train_fraction=0.5)
    with pytest.raises(DaetalkerError, match="no clips in split"):
        load_heldout(out, ("val",))


# ------------------------------------------------------------------ trained experts
# A SyncNet small enough for CI (2 cores): the tiny profile's recipe at a quarter of its size.
SMALL = ["syncnet.lip_height=16", "syncnet.lip_width=32", "syncnet.lip_channels=[16,32,32]",
         "syncnet.audio_channels=[16,32,32]", "syncnet.embed_dim=64", "syncnet.max_steps=300",
         "syncnet.eval_every=0", "syncnet.mlflow=false"]
# The synthetic-speaker expert (docs/evaluation.md, "Stability of the calibration test"): lr 1e-3 leaves
# this net at chance (loss 0.69) for 200..600+ steps depending on the seed, or for good at 2e-3; 3e-4
# leaves the plateau by step ~200 on every seed measured. 0.5 min of speech (2 training clips)
# was too little to generalise from (held-out pair accuracy 0.58-0.61); 2 minutes (10 clips) is not.
SYNTH_RECIPE = SMALL + ["syncnet.lr=3e-4", "syncnet.max_steps=800"]
SYNTH_MINUTES = 2.0

# Knobs of bench/stability.py (defaults: what CI runs). Every trained expert is checked under two
# training seeds in the suite; the script adds torch threads, more seeds and other corpora.
TEST_SEEDS = [int(s) for s in os.environ.get("DAETALKER_TEST_SEEDS", "0,1").split(",")]
CORPUS_SEED = int(os.environ.get("DAETALKER_TEST_CORPUS_SEED", "3"))

# Margins the synthetic expert must clear (the measured worst case over seeds x threads x corpora
# is in docs/evaluation.md; each bar leaves at least 2x room below it):
MIN_LSE_C_OWN = 0.10  # own LSE-C: the sync dip itself (the failing run on issue 14 had 0.020)
MIN_LSE_C_RATIO = 2.0  # own LSE-C >= 2 x another clip's LSE-C
MIN_PEAK_GAP = 0.005  # min_{k != 0} D(k) - D(0) of the own audio: offset 0 wins by this much
MIN_LSE_D_GAP = 0.10  # another clip's LSE-D - own LSE-D
MIN_D0_GAP_SHIFT = 0.10  # D(0) of audio shifted by +-10 frames - own D(0)
MAX_C0_SHIFT_SHARE = 0.5  # C(0) of shifted audio <= half of own LSE-C


@pytest.fixture(scope="module")
def torch_threads(one_torch_thread: None) -> int:
    """One thread (conftest), unless $DAETALKER_TEST_THREADS asks for more (bench/stability.py)."""
    n = int(os.environ.get("DAETALKER_TEST_THREADS", "1"))
    torch.set_num_threads(n)
    return n


def record_margins(test: str, seed: int, figures: dict, **extra) -> None:
    """Append this run's margin figures to $DAETALKER_MARGINS_OUT (JSON lines) when set."""
    path = os.environ.get("DAETALKER_MARGINS_OUT")
    if path:
        row = {"test": test, "seed": seed, "threads": torch.get_num_threads(), **extra, **figures}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def train_and_calibrate(data: Path, splits: tuple[str, ...], out: Path, overrides: list[str] = SMALL,
                        other_half_away: bool = False):
    """Train an expert, then calibrate it; ``other_half_away``: each video's mismatched audio is the clip half
    the list away, not the next one (for templated sentences, where neighbours are near-duplicates)."""
    from daetalker.config import load_config
    from daetalker.evaluate.syncnet import load_syncnet
    from daetalker.evaluate.syncnet_train import train_syncnet

    result = train_syncnet(data, out, load_config("tiny", None, overrides).syncnet, progress=False)
    model = load_syncnet(result.checkpoint)
    clips = load_heldout(data, splits)
    rows = calibrate(model, clips, other_step=len(clips) // 2 if other_half_away else 1)
    return result, rows, {c.clip_id: offset_recovery(model, c) for c in clips}


@pytest.fixture(scope="module")
def synthetic_speaker(tmp_path_factory: pytest.TempPathFactory, torch_threads: int) -> Path:
    """The preprocessed synthetic corpus (SYNTH_MINUTES, CORPUS_SEED), shared by the seeds."""
    from daetalker.config import load_config
    from daetalker.config.synth import SynthConfig
    from daetalker.data.preprocess import preprocess_dataset
    from daetalker.synth.corpus import synth_corpus

    root = tmp_path_factory.mktemp("synthetic-speaker")
    synth_corpus(root / "src", minutes=SYNTH_MINUTES, seed=CORPUS_SEED, cfg=SynthConfig(size=128), progress=False)
    preprocess_dataset(root / "src", root / "data", load_config("tiny").preprocess, workers=1)
    return root / "data"


@pytest.mark.slow
@pytest.mark.parametrize("seed", TEST_SEEDS)
def test_synthetic_speaker_heldout_clips_are_calibrated(synthetic_speaker: Path, seed: int, tmp_path: Path) -> None:
    """Trained on the corpus' train split, scored on val + test: every property holds with room.

    Exactly, not +-1: own audio at offset 0, audio shifted by +-10 found at +-10 and
    audio rolled by k = -5..5 at k. The expert guarantees this because the own audio's
    D(0) undercuts every other offset by >= MIN_PEAK_GAP (measured worst 0.013, 2.6x
    room), and a roll only moves that dip. Beyond the signs that ``failures`` checks,
    the sizes are asserted (MIN_*/MAX_* above): a verdict that only holds by 0.001
    flips with the CPU's kernels and thread count, as this test did on issue 14 (0.5 min
    corpus, lr 1e-3, 300 steps: own LSE-C 0.020 vs 0.021 for another clip's audio).
    """
    t0 = time.perf_counter()
    result, rows, recovery = train_and_calibrate(synthetic_speaker, ("val", "test"), tmp_path / "syncnet",
                                                 SYNTH_RECIPE + [f"syncnet.seed={seed}"])
    per_clip = margins(rows, recovery)
    worst = worst_margins(per_clip)
    record_margins("synthetic_speaker", seed, worst, corpus_seed=CORPUS_SEED, clips=len(rows),
                   accuracy={s: m["accuracy"] for s, m in result.heldout.items()},
                   seconds=round(time.perf_counter() - t0, 1))
    table = (format_rows(rows) + "\n" + format_recovery(recovery) + "\nworst margins: "
             + ", ".join(f"{k} {v:.3f}" for k, v in worst.items()))
    assert len(rows) >= 2 and all(r.scores["own"].weights_sha256 == result.sha256 for r in rows)
    assert failures(rows, recovery, tolerance=0) == [], table
    assert worst["lse_c_own"] >= MIN_LSE_C_OWN, table
    assert worst["lse_c_ratio"] >= MIN_LSE_C_RATIO, table
    assert worst["peak_gap"] >= MIN_PEAK_GAP, table
    assert worst["lse_d_gap"] >= MIN_LSE_D_GAP, table
    assert worst["d0_gap_shift"] >= MIN_D0_GAP_SHIFT, table
    assert worst["c0_shift_share"] <= MAX_C0_SHIFT_SHARE, table


@pytest.mark.slow
@pytest.mark.real_clips
def test_real_clips_scored_on_frames_the_expert_never_saw(real_clips: Path, tmp_path: Path) -> None:
    """Trained on the first half of every real clip, scored on the second halves.

    The scoring must run cleanly on real footage. The calibration properties are a
    known failure (docs/evaluation.md): from 9 s of five speakers the expert learns
    who speaks, not when; even 6000 steps calibrate one video of five. The test is
    xfailed on that, and fails the day they hold, so the docs and this test get updated.
    """
    from daetalker.config import load_config
    from daetalker.data.preprocess import preprocess_dataset

    preprocess_dataset(real_clips, tmp_path / "data", load_config("tiny").preprocess, workers=1)
    split = time_split(tmp_path / "data", tmp_path / "split", train_fraction=0.5)
    result, rows, recovery = train_and_calibrate(split, ("test",), tmp_path / "syncnet")
    assert len(rows) == 5 and all(r.clip_id.endswith("-tail") for r in rows)
    for r in rows:
        assert set(r.scores) == {"own", "shift+10", "shift-10", "other"} and r.other_clip != r.clip_id
        for s in r.scores.values():
            assert s.weights_sha256 == result.sha256 and s.n_windows > 2 * 10
            assert np.isfinite([s.lse_d, s.lse_c, s.lse_d0, s.lse_c0]).all()
            assert s.lse_d0 == s.dists[15] and s.lse_d == s.dists.min()
    assert set(recovery) == {r.clip_id for r in rows}
    failed = failures(rows, recovery)
    assert failed, "the expert now calibrates on real clips: assert it here and update docs/evaluation.md"
    pytest.xfail(f"{len(failed)} calibration properties fail on held-out real clips, e.g. {failed[0]}")


# ------------------------------------------------------------------ grid-s1: a real speaker
# The grid-s1 expert (docs/real-speaker.md, "The lip-sync expert"): the tiny profile's net on the 305
# training sentences. At the profile's lr 1e-3 it stays at chance for 600 steps (held-out pair accuracy
# 0.55, the plateau of the synthetic recipe above); at 3e-4 for 2000 steps it reaches 0.85-0.87.
GRID_RECIPE = ["preprocess.edge_silence_keep_s=0.3", "syncnet.lr=3e-4", "syncnet.max_steps=2000",
               "syncnet.eval_every=0", "syncnet.mlflow=false"]
GRID_SEEDS = [int(s) for s in os.environ.get("DAETALKER_TEST_GRID_SEEDS", "0").split(",")]
# Recorded out of sync, not mis-scored: every expert trained here puts this sentence's own audio at offset
# +5..+6 and each roll by k at that + k, and its mouth opening, aligned on the corpus' word timings, lags
# the other "set red ..." sentences' by 5 frames (docs/real-speaker.md). Found there +- 1.
OFF_SYNC = {"srbu7s": 6}
# The other sentences are in sync within this many frames: their own audio's D(k) dips between two offsets
# for a few (bbbz9s: -1 or -2, whichever the seed picks; a tolerance of 1 around 0 fails it on one seed).
MAX_RECORDING_OFFSET = 2
GRID_MIN_ACCURACY = 0.75  # held-out pair accuracy (in sync vs off sync); measured 0.82-0.87


def grid_verdict(rows, recovery) -> tuple[list[str], dict[str, int]]:
    """The grid-s1 properties that fail, and each held-out video's sync point (its anchor).

    Every property of ``failures`` (+- 1 frame), read from each recording's own sync
    point: where the expert finds its own audio, which must be within MAX_RECORDING_OFFSET
    of 0 (of the documented offset +- 1 for OFF_SYNC)."""
    own = {r.clip_id: r.scores["own"].offset for r in rows}
    expected = {cid: OFF_SYNC.get(cid[:6], 0) for cid in own}
    bound = {cid: 1 if cid[:6] in OFF_SYNC else MAX_RECORDING_OFFSET for cid in own}
    failed = [f"{cid}: own audio at AV offset {o}, not {expected[cid]} +- {bound[cid]}"
              for cid, o in own.items() if abs(o - expected[cid]) > bound[cid]]  # fmt: skip
    return failed + failures(rows, recovery, anchors=own), own


@pytest.fixture(scope="module")
def grid_speaker(grid_s1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """grid-s1 preprocessed as `speaker add` does it for the docs: 128 px, the edge silence cut to 0.3 s."""
    from daetalker.config import load_config
    from daetalker.data.preprocess import preprocess_dataset

    data = tmp_path_factory.mktemp("grid-s1") / "data"
    preprocess_dataset(grid_s1 / "video", data, load_config("tiny", None, GRID_RECIPE).preprocess, workers=2)
    return data


@pytest.mark.slow
@pytest.mark.real_speakers
@pytest.mark.parametrize("seed", GRID_SEEDS)
def test_grid_s1_expert_is_calibrated_on_every_heldout_sentence(grid_speaker: Path, seed: int,
                                                                 tmp_path: Path) -> None:
    """Trained on grid-s1's training sentences, scored on the 90 held-out ones it never saw.

    Every held-out video, from its sync point a (its own audio's offset: |a| <= 2, or the
    documented offset of the one sentence recorded out of sync): audio shifted by +-10
    frames found at a +- 10 (+- 1) and worse at a; another sentence's audio worse on LSE-D,
    LSE-C and at a; rolls by k = -5..5 read back as a + k +- 1. Margins and the issue's
    literal bar (around offset 0) are recorded for docs/real-speaker.md.

    The other sentence is the one 45 places on in clip-id order: the next one shares all
    but two words ("bin blue by s five soon", "bin blue by z nine soon") and its timing, and
    on one machine of this kind an expert ranked that near-duplicate's audio 0.004 ahead of
    bbbs5s's own. Half the list away, the worst margins measured were LSE-D 0.084, LSE-C
    1.20x and D at a 0.15 (seed 0 on 2 threads and seed 1 on 1 thread, AMD EPYC).
    """
    threads, train_threads = torch.get_num_threads(), int(os.environ.get("DAETALKER_TEST_THREADS", "2"))
    torch.set_num_threads(train_threads)  # 2000 steps: two threads pay here
    try:
        result, rows, recovery = train_and_calibrate(grid_speaker, ("val", "test"), tmp_path / "syncnet",
                                                     GRID_RECIPE + [f"syncnet.seed={seed}"], other_half_away=True)
    finally:
        torch.set_num_threads(threads)
    failed, anchors = grid_verdict(rows, recovery)
    worst = worst_margins(margins(rows, recovery))
    record_margins("grid_s1", seed, worst, threads=train_threads, clips=len(rows), failed=failed, anchors=anchors,
                   strict_failures=failures(rows, recovery),  # the bar read around offset 0
                   accuracy={s: m["accuracy"] for s, m in result.heldout.items()})
    assert len(rows) == 90 and sum(cid[:6] in OFF_SYNC for cid in anchors) == len(OFF_SYNC)
    assert failed == [], "\n".join(failed[:20])
    assert min(m["accuracy"] for m in result.heldout.values()) >= GRID_MIN_ACCURACY, result.heldout
