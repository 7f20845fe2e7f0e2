"""``daetalker speaker add``'s first step: the footage copied into the checkout (the rest is
preprocess, validate and DVC, tested on their own and end to end in test_pipeline.py)."""

import os

import pytest

from daetalker.errors import DaetalkerError
from daetalker.stages.onboard import Footage, copy_footage


def test_footage_is_copied_with_links_followed_and_unchanged_files_left_alone(tmp_path):
    elsewhere = tmp_path / "archive" / "take1.mpg"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"mpeg-1 bytes")
    videos = tmp_path / "videos"
    (videos / "day2").mkdir(parents=True)
    (videos / "take1.mpg").symlink_to(elsewhere)  # a folder of links to footage kept elsewhere
    (videos / "day2" / "take2.mp4").write_bytes(b"mp4 bytes")
    (videos / "day2" / "take2.parquet").write_bytes(b"ground truth")  # beside a video: copied
    (videos / "notes.parquet").write_bytes(b"no video of this name")
    (videos / "readme.txt").write_text("not footage")
    (videos / ".cache").mkdir()
    (videos / ".cache" / "x.mp4").write_bytes(b"hidden")
    raw = tmp_path / "ws" / "data" / "raw" / "ana"

    assert copy_footage(videos, raw) == Footage(copied=3, unchanged=0)
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file()) == [
        "day2/take2.mp4", "day2/take2.parquet", "take1.mpg"]
    assert not (raw / "take1.mpg").is_symlink() and (raw / "take1.mpg").read_bytes() == b"mpeg-1 bytes"

    os.utime(raw / "day2" / "take2.mp4", (1, 1))
    (videos / "day2" / "take2.parquet").write_bytes(b"ground truth, fixed")
    assert copy_footage(videos, raw) == Footage(copied=1, unchanged=2)  # only the changed file
    assert (raw / "day2" / "take2.mp4").stat().st_mtime == 1  # untouched: preprocess reuses its clips
    assert (raw / "day2" / "take2.parquet").read_bytes() == b"ground truth, fixed"
    assert not list(raw.rglob("*.part"))


def test_a_folder_without_videos_is_named_with_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(DaetalkerError, match=r"empty: no video file in it or below \(looked for .*\.mpg"):
        copy_footage(tmp_path / "empty", tmp_path / "raw")
    with pytest.raises(DaetalkerError, match="missing: not a folder"):
        copy_footage(tmp_path / "missing", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_speaker_settings_merge_key_by_key_and_survive_a_round_trip(tmp_path):
    from daetalker.config import load_config
    from daetalker.config.speaker import SETTINGS_FILE, merge_settings, read_settings, write_settings
    from daetalker.errors import ConfigError

    raw = tmp_path / "data" / "raw" / "ana"
    assert read_settings(raw) == ()  # a speaker onboarded without --set
    first = ("preprocess.edge_silence_keep_s=0.3", "syncnet.lr=3e-4")
    write_settings(raw, first)
    assert read_settings(raw) == first
    # a later `speaker add --set` changes one key and keeps the others, in their order
    later = merge_settings(read_settings(raw), ["syncnet.lr=5e-4", "syncnet.max_steps=2000"])
    assert later == ("preprocess.edge_silence_keep_s=0.3", "syncnet.lr=5e-4", "syncnet.max_steps=2000")
    write_settings(raw, later)
    cfg = load_config("tiny", None, list(read_settings(raw)))
    assert (cfg.preprocess.edge_silence_keep_s, cfg.syncnet.lr, cfg.syncnet.max_steps) == (0.3, 5e-4, 2000)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        merge_settings(["syncnet.lr"])
    (raw / SETTINGS_FILE).write_text("settings: syncnet.lr=1\n")  # hand-edited into a string, not a list
    with pytest.raises(ConfigError, match=r"speaker.yaml: expected 'settings:' with a list"):
        read_settings(raw)
