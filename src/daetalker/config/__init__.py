"""One typed config per stage, composed into :class:`Config`, with named profiles.

A profile is a YAML file of per-section overrides in ``daetalker/profiles``;
``load_config`` layers: dataclass defaults <- profile <- user YAML <- ``--set``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from daetalker.config.base import (
    dump_yaml,
    from_dict,
    load_yaml,
    merge,
    parse_override,
    to_dict,
)
from daetalker.config.autoencoder import AutoencoderConfig
from daetalker.config.dae import DAEConfig
from daetalker.config.evaluate import EvaluateConfig
from daetalker.config.preprocess import PreprocessConfig
from daetalker.config.s2l import S2LConfig
from daetalker.config.synth import SynthConfig
from daetalker.config.syncnet import SyncNetConfig
from daetalker.errors import ConfigError

PROFILES = ("tiny", "tiny-pixel", "base128", "base128-latent", "paper256", "paper256-latent")


@dataclass
class Config:
    profile: str = "paper256"
    synth: SynthConfig = field(default_factory=SynthConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dae: DAEConfig = field(default_factory=DAEConfig)
    s2l: S2LConfig = field(default_factory=S2LConfig)
    syncnet: SyncNetConfig = field(default_factory=SyncNetConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return dump_yaml(self)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path

    def hash(self) -> str:
        """Short content hash of the whole config (recorded as lineage)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def profile_dict(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise ConfigError(f"profile: unknown profile {name!r} (choose one of {', '.join(PROFILES)})")
    text = resources.files("daetalker.profiles").joinpath(f"{name}.yaml").read_text()
    import yaml

    return yaml.safe_load(text) or {}


def load_config(
    profile: str = "tiny",
    path: Path | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Defaults <- named profile <- YAML file <- ``KEY=VALUE`` overrides."""
    data: dict[str, Any] = merge(profile_dict(profile), {"profile": profile})
    if path is not None:
        data = merge(data, load_yaml(Path(path)))
    for expr in overrides:
        data = merge(data, parse_override(expr))
    return from_dict(Config, data)


def config_from_file(path: Path) -> Config:
    """Reload a config saved with a run (lossless round trip)."""
    return from_dict(Config, load_yaml(Path(path)))


__all__ = [
    "AutoencoderConfig",
    "Config",
    "DAEConfig",
    "EvaluateConfig",
    "PreprocessConfig",
    "S2LConfig",
    "SyncNetConfig",
    "SynthConfig",
    "PROFILES",
    "config_from_file",
    "load_config",
    "profile_dict",
]
