"""Bad and unusual inputs: nothing crashes the batch; each bad file lands in quarantine
with its reason, each unusual but valid one comes out at exactly 25 fps.

One input folder is built from a few seconds of the synthetic speaker with
ffmpeg, and preprocessed once for the whole module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from daetalker.config import load_config
from daetalker.data import dataset as ds

pytestmark = pytest.mark.slow

# file -> quarantine reason (None: must be kept as one clip)
EXPECTED = {
    "30fps.mp4": None,
    "50fps.mkv": None,
    "vfr.mp4": None,
    "portrait_hevc.mov": None,
    "Interview – Zoë Ångström 1.webm": None,
    "rotated.mp4": None,
    "camera_cut.mp4": None,  # two segments
    "no_speech.mp4": None,  # kept, flagged silent
    "empty.mp4": "empty_file",
    "truncated.mp4": "truncated",
    "truncated_tail.mp4": "unreadable",
    "notes.mp4": "unreadable",
    "silent_film.mp4": "no_audio_stream",
    "speech.m4a": "no_video_stream",
    "short.mp4": "too_short",
    "dubbed.mp4": "audio_short",
    "testcard.mp4": "no_face",
    "mostly_testcard.mp4": "low_detection_rate",
    "link.mp4": "symlink_outside_input",
    "copy of 30fps.mp4": "duplicate_source",
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-nostdin", "-y", *args], check=True)


def make_inputs(face: Path, d: Path, outside: Path) -> None:
    """Every file of EXPECTED under ``d``, derived from the face clip ``face`` (256 px, 25 fps)."""
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    ffmpeg("-i", str(face), "-t", "3", "-vf", "fps=30", *h264, str(d / "30fps.mp4"))
    ffmpeg("-i", str(face), "-ss", "0.3", "-t", "3", "-vf", "fps=50", *h264, str(d / "50fps.mkv"))
    # 50 fps for 1 s, then every third frame: a variable frame rate
    ffmpeg("-i", str(face), "-ss", "0.1", "-t", "3", "-vf", "fps=50,select='lt(t\\,1)+not(mod(n\\,3))',setpts=PTS",
           "-fps_mode", "vfr", *h264, str(d / "vfr.mp4"))
    ffmpeg("-i", str(face), "-ss", "0.2", "-t", "2", "-vf", "scale=1080:1080,pad=1080:1920:0:420",
           "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(d / "portrait_hevc.mov"))
    ffmpeg("-i", str(face), "-ss", "0.4", "-t", "2.5", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
           "-b:v", "500k", "-c:a", "libopus", str(d / "Interview – Zoë Ångström 1.webm"))
    # coded sideways with rotation metadata, as phones record: displayed upright
    sideways = d.parent / "sideways.mp4"  # 320x256 picture coded as 256x320
    ffmpeg("-i", str(face), "-ss", "0.5", "-t", "2.5", "-vf", "pad=320:256:32:0,transpose=1", *h264, str(sideways))
    ffmpeg("-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(d / "rotated.mp4"))
    # the speaker on the left for 1.6 s, then (a cut) on the right: two segments with their own boxes
    ffmpeg("-i", str(face), "-filter_complex",
           "[0:v]split[a][b];[a]trim=0:1.6,setpts=PTS-STARTPTS,pad=640:256:0:0[x];"
           "[b]trim=1.6:3.2,setpts=PTS-STARTPTS,pad=640:256:384:0[y];[x][y]concat=n=2:v=1:a=0[v]",
           "-map", "[v]", "-map", "0:a", "-t", "3.2", *h264, str(d / "camera_cut.mp4"))
    ffmpeg("-i", str(face), "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-map", "0:v", "-map", "1:a",
           "-ss", "0.6", "-t", "2", *h264, str(d / "no_speech.mp4"))
    (d / "empty.mp4").write_bytes(b"")
    faststart = d.parent / "faststart.mp4"
    ffmpeg("-i", str(face), "-t", "3", *h264, "-movflags", "+faststart", str(faststart))
    blob = faststart.read_bytes()
    (d / "truncated.mp4").write_bytes(blob[: len(blob) * 2 // 5])  # header intact, data cut
    tail = (d / "30fps.mp4").read_bytes()  # moov atom at the end: cut away
    (d / "truncated_tail.mp4").write_bytes(tail[: len(tail) // 2])
    (d / "notes.mp4").write_text("these are my notes, not a video\n")
    ffmpeg("-i", str(face), "-t", "2", "-an", "-c:v", "libx264", "-preset", "ultrafast", str(d / "silent_film.mp4"))
    ffmpeg("-i", str(face), "-t", "2", "-vn", "-c:a", "aac", str(d / "speech.m4a"))
    ffmpeg("-i", str(face), "-t", "0.6", *h264, str(d / "short.mp4"))
    ffmpeg("-i", str(face), "-t", "3", "-i", str(face), "-map", "0:v", "-map", "1:a", "-t", "3",
           "-af", "atrim=0:1", *h264, str(d / "dubbed.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=2", "-f", "lavfi", "-i", "sine=f=300:d=2", *h264,
           str(d / "testcard.mp4"))
    ffmpeg("-i", str(face), "-f", "lavfi", "-i", "testsrc=s=256x256:r=25:d=2.5", "-f", "lavfi",
           "-i", "sine=f=300:d=3.5", "-filter_complex",
           "[0:v]trim=0:1,setpts=PTS-STARTPTS,format=yuv420p[a];[1:v]format=yuv420p[b];[a][b]concat=n=2:v=1:a=0[v]",
           "-map", "[v]", "-map", "2:a", *h264, str(d / "mostly_testcard.mp4"))
    shutil.copy(d / "30fps.mp4", outside / "elsewhere.mp4")
    os.symlink(outside / "elsewhere.mp4", d / "link.mp4")
    shutil.copy(d / "30fps.mp4", d / "copy of 30fps.mp4")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from daetalker.config.synth import SynthConfig
    from daetalker.data.preprocess import preprocess_dataset
    from daetalker.synth.corpus import synth_corpus

    root = tmp_path_factory.mktemp("bad-input")
    synth_corpus(root / "synth", minutes=0.07, seed=1, cfg=SynthConfig(size=256), progress=False)
    inp, outside = root / "in", root / "outside"
    inp.mkdir(), outside.mkdir()
    make_inputs(root / "synth" / "clip_0000.mp4", inp, outside)
    cfg = load_config("tiny").preprocess
    summary = preprocess_dataset(inp, root / "out", cfg, workers=2)
    return inp, root / "out", cfg, summary


def test_every_bad_file_is_quarantined_with_its_reason(batch):
    _, out, _, summary = batch
    q = pd.read_parquet(out / ds.QUARANTINE)
    assert list(q.columns) == ["source", "reason", "detail"]
    got = dict(zip(q["source"], q["reason"]))
    want = {k: v for k, v in EXPECTED.items() if v}
    assert got == want, q.to_dict("records")
    assert q["detail"].str.len().min() > 10  # every record says what is wrong
    assert "outside the input folder" in q.set_index("source").loc["link.mp4", "detail"]
    assert summary.n_sources == len(EXPECTED)


def test_unusual_but_valid_videos_come_out_at_exactly_25_fps(batch):
    from daetalker.data.probe import probe

    inp, out, cfg, _ = batch
    m = ds.load_manifest(out)
    cut = m[m["source"] == "camera_cut.mp4"].sort_values("segment")
    assert list(cut["segment"]) == [0, 1] and list(cut["start_frame"]) == [0, 40]
    assert list(cut["n_frames"]) == [40, 40] and cut["crop_x0"].iloc[1] - cut["crop_x0"].iloc[0] > 300
    assert cut["clip_id"].str.endswith(("-s0", "-s1")).all() and (cut["detection_rate"] >= 0.95).all()
    m = m[m["source"] != "camera_cut.mp4"].set_index("source")
    assert sorted(m.index) == sorted(k for k, v in EXPECTED.items() if v is None and k != "camera_cut.mp4")
    for source, row in m.iterrows():
        info = probe(inp / source)
        assert row.fps == 25.0 and abs(row.n_frames - round(info.video_duration * 25)) <= 1, source
        assert row.detection_rate >= 0.95, source
        frames = ds.open_frames(out, row.clip_id)
        assert frames.shape == (row.n_frames, cfg.resolution, cfg.resolution, 3)
        assert sf.info(str(ds.clip_dir(out, row.clip_id) / "audio.wav")).frames == 640 * row.n_frames
    assert (m.loc["portrait_hevc.mov", "src_width"], m.loc["portrait_hevc.mov", "src_height"]) == (1080, 1920)
    # the rotated file is coded sideways with rotation metadata: the crops are upright
    # (forehead above chin, eyes level), as for the others
    assert probe(inp / "rotated.mp4").rotation in (90, 270)
    assert (m.loc["rotated.mp4", "src_width"], m.loc["rotated.mp4", "src_height"]) == (320, 256)
    for source in ("rotated.mp4", "30fps.mp4"):
        lm = np.load(ds.clip_dir(out, m.loc[source, "clip_id"]) / "landmarks.npy")
        assert (lm[:, 10, 1] < lm[:, 152, 1]).all(), source
        eyes = lm[:, 263, :2] - lm[:, 33, :2]
        assert (np.abs(eyes[:, 1]) < 0.3 * eyes[:, 0]).all(), source
    assert m.loc["Interview – Zoë Ångström 1.webm", "clip_id"].startswith("interview-zoe-angstrom-1-")
    assert m["silent"].to_dict() == {k: k == "no_speech.mp4" for k in m.index}
    assert m.loc["no_speech.mp4", "audio_dbfs"] < -100 < m.drop("no_speech.mp4")["audio_dbfs"].min()
    quiet = sf.read(ds.clip_dir(out, m.loc["no_speech.mp4", "clip_id"]) / "audio.wav", dtype="int16")[0]
    assert not quiet.any()  # silence is not amplified into noise


def test_an_internal_error_in_one_source_is_quarantined_not_raised(batch, tmp_path, monkeypatch):
    from daetalker.data import preprocess as pp

    inp, _, cfg, _ = batch
    (tmp_path / "in").mkdir()
    shutil.copy(inp / "30fps.mp4", tmp_path / "in" / "a.mp4")
    shutil.copy(inp / "testcard.mp4", tmp_path / "in" / "b.mp4")

    def boom(faces):
        raise RuntimeError("boom")

    monkeypatch.setattr(pp, "pick_speaker", boom)
    with pytest.raises(pp.NothingKept, match=r"nothing usable was kept: all 2 source\(s\) quarantined "
                                             r"\(internal_error 2\)") as e:  # after writing the reports
        pp.preprocess_dataset(tmp_path / "in", tmp_path / "out", cfg, workers=1)
    q = pd.read_parquet(tmp_path / "out" / ds.QUARANTINE)
    assert e.value.summary.n_clips == 0 and list(q["reason"]) == ["internal_error", "internal_error"]
    assert q["detail"].str.startswith("RuntimeError: boom at test_preprocess_bad_input.py:").all()
    assert not list((tmp_path / "out").glob(".tmp*")) and not (tmp_path / "out" / ".tmp").exists()


def test_cli_rerun_reports_every_source_unchanged(batch):
    from typer.testing import CliRunner

    from daetalker.cli import app

    inp, out, _, _ = batch
    res = CliRunner().invoke(app, ["preprocess", "--in", str(inp), "--out", str(out), "--profile", "tiny"])
    assert res.exit_code == 0, res.output
    # all but the refused link and the duplicate copy, which are refused again without decoding
    assert "9 clips" in res.output and f"{len(EXPECTED) - 2} source(s) unchanged" in res.output
