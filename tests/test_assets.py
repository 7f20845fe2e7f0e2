"""Model assets: pinned by sha256, clear errors when missing or altered."""

from __future__ import annotations

import shutil

import pytest

from daetalker import assets
from daetalker.errors import AssetError


def test_installed_assets_verify():
    for name in assets.ASSETS:
        path = assets.asset_path(name)
        assert path.is_file()
    assert all(r["state"] == "ok" for r in assets.status())


def test_missing_asset_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("DAETALKER_ASSETS", str(tmp_path))
    with pytest.raises(AssetError, match="make setup"):
        assets.asset_path("face_landmark.tflite")
    assert {r["state"] for r in assets.status()} == {"missing"}


def test_altered_asset_is_refused(tmp_path, monkeypatch):
    src = assets.asset_path("face_detection_short_range.tflite")
    monkeypatch.setenv("DAETALKER_ASSETS", str(tmp_path))
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    assert assets.asset_path(src.name) == dst
    with open(dst, "r+b") as f:  # flip one byte in place
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(AssetError, match="sha256 differs"):
        assets.asset_path(src.name)


def test_cli_lists_assets():
    from typer.testing import CliRunner

    from daetalker.cli import app

    res = CliRunner().invoke(app, ["assets"])
    assert res.exit_code == 0, res.output
    assert "face_landmark.tflite" in res.output and "ok" in res.output
