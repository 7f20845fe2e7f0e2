"""The model bundle and its pyfunc packaging: written whole, verified byte for byte, refused when altered."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daetalker.config import load_config
from daetalker.errors import DaetalkerError, IntegrityError
from daetalker.bundle import (
    MANIFEST,
    REQUIRED,
    file_sha256,
    manifest_sha256,
    read_manifest,
    verify_bundle,
    write_bundle,
)


def model_files(root: Path, seed: int = 0) -> dict[str, Path]:
    """Stand-ins for the trained files: random bytes are enough to test packaging and integrity."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "ema.pt").write_bytes(rng.bytes(4096))
    (root / "s2l.pt").write_bytes(rng.bytes(2048))
    np.savez(root / "stats.npz", mean=rng.normal(size=8), std=rng.uniform(0.5, 2, size=8))
    return {"dae": root / "ema.pt", "s2l": root / "s2l.pt", "latent_stats": root / "stats.npz"}


def make_bundle(tmp: Path, name: str = "bundle", seed: int = 0) -> Path:
    return write_bundle(tmp / name, **model_files(tmp / f"src-{name}", seed), config=load_config("tiny"),
                        meta={"speaker": "synth", "profile": "tiny"})  # fmt: skip


def test_write_bundle_lists_every_file_with_its_hash(tmp_path: Path) -> None:
    src = model_files(tmp_path / "src")
    b = write_bundle(tmp_path / "b", **src, config=load_config("tiny"), meta={"speaker": "synth", "steps": 3})
    assert sorted(p.name for p in b.iterdir()) == sorted([*REQUIRED, MANIFEST])
    m = verify_bundle(b)
    assert set(m.files) == set(REQUIRED) and m.meta == {"speaker": "synth", "steps": "3"}
    for name, f in m.files.items():
        assert f.sha256 == file_sha256(b / name) and f.size == (b / name).stat().st_size
    assert (b / "dae.pt").read_bytes() == src["dae"].read_bytes()
    assert load_config("tiny").to_yaml() == (b / "config.yaml").read_text()
    raw = json.loads((b / MANIFEST).read_text())
    assert raw["format"] == 1 and raw["files"]["s2l.pt"]["sha256"] == file_sha256(src["s2l"])


def test_checkpoint_sidecars_travel_so_the_checkpoint_loader_accepts_the_copies(tmp_path: Path) -> None:
    import torch

    from daetalker.checkpoint import load_checkpoint, save_checkpoint

    ckpt = save_checkpoint({"ema": {"w": torch.arange(4.0)}}, tmp_path / "ckpt", step=5)
    src = {**model_files(tmp_path / "src"), "dae": ckpt.with_name("latest.pt")}
    b = write_bundle(tmp_path / "b", **src, config={})
    assert set(verify_bundle(b).files) == {*REQUIRED, "dae.pt.sha256"}  # s2l had no sidecar
    assert torch.equal(load_checkpoint(b / "dae.pt")["ema"]["w"], torch.arange(4.0))


@pytest.mark.parametrize("kind", ["file", "dict"])
def test_config_from_a_file_or_a_dict(tmp_path: Path, kind: str) -> None:
    cfg_file = load_config("tiny").save(tmp_path / "cfg.yaml")
    config = cfg_file if kind == "file" else {"profile": "tiny", "dae": {"lr": 1e-4}}
    b = write_bundle(tmp_path / "b", **model_files(tmp_path / "src"), config=config)
    text = (b / "config.yaml").read_text()
    assert text == cfg_file.read_text() if kind == "file" else "lr: 0.0001" in text
    verify_bundle(b)


def test_write_bundle_refuses_and_leaves_nothing_behind(tmp_path: Path) -> None:
    src = model_files(tmp_path / "src")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("keep me")
    with pytest.raises(DaetalkerError, match="already exists"):
        write_bundle(occupied, **src, config={})
    assert (occupied / "x").read_text() == "keep me"
    with pytest.raises(DaetalkerError, match="no such file"):
        write_bundle(tmp_path / "b1", **{**src, "s2l": tmp_path / "missing.pt"}, config={})
    with pytest.raises(DaetalkerError, match="config must be"):
        write_bundle(tmp_path / "b2", **src, config=42)  # fails after copying: the temp folder goes too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied", "src"]
    empty = tmp_path / "empty"
    empty.mkdir()
    verify_bundle(write_bundle(empty, **src, config={}))  # an empty folder is fine


@pytest.mark.parametrize(
    "damage, match",
    [
        ("flip", "sha256"),  # same size, one byte changed
        ("truncate", "bytes, the manifest says"),
        ("delete", "missing from the bundle"),
        ("extra", "files not in the manifest"),
        ("no_manifest", "not a model bundle"),
        ("bad_manifest", "unreadable manifest"),
        ("unlisted", "does not list"),
    ],
)
def test_verify_refuses_any_alteration(tmp_path: Path, damage: str, match: str) -> None:
    b = make_bundle(tmp_path)
    dae = b / "dae.pt"
    if damage == "flip":
        data = bytearray(dae.read_bytes())
        data[100] ^= 0xFF
        dae.write_bytes(bytes(data))
    elif damage == "truncate":
        dae.write_bytes(dae.read_bytes()[:-1])
    elif damage == "delete":
        dae.unlink()
    elif damage == "extra":
        (b / "payload.py").write_text("print('hi')")
    elif damage == "no_manifest":
        (b / MANIFEST).unlink()
    elif damage == "bad_manifest":
        (b / MANIFEST).write_text("{not json")
    elif damage == "unlisted":
        raw = json.loads((b / MANIFEST).read_text())
        del raw["files"]["s2l.pt"]
        (b / MANIFEST).write_text(json.dumps(raw))
        (b / "s2l.pt").unlink()
    with pytest.raises(IntegrityError, match=match):
        verify_bundle(b)


def test_rewritten_manifest_is_caught_by_the_registered_hash(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    registered = manifest_sha256(b)
    verify_bundle(b, registered)
    # An attacker swaps the weights AND updates bundle.json to match.
    (b / "dae.pt").write_bytes(os.urandom(4096))
    raw = json.loads((b / MANIFEST).read_text())
    raw["files"]["dae.pt"]["sha256"] = file_sha256(b / "dae.pt")
    (b / MANIFEST).write_text(json.dumps(raw))
    verify_bundle(b)  # self-consistent now...
    with pytest.raises(IntegrityError, match="recorded at registration"):
        verify_bundle(b, registered)  # ...but not what was registered


def test_manifest_cannot_point_outside_the_bundle(tmp_path: Path) -> None:
    b = make_bundle(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    raw = json.loads((b / MANIFEST).read_text())
    raw["files"]["../outside.bin"] = {"sha256": file_sha256(outside), "size": 1}
    (b / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match="invalid file name"):
        verify_bundle(b)


# ------------------------------------------------------------------ pyfunc model on a real MLflow server
def _stored_file(basetemp: Path, model_id: str, name: str) -> Path:
    """The file as the MLflow server stores it (the session server's artifact folder)."""
    hits = {p.resolve() for p in basetemp.glob(f"mlflow*/artifacts/*/models/{model_id}/artifacts/artifacts/*/{name}")}
    assert len(hits) == 1, hits
    return hits.pop()


def test_pyfunc_model_loads_verified_and_refuses_an_altered_file(
    mlflow_server: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import mlflow

    from daetalker.registry.log_model import fetch_bundle, log_bundle
    from daetalker.registry.pyfunc import TalkerModel

    b = make_bundle(tmp_path)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("registry-bundle-test")
    with mlflow.start_run() as run:
        info = log_bundle(b, run)
    mv = mlflow.register_model(info.model_uri, "talker-bundle-test")
    uri = f"models:/talker-bundle-test/{mv.version}"

    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.metadata["bundle_sha256"] == manifest_sha256(b)
    sig = model.metadata.get_input_schema()
    assert sig.input_names() == ["audio", "pose", "steps", "seed"]  # bytes, never a server path
    assert [c.required for c in sig.inputs] == [True, False, False, False]
    assert model.metadata.get_output_schema().input_names() == ["video", "n_frames", "duration_s"]
    inner = model.unwrap_python_model()
    assert isinstance(inner, TalkerModel) and inner.manifest is not None
    assert {n: f.sha256 for n, f in inner.manifest.files.items()} == {n: f.sha256 for n, f in read_manifest(b).files.items()}
    with pytest.raises(DaetalkerError, match="out_path.*paths are not accepted"):
        inner.predict(None, pd.DataFrame({"audio": ["AAAA"], "out_path": ["x.mp4"]}))
    with pytest.raises(ValueError, match="audio_path"):
        inner.predict_paths(pd.DataFrame({"out_path": ["x.mp4"]}))
    fetched = fetch_bundle(uri, tmp_path / "fetched")
    assert verify_bundle(fetched).files == read_manifest(b).files

    stored = _stored_file(tmp_path_factory.getbasetemp(), info.model_id, "s2l.pt")
    data = bytearray(stored.read_bytes())
    data[7] ^= 0x01  # one bit, after registration
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="s2l.pt"):
        mlflow.pyfunc.load_model(uri)
    with pytest.raises(IntegrityError, match="s2l.pt"):
        fetch_bundle(uri, tmp_path / "fetched-again")


def test_pyfunc_predict_end_to_end(mlflow_server: str, tmp_path: Path) -> None:
    """Audio bytes in, mp4 bytes out, through mlflow.pyfunc (signature enforced); files only in-process."""
    import base64

    import mlflow
    import soundfile as sf

    from daetalker.bundle.build import make_test_bundle
    from daetalker.registry.log_model import log_bundle

    b = Path(make_test_bundle(tmp_path / "bundle"))
    verify_bundle(b)
    sr = 16000
    t = np.arange(sr) / sr
    sf.write(tmp_path / "a.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("registry-bundle-test")
    with mlflow.start_run() as run:
        info = log_bundle(b, run)
    model = mlflow.pyfunc.load_model(info.model_uri)
    audio = base64.b64encode((tmp_path / "a.wav").read_bytes()).decode()
    out = model.predict(pd.DataFrame({"audio": [audio], "steps": [2], "seed": [0]}))
    assert list(out.columns) == ["video", "n_frames", "duration_s"]
    assert out.n_frames[0] == 25 and out.duration_s[0] == pytest.approx(1.0)  # 1 s at 25 fps
    assert base64.b64decode(out.video[0])[4:8] == b"ftyp"  # an mp4
    paths = model.unwrap_python_model().predict_paths(
        pd.DataFrame({"audio_path": [str(tmp_path / "a.wav")], "out_path": [str(tmp_path / "o.mp4")], "steps": [2]}))
    assert list(paths.columns) == ["video_path", "n_frames"] and paths.n_frames[0] == 25
    assert Path(paths.video_path[0]).read_bytes()[4:8] == b"ftyp"
    shutil.rmtree(tmp_path / "bundle")
