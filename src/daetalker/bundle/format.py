"""The bundle folder format: everything ``generate`` needs, in one folder that proves its own integrity.

Layout::

    dae.pt             diffusion autoencoder, EMA weights
    s2l.pt             speech2latent
    *.pt.sha256        the checkpoints' sidecars, when the sources had them
                       (so ``daetalker.checkpoint.load_checkpoint`` accepts the copies)
    latent_stats.npz   mean/std of the semantic latents (s2l predicts normalised latents) and
                       the reference frame whose inverted x_T videos start from
    config.yaml        the full config the model was trained with
    bundle.json        {"format": 1, "files": {name: {"sha256", "size"}}, "meta": {...}}

``verify_bundle`` refuses a folder whose files differ in any byte from what
``bundle.json`` lists, or that holds files it does not list: a bundle is
loaded only as it was registered. The sha256 of ``bundle.json`` itself is
recorded at registration (version tag ``bundle_sha256`` and inside the pyfunc
model), so rewriting the manifest to match altered weights is caught too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from daetalker.errors import DaetalkerError, IntegrityError
from daetalker.hashing import sha256_file

FORMAT = 1
MANIFEST = "bundle.json"
DAE, S2L, LATENT_STATS, CONFIG = "dae.pt", "s2l.pt", "latent_stats.npz", "config.yaml"
REQUIRED = (DAE, S2L, LATENT_STATS, CONFIG)


@dataclass(frozen=True)
class BundleFile:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BundleManifest:
    files: dict[str, BundleFile]
    meta: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> str:
        files = {n: {"sha256": f.sha256, "size": f.size} for n, f in sorted(self.files.items())}
        return json.dumps({"format": self.format, "files": files, "meta": self.meta}, indent=2, sort_keys=True) + "\n"


file_sha256 = sha256_file  # the name the bundle format's docs and tests use


def manifest_sha256(bundle_dir: Path | str) -> str:
    """sha256 of ``bundle.json``: one value that pins every byte of the bundle."""
    return file_sha256(Path(bundle_dir) / MANIFEST)


def _config_text(config: Any) -> str:
    if isinstance(config, (str, Path)):
        return Path(config).read_text()
    if hasattr(config, "to_yaml"):
        return config.to_yaml()
    if isinstance(config, Mapping):
        import yaml

        return yaml.safe_dump(dict(config), sort_keys=False)
    raise DaetalkerError(f"write_bundle: config must be a YAML file, a Config or a dict, not {type(config).__name__}")


def write_bundle(
    out_dir: Path | str,
    *,
    dae: Path | str,
    s2l: Path | str,
    latent_stats: Path | str,
    config: Any,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Copy the model files into a new bundle folder ``out_dir`` with its manifest.

    The folder appears complete or not at all (built beside it, then renamed).
    ``config`` is a YAML file, a :class:`~daetalker.config.Config` or a dict;
    ``meta`` (speaker, profile, config_hash, ...) is stored as strings.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DaetalkerError(f"{out}: bundle folder already exists and is not empty (fix: pick a new folder or delete it)")
    sources = {DAE: Path(dae), S2L: Path(s2l), LATENT_STATS: Path(latent_stats)}
    for name, src in sources.items():
        if not src.is_file():
            raise DaetalkerError(f"{src}: no such file for the bundle's {name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, src in sources.items():
            shutil.copyfile(src, tmp / name)
            sidecar = src.with_name(src.name + ".sha256")
            if name.endswith(".pt") and sidecar.is_file():  # its content does not depend on the file name
                shutil.copyfile(sidecar, tmp / f"{name}.sha256")
        (tmp / CONFIG).write_text(_config_text(config))
        names = sorted(p.name for p in tmp.iterdir())
        files = {n: BundleFile(n, file_sha256(tmp / n), (tmp / n).stat().st_size) for n in names}
        manifest = BundleManifest(files, {k: str(v) for k, v in (meta or {}).items()})
        (tmp / MANIFEST).write_text(manifest.to_json())
        for p in tmp.iterdir():  # data on disk before the rename makes it visible
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_manifest(bundle_dir: Path | str) -> BundleManifest:
    path = Path(bundle_dir) / MANIFEST
    fix = "re-register the model from its training run"
    try:
        raw = json.loads(path.read_text())
        files = {
            n: BundleFile(n, str(f["sha256"]), int(f["size"])) for n, f in raw["files"].items()
        }
        manifest = BundleManifest(files, {k: str(v) for k, v in raw.get("meta", {}).items()}, int(raw["format"]))
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing; {bundle_dir} is not a model bundle (fix: {fix})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise IntegrityError(f"{path}: unreadable manifest ({e}) (fix: {fix})") from None
    if manifest.format != FORMAT:
        raise IntegrityError(f"{path}: bundle format {manifest.format}, this daetalker reads {FORMAT}")
    return manifest


def verify_bundle(bundle_dir: Path | str, expect_manifest_sha256: str | None = None) -> BundleManifest:
    """Check every file against ``bundle.json``; raise :class:`IntegrityError` on any difference.

    ``expect_manifest_sha256`` (recorded at registration) also pins the manifest.
    """
    root = Path(bundle_dir)
    fix = "the bundle was altered after it was written; re-register the model from its training run"
    if not root.is_dir():
        raise IntegrityError(f"{root}: no such bundle folder")
    manifest = read_manifest(root)
    if expect_manifest_sha256 is not None and manifest_sha256(root) != expect_manifest_sha256:
        raise IntegrityError(f"{root / MANIFEST}: sha256 differs from the one recorded at registration (fix: {fix})")
    missing = [n for n in REQUIRED if n not in manifest.files]
    if missing:
        raise IntegrityError(f"{root / MANIFEST}: does not list {', '.join(missing)} (fix: rebuild it with write_bundle)")
    for name, f in manifest.files.items():
        path = root / name
        if Path(name).name != name:  # names are plain file names; never follow a path out of the bundle
            raise IntegrityError(f"{root / MANIFEST}: invalid file name {name!r}")
        if not path.is_file():
            raise IntegrityError(f"{path}: missing from the bundle (fix: {fix})")
        size = path.stat().st_size
        if size != f.size:
            raise IntegrityError(f"{path}: {size} bytes, the manifest says {f.size} (fix: {fix})")
        digest = file_sha256(path)
        if digest != f.sha256:
            raise IntegrityError(f"{path}: sha256 {digest[:12]}..., the manifest says {f.sha256[:12]}... (fix: {fix})")
    extra = sorted(p.name for p in root.iterdir() if p.name != MANIFEST and p.name not in manifest.files)
    if extra:
        raise IntegrityError(f"{root}: files not in the manifest: {', '.join(extra)} (fix: {fix})")
    return manifest
