"""Preprocessing: units (layout, crop, segments, pose, audio, timeline) and the acceptance
runs on the real clips ($DAETALKER_REAL_CLIPS) and on the synthetic speaker."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from daetalker.config import load_config
from daetalker.data import dataset as ds
from daetalker.data.face_crop import FaceLog, FrameFaces, crop_box, pick_speaker, split_segments, visible_fraction
from daetalker.data.head_pose import camera_matrix, head_pose, project_model, MODEL_INDEX


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-nostdin", "-y", *args], check=True)


# ------------------------------------------------------------------ layout
def test_npy_writer_streams_rows_that_np_load_memory_maps(tmp_path):
    p = tmp_path / "a.npy"
    data = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    with ds.NpyWriter(p, data.shape, np.uint8) as w:
        w.write(data[0])  # one row
        w.write(data[1:5])  # a block
    back = np.load(p, mmap_mode="r")
    assert isinstance(back, np.memmap) and back.shape == (5, 4, 4, 3)
    assert np.array_equal(back, data)
    with pytest.raises(ValueError, match="wrote 1 rows, header says 2"):
        with ds.NpyWriter(tmp_path / "b.npy", (2, 3), np.float32) as w:
            w.write(np.zeros(3, np.float32))


def test_tables_are_byte_stable_and_unchanged_files_keep_their_mtime(tmp_path):
    df = pd.DataFrame({"clip_id": ["b", "a"], "n_frames": [3, 4]})
    p = tmp_path / "t.parquet"
    ds.write_table(df, p)
    first, mtime = p.read_bytes(), p.stat().st_mtime_ns
    ds.write_table(df.copy(), p)
    assert p.read_bytes() == first and p.stat().st_mtime_ns == mtime
    ds.write_table(df.assign(n_frames=[3, 5]), p)
    assert p.read_bytes() != first
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind


def test_clip_ids_are_ascii_slugs_with_content_hash():
    sha = "ab12cd34" + "0" * 56
    assert ds.clip_id("sub/Vidéo 1 (final) ÄÖ.mp4", sha, 2) == "video-1-final-ao-ab12cd34-s2"
    assert ds.clip_id("日本語.mov", sha, 0) == "clip-ab12cd34-s0"


def test_splits_are_deterministic_by_source_and_match_the_fractions():
    shas = [f"{i:064x}" for i in range(3000)]
    splits = [ds.assign_split(s, 0.1, 0.2, seed=0) for s in shas]
    assert splits == [ds.assign_split(s, 0.1, 0.2, seed=0) for s in shas]
    share = {k: splits.count(k) / len(splits) for k in ("train", "val", "test")}
    assert abs(share["val"] - 0.1) < 0.02 and abs(share["test"] - 0.2) < 0.025
    assert [ds.assign_split(s, 0.1, 0.2, seed=1) for s in shas] != splits


def test_small_datasets_still_get_a_val_and_a_test_source():
    shas = [f"{i:064x}" for i in range(200)]
    train = [s for s in shas if ds.assign_split(s, 0.1, 0.1, 0) == "train"][:4]
    splits = ds.assign_splits(train, 0.1, 0.1, 0)
    by_draw = sorted(train, key=lambda s: ds.split_draw(s, 0))
    assert [splits[s] for s in by_draw] == ["test", "val", "train", "train"]
    assert set(ds.assign_splits(train[:2], 0.1, 0.1, 0).values()) == {"train"}  # too few to split
    assert ds.assign_splits(shas, 0.1, 0.1, 0) == {s: ds.assign_split(s, 0.1, 0.1, 0) for s in shas}


# ------------------------------------------------------------------ crop and segments
def _frames(boxes: list[list[list[float]]]) -> list[FrameFaces]:
    out = []
    for frame in boxes:
        if not frame:
            out.append(FrameFaces.empty())
            continue
        b = np.array(frame, np.float32)
        kps = np.repeat(((b[:, :2] + b[:, 2:]) / 2)[:, None], 6, axis=1)
        out.append(FrameFaces(b, np.full(len(b), 0.9, np.float32), kps))
    return out


def _faces(boxes: list[list[list[float]]]) -> FaceLog:
    return FaceLog.of(_frames(boxes))


def test_speaker_is_the_largest_present_face_and_others_are_counted():
    big, small = [100, 100, 200, 200], [400, 50, 440, 90]
    frames = [[big, small] if i % 2 else [small, big] for i in range(40)]
    frames[10] = [small]  # the speaker missed once: the small face must not fill in
    sp = pick_speaker(_faces(frames))
    assert np.allclose(sp.boxes[0], big) and np.isnan(sp.boxes[10, 0])
    assert sp.found.sum() == 39 and sp.n_faces.max() == 2


def test_face_log_grows_and_keeps_the_true_face_count():
    crowd = [[10 * i, 0, 10 * i + 8, 8] for i in range(6)]
    log = FaceLog(capacity=1)
    for frame in _frames([crowd, [], crowd[:1]] * 5):
        log.append(frame)
    assert len(log) == 15 and list(log.n_faces[:3]) == [6, 0, 1]
    assert log[0].boxes.shape == (FaceLog.K, 4) and log[1].boxes.shape == (0, 4)
    assert np.array_equal(log[14].boxes, [crowd[0]])


def test_a_cut_to_another_shot_continues_the_speaker_and_starts_a_segment():
    a, b = [100, 100, 200, 200], [500, 300, 620, 420]
    frames = [[a]] * 30 + [[]] * 3 + [[b]] * 30
    sp = pick_speaker(_faces(frames))
    assert sp.found.sum() == 60
    segs = split_segments(sp.boxes, max_motion=1.0)
    assert segs == [(0, 33), (33, 63)]


def test_slow_head_motion_stays_one_segment_with_one_box_containing_all_faces():
    boxes = np.array([[100 + t, 100, 200 + t, 200] for t in range(0, 60)], np.float32)
    boxes[5] = np.nan
    segs = split_segments(boxes, max_motion=1.0)
    assert segs == [(0, 60)]
    x0, y0, size = crop_box(boxes, margin=0.45, lift=0.15)
    # union 159 x 100 px, face 100 px: side 159 + 2 * 0.45 * 100, centre (179.5, 150 - 15), all even
    assert (x0, y0, size) == (56, 12, 248)
    ok = boxes[~np.isnan(boxes[:, 0])]
    assert x0 <= ok[:, 0].min() and ok[:, 2].max() <= x0 + size
    assert y0 <= ok[:, 1].min() and ok[:, 3].max() <= y0 + size
    assert visible_fraction(-50, 0, 100, 200, 200) == 0.5


# ------------------------------------------------------------------ pose
@pytest.mark.parametrize("angles", [(0, 0, 0), (25, -10, 5), (-30, 15, -12), (5, 20, 20)])
def test_head_pose_recovers_posed_model(angles):
    cam = camera_matrix(600.0, 128.0, 128.0)
    lm = np.zeros((468, 3), np.float32)
    lm[MODEL_INDEX, :2] = project_model(*angles, cam)
    assert np.allclose(head_pose(lm, cam), angles, atol=0.05)
    rng = np.random.default_rng(0)
    lm[MODEL_INDEX, :2] += rng.normal(0, 0.5, (len(MODEL_INDEX), 2))  # half-pixel landmark noise
    assert np.allclose(head_pose(lm, cam), angles, atol=3.0)


# ------------------------------------------------------------------ audio
def test_audio_is_normalised_and_mel_equals_log_mel_of_the_written_wav(tmp_path):
    from daetalker.data.audio_features import measure_loudness, mel_params, write_audio_and_mel
    from daetalker.features.log_mel import log_mel

    cfg = load_config("tiny").preprocess
    rng = np.random.default_rng(0)
    n = 640 * 1700  # 68 s: several 10 s chunks and a ragged end
    t = np.arange(n + 3200) / 16000
    x = (0.02 * np.sin(2 * np.pi * 220 * t) * (1 + rng.standard_normal(len(t)) * 0.1)).astype(np.float32)
    raw = tmp_path / "a.f32"
    raw.write_bytes(x.tobytes())
    loud = measure_loudness(raw, cfg, 0, n)
    assert loud.level_dbfs == pytest.approx(20 * np.log10(0.02 / np.sqrt(2)), abs=0.3)
    assert loud.gain_db == pytest.approx(cfg.target_lufs - loud.level_dbfs, abs=1e-3) and not loud.silent
    write_audio_and_mel(raw, 1600, n, loud.gain_db, tmp_path / "a.wav", tmp_path / "m.npy", cfg)
    wav, sr = sf.read(tmp_path / "a.wav", dtype="int16")
    assert sr == 16000 and wav.shape == (n,)
    assert 20 * np.log10(np.sqrt(np.mean((wav / 32768.0) ** 2))) == pytest.approx(cfg.target_lufs, abs=0.3)
    mel = np.load(tmp_path / "m.npy")
    assert mel.shape == (4 * 1700, 80)
    assert np.array_equal(mel, log_mel(wav, **mel_params(cfg)))  # chunking changes nothing
    silent = tmp_path / "s.f32"
    silent.write_bytes((1e-5 * rng.standard_normal(16000)).astype(np.float32).tobytes())
    s = measure_loudness(silent, cfg)
    assert s.silent and s.gain_db == 0.0


def test_edge_silence_is_cut_to_the_kept_margin_above_a_noise_floor():
    from daetalker.data.audio_features import speech_span

    rng = np.random.default_rng(0)
    levels = -40 + 2 * rng.standard_normal(80)  # camera noise
    levels[20:60] = -12 + 3 * rng.standard_normal(40)  # a sentence
    levels[35:38] = -38  # a pause inside it is kept
    levels[5] = -3  # a click is not speech
    assert speech_span(levels, 8) == (12, 68)
    assert speech_span(levels, 0) == (20, 60)
    assert speech_span(levels, 30) == (0, 80)  # the margin never reaches past the segment
    assert speech_span(-40 + 2 * rng.standard_normal(80), 8) == (0, 80)  # no contrast: nothing to cut
    assert speech_span(np.full(3, -20.0), 8) == (0, 3)


# ------------------------------------------------------------------ timeline
@pytest.mark.parametrize("rate", ["30", "vfr"])
def test_frames_and_audio_share_one_25fps_timeline(tmp_path, rate):
    """A flash and a beep at t = 1.2 .. 1.4 s land on frames 30..34 and samples 19200..22400."""
    from daetalker.data.ingest import extract_audio, iter_frames
    from daetalker.data.probe import probe

    src = tmp_path / f"flash_{rate}.mp4"
    video = "color=black:s=64x48:r=30:d=3,drawbox=w=64:h=48:c=white:t=fill:enable='between(t,1.2,1.39)'"
    args = []
    if rate == "vfr":  # 30 fps for 1 s, then 12.5 fps; the flash frames keep their times
        video = ("color=black:s=64x48:r=50:d=3,drawbox=w=64:h=48:c=white:t=fill:enable='between(t,1.2,1.39)',"
                 "select='lt(t,1)+not(mod(n,4))',setpts=PTS")
        args = ["-fps_mode", "vfr"]
    beep = "aevalsrc='if(between(t,1.2,1.4),0.5*sin(2*PI*1000*t),0)':s=44100:d=3"
    ffmpeg("-f", "lavfi", "-i", video, "-f", "lavfi", "-i", beep, *args, "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", str(src))
    info = probe(src)
    assert info.variable_fps == (rate == "vfr")
    bright = [i for i, f in enumerate(iter_frames(info, (info.width, info.height))) if f.mean() > 128]
    raw = tmp_path / "a.f32"
    n = extract_audio(info, raw)
    audio = np.fromfile(raw, np.float32)
    assert n == len(audio)
    loud = np.flatnonzero(np.abs(audio) > 0.1)
    assert abs(loud[0] - 19200) < 160 and abs(loud[-1] - 22400) < 160
    assert bright[0] in (29, 30, 31) and bright[-1] in (33, 34, 35)
    assert abs(bright[0] - loud[0] / 640) <= 1


# ------------------------------------------------------------------ acceptance: real clips
@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory):
    value = os.environ.get("DAETALKER_REAL_CLIPS")
    if not value:
        pytest.skip("DAETALKER_REAL_CLIPS is not set (folder of real speaker clips)")
    from daetalker.data.preprocess import preprocess_dataset

    cfg = load_config("tiny").preprocess
    out = tmp_path_factory.mktemp("real-data")
    summary = preprocess_dataset(Path(value), out, cfg, workers=2)
    return Path(value), out, cfg, summary


@pytest.mark.slow
@pytest.mark.real_clips
def test_real_clips_meet_the_acceptance_criteria(real_dataset):
    from daetalker.data.probe import probe

    src, out, cfg, summary = real_dataset
    m = ds.load_manifest(out)
    videos = sorted(p.name for p in src.glob("*.mp4"))
    assert sorted(m["source"]) == videos, pd.read_parquet(out / ds.QUARANTINE).to_dict("records")
    q = pd.read_parquet(out / ds.QUARANTINE)
    assert set(q["reason"]) <= {"no_video_stream"}  # only the .wav files, which have no video
    assert m["clip_id"].is_unique and (m["fps"] == 25.0).all() and (m["segment"] == 0).all()
    for row in m.itertuples():
        info = probe(src / row.source)
        assert abs(row.n_frames - round(info.video_duration * 25)) <= 1, row.source
        assert row.detection_rate >= 0.95, row.source
        c = ds.clip_dir(out, row.clip_id)
        frames = ds.open_frames(out, row.clip_id)
        assert frames.shape == (row.n_frames, cfg.resolution, cfg.resolution, 3) and frames.dtype == np.uint8
        wav, sr = sf.read(c / "audio.wav", dtype="int16")
        assert sr == 16000 and wav.ndim == 1 and len(wav) == 640 * row.n_frames
        assert np.load(c / "mel.npy").shape == (4 * row.n_frames, 80)
        labels = pd.read_parquet(c / "labels.parquet")
        assert list(labels.columns) == list(ds.LABEL_COLUMNS) and len(labels) == row.n_frames
        assert labels.face_found.mean() >= 0.95 and not labels.isna().any().any()
        lm = np.load(c / "landmarks.npy")
        kept = lm[labels.face_found.to_numpy()]
        assert lm.shape == (row.n_frames, 468, 3)
        assert (kept[..., :2] >= 0).all() and (kept[..., :2] < cfg.resolution).all(), row.source
        # the head is near frontal in all of these recordings
        assert labels.yaw.abs().median() < 20 and labels.pitch.abs().median() < 20
    vfr = m[m["source"] == "OpenTalker__video-retalking__1.mp4"].iloc[0]
    assert vfr.fps == 25.0 and vfr.n_frames in (152, 153)  # 6.1 s of 22.1 fps average in, 25 fps out
    portrait = m[m["source"].str.startswith("bytedance")].iloc[0]
    assert (portrait.src_width, portrait.src_height) == (1080, 1920) and portrait.crop_size < 1080


@pytest.mark.slow
@pytest.mark.real_clips
def test_rerun_changes_no_bytes_and_skips_by_hash(real_dataset):
    from daetalker.data.preprocess import preprocess_dataset

    src, out, cfg, _ = real_dataset
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    summary = preprocess_dataset(src, out, cfg, workers=1)
    assert summary.n_reused == 7 and summary.source_seconds == 0.0  # 5 videos, 2 quarantined wavs
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[p] == before[p] for p in before)
    record = json.loads((out / ds.RUN_RECORD).read_text())
    assert record["sources"]["OpenTalker__video-retalking__2.mp4"]["status"] == "ok"
    assert "workers" not in record["config"]


@pytest.mark.slow
@pytest.mark.real_clips
def test_real_dataset_passes_validation(real_dataset):
    from daetalker.data.validate import validate_dataset

    _, out, cfg, _ = real_dataset
    result = validate_dataset(out, cfg)
    assert result.success, [str(f) for f in result.failed]
    assert result.n_clips == 5 and result.usable_minutes == pytest.approx(35.76 / 60, abs=0.01)


# ------------------------------------------------------------------ acceptance: synthetic speaker
@pytest.mark.slow
def test_synthetic_speaker_pose_and_mouth_correlate_with_ground_truth(tmp_path):
    from daetalker.config.synth import SynthConfig
    from daetalker.data.preprocess import preprocess_dataset
    from daetalker.synth.corpus import synth_corpus

    synth_corpus(tmp_path / "in", minutes=0.4, seed=3, cfg=SynthConfig(size=256), progress=False)
    cfg = load_config("tiny").preprocess
    summary = preprocess_dataset(tmp_path / "in", tmp_path / "out", cfg, workers=2)
    m = ds.load_manifest(tmp_path / "out")
    assert summary.n_quarantined == 0 and m["has_ground_truth"].all() and (m["detection_rate"] > 0.99).all()
    est = pd.concat([pd.read_parquet(ds.clip_dir(tmp_path / "out", c) / "labels.parquet") for c in m.clip_id])
    gt = pd.concat([pd.read_parquet(ds.clip_dir(tmp_path / "out", c) / ds.GROUND_TRUTH) for c in m.clip_id])
    assert len(est) == len(gt) == m.n_frames.sum()
    r = {c: np.corrcoef(est[c], gt[c])[0, 1] for c in ("yaw", "pitch", "roll", "mouth_open")}
    assert r["yaw"] >= 0.8 and r["pitch"] >= 0.8 and r["mouth_open"] >= 0.8, r
    assert r["roll"] >= 0.7, r


@pytest.mark.slow
@pytest.mark.real_speakers
def test_grid_sentences_keep_every_word_and_lose_most_of_their_edge_silence(grid_s1, tmp_path):
    """MPEG-1 video with MP2 audio in, and the second of closed mouth around each sentence cut to the margin."""
    from daetalker.data.preprocess import preprocess_dataset

    ids = ["bbaf5a", "lgiz4p", "swio2p"]
    src = tmp_path / "in"
    src.mkdir()
    for i in ids:
        (src / f"{i}.mpg").write_bytes((grid_s1 / "video" / f"{i}.mpg").read_bytes())
    cfg = load_config("tiny", None, ["preprocess.edge_silence_keep_s=0.3"]).preprocess
    preprocess_dataset(src, tmp_path / "out", cfg)
    m = ds.load_manifest(tmp_path / "out").set_index("source")
    keep = round(cfg.edge_silence_keep_s * cfg.fps)
    for i in ids:
        words = [ln.split() for ln in (grid_s1 / "align" / f"{i}.align").read_text().splitlines()]
        spoken = [(int(a) / 1000, int(b) / 1000) for a, b, w in words if w != "sil"]
        first, last = spoken[0][0], spoken[-1][1]  # frames
        row = m.loc[f"{i}.mpg"]
        start, end = row.start_frame, row.start_frame + row.n_frames
        assert start <= first and end >= last, (i, start, end, first, last)  # every word kept
        # silence left at each end: the margin, give or take where the level crosses the threshold
        assert first - start <= keep + 3 and end - last <= keep + 3, (i, start, end, first, last)
        assert row.detection_rate >= 0.95
