"""The synthetic speaker corpus: determinism, timing, lip-sync ground truth, face models, CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daetalker.config import load_config
from daetalker.config.synth import SynthConfig
from daetalker.errors import ConfigError
from daetalker.synth.corpus import COLUMNS, make_clip, render_clip, speaker_for, write_labels, write_wav
from daetalker.synth.face_render import FaceRenderer, FrameState
from daetalker.synth.motion import blink_track
from daetalker.synth.speech import is_pause, synthesize
from daetalker.synth.visemes import VISEMES, phoneme_visemes, segments_from_phonemes

CFG = SynthConfig(size=128, clip_seconds=2.5)
SEED = 5  # its first clip has bilabials and open vowels


@pytest.fixture(scope="module")
def clip():
    return make_clip(CFG, seed=SEED, index=0, target_seconds=2.5)


@pytest.fixture(scope="module")
def frames(clip):
    return render_clip(clip, speaker_for(SEED), CFG.size)


def test_espeak_gives_speech_and_ordered_phoneme_times():
    utt = synthesize("Bob made a blue boat.", rate_wpm=160, pitch=50)
    assert utt.sample_rate == 22050
    seconds = len(utt.samples) / utt.sample_rate
    assert 0.8 < seconds < 3.0
    assert np.abs(utt.samples).max() > 3000  # audible, not silence
    times = [t for t, _ in utt.phonemes]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= seconds + 0.01
    names = [n for _, n in utt.phonemes if not is_pause(n)]
    visemes = [phoneme_visemes(n)[0] for n in names]
    assert visemes.count("PP") >= 4  # b, m, b, b
    assert "U" in visemes  # the 'u:' of blue


def test_viseme_segments_tile_the_clip():
    segs = segments_from_phonemes([(0.1, "b"), (0.2, "aI"), (0.5, "_:")], end_s=1.0)
    assert segs[0] == (0.0, 0.1, "sil")
    assert [s[2] for s in segs] == ["sil", "PP", "aa", "I", "sil"]  # diphthong split in halves
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(segs, segs[1:]))
    assert segs[-1][1] == 1.0


def test_same_seed_same_clip_bytes_and_frames(clip, frames, tmp_path):
    again = make_clip(CFG, seed=SEED, index=0, target_seconds=2.5)
    assert clip.audio.tobytes() == again.audio.tobytes()
    pd.testing.assert_frame_equal(clip.labels(), again.labels())
    for run, c in enumerate((clip, again)):
        write_wav(tmp_path / f"a{run}.wav", c.audio, CFG.sample_rate)
        write_labels(tmp_path / f"a{run}.parquet", c.labels())
    assert (tmp_path / "a0.wav").read_bytes() == (tmp_path / "a1.wav").read_bytes()
    assert (tmp_path / "a0.parquet").read_bytes() == (tmp_path / "a1.parquet").read_bytes()
    assert np.array_equal(frames[:20], render_clip(again, speaker_for(SEED), CFG.size)[:20])


def test_different_seed_or_clip_differs(clip, frames):
    other = make_clip(CFG, seed=SEED + 1, index=0, target_seconds=2.5)
    n = min(len(other.audio), len(clip.audio))
    assert not np.array_equal(other.audio[:n], clip.audio[:n])
    assert not np.allclose(other.motion.yaw[:10], clip.motion.yaw[:10])
    assert not np.array_equal(render_clip(other, speaker_for(SEED + 1), CFG.size)[0], frames[0])
    next_clip = make_clip(CFG, seed=SEED, index=1, target_seconds=2.5)
    assert next_clip.sentences != clip.sentences


def test_frame_count_matches_audio_and_labels(clip, frames):
    seconds = len(clip.audio) / CFG.sample_rate
    assert abs(len(frames) - round(seconds * CFG.fps)) <= 1
    assert frames.shape[1:] == (128, 128, 3) and frames.dtype == np.uint8
    lab = clip.labels()
    assert tuple(lab.columns) == COLUMNS and len(lab) == len(frames)
    assert lab["frame"].tolist() == list(range(len(lab)))
    assert np.allclose(lab["time_s"], lab["frame"] / 25.0)
    assert set(lab["viseme"]) <= set(VISEMES)
    assert lab["mouth_open"].between(0, 1).all() and lab["blink"].between(0, 1).all()


def test_mouth_follows_the_audio(clip):
    lab = clip.labels()
    energy = np.sqrt((clip.audio.astype(np.float64).reshape(len(lab), -1) ** 2).mean(axis=1))
    r = np.corrcoef(lab["mouth_open"], energy)[0, 1]
    assert r >= 0.5, r
    # silences at least 2 frames away from speech: lips together
    voiced = lab["voiced"].to_numpy()
    near = np.convolve(voiced.astype(float), np.ones(5), mode="same") > 0
    quiet = ~near
    assert quiet.sum() >= 5  # clips start and end in silence
    assert lab["mouth_open"][quiet].max() < 0.02
    # open vowels open the mouth far more than bilabials
    by = lab.groupby("viseme")["mouth_open"].mean()
    assert by["aa"] > 0.35 and by["PP"] < 0.3 * by["aa"] and by["sil"] < 0.01


def test_head_moves_smoothly_and_more_while_speaking():
    c = make_clip(SynthConfig(clip_seconds=12.0), seed=5, index=0, target_seconds=12.0)
    yaw, pitch, roll = c.motion.yaw, c.motion.pitch, c.motion.roll
    assert 2.0 < yaw.std() < 15.0 and 1.0 < pitch.std() < 10.0 and 0.5 < roll.std() < 8.0
    assert np.abs(np.diff(yaw)).max() < 3.0  # degrees per frame: no jumps
    speed = np.abs(np.diff(yaw)) + np.abs(np.diff(pitch))
    v = c.mouth.voiced[1:]
    assert speed[v].mean() > speed[~v].mean()


def test_blinks_are_poisson_at_the_configured_rate():
    rng = np.random.default_rng(0)
    b = blink_track(rng, 25 * 600, 25, per_minute=15.0)  # 10 minutes
    onsets = int((np.diff((b > 0.5).astype(int)) == 1).sum())
    assert 110 <= onsets <= 190  # 150 expected, Poisson sd ~12
    assert b.min() == 0.0 and b.max() <= 1.0


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="size"):
        load_config("tiny", overrides=["synth.size=33"])
    with pytest.raises(ConfigError, match="rate_wpm"):
        load_config("tiny", overrides=["synth.rate_wpm=[500, 600]"])


def test_head_box_never_crops_the_head():
    """Rendering only inside the projected head box equals rendering the whole frame."""
    renderer = FaceRenderer(speaker_for(1), 64)
    for pose in ((35, 20, 15), (-35, -20, -15), (30, -20, 10), (0, 20, 0)):
        st = FrameState(*pose, opening=1.0, spread=0.0, blink=0.0, gaze=(0.0, 0.0), sway=(0.5, -0.5, 0.5))
        boxed = renderer.render(st)
        renderer._head_box = lambda R, T: (0, 64, 0, 64)
        full = renderer.render(st)
        del renderer._head_box
        assert np.array_equal(boxed, full), pose


@pytest.mark.slow
def test_face_models_find_the_face_and_track_mouth_and_yaw():
    """BlazeFace must see the face in every frame; Face Mesh must follow mouth and yaw."""
    from daetalker.face.detector import FaceDetector
    from daetalker.face.mesh import FaceMesh, mouth_opening

    det, mesh = FaceDetector(), FaceMesh()
    renderer = FaceRenderer(speaker_for(11), 128)
    rng = np.random.default_rng(0)
    truth, measured = [], []
    for _ in range(48):
        st = FrameState(yaw=rng.uniform(-25, 25), pitch=rng.uniform(-8, 8), roll=rng.uniform(-8, 8),
                        opening=rng.uniform(0, 1), spread=rng.uniform(-1, 1), blink=0.0,
                        gaze=(0.0, 0.0), sway=(0.0, 0.0, 0.0))
        rgb = renderer.render(st)
        found = det.detect(rgb)
        assert found, st
        lm, presence = mesh.from_detection(rgb, found[0])
        assert presence > 0.9
        width = np.linalg.norm(lm[234, :2] - lm[454, :2])
        nose = (lm[1, 0] - (lm[234, 0] + lm[454, 0]) / 2) / width
        truth.append((st.opening, st.yaw))
        measured.append((mouth_opening(lm), nose))
    t, m = np.array(truth), np.array(measured)
    assert np.corrcoef(t[:, 0], m[:, 0])[0, 1] >= 0.8
    assert np.corrcoef(t[:, 1], m[:, 1])[0, 1] >= 0.95


def _probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,pix_fmt,r_frame_rate,nb_frames",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


@pytest.mark.slow
def test_cli_writes_a_corpus(tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from daetalker.cli import app

    out = tmp_path / "corpus"
    args = ["synth", "--out", str(out), "--minutes", "0.1", "--seed", "1", "--size", "64",
            "--set", "synth.clip_seconds=2"]
    res = CliRunner().invoke(app, args)  # with its progress bar, which the last clip's whole sentence overruns
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "corpus.json").read_text())
    assert manifest["seed"] == 1 and manifest["size"] == 64 and manifest["config"]["size"] == 64
    assert manifest["total_seconds"] > 6.0 and len(manifest["clips"]) >= 2
    for entry in manifest["clips"]:
        streams = _probe(out / entry["video"])
        v, a = streams["video"], streams["audio"]
        assert (v["codec_name"], v["pix_fmt"], v["r_frame_rate"]) == ("h264", "yuv420p", "25/1")
        assert a["codec_name"] == "aac"
        wav, sr = sf.read(out / entry["audio"], dtype="int16")
        assert sr == 16000 and wav.ndim == 1
        n = int(v["nb_frames"])
        assert abs(n - round(len(wav) / sr * 25)) <= 1
        assert len(pd.read_parquet(out / entry["labels"])) == n == entry["frames"]
    # the same arguments again: every file hashes as recorded, so nothing is rewritten
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert CliRunner().invoke(app, args).exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    # a damaged clip is noticed: the corpus is written again, byte-identical to the first
    first = (out / manifest["clips"][0]["video"]).read_bytes()
    (out / manifest["clips"][0]["video"]).write_bytes(first[:100])
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (out / manifest["clips"][0]["video"]).read_bytes() == first
    # a rerun with fewer clips leaves no stale clip behind
    res = CliRunner().invoke(app, args[:4] + ["0.01"] + args[5:])
    assert res.exit_code == 0, res.output
    names = {e["video"] for e in json.loads((out / "corpus.json").read_text())["clips"]}
    assert {p.name for p in out.glob("*.mp4")} == names
