"""The promotion gate's rules, read from a YAML file (see ``thresholds.yaml`` beside this module)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from daetalker.errors import ConfigError

Op = Literal[">=", "<="]
_FLOOR_KEYS = {"min": ">=", "max": "<="}
_DELTA_KEYS = {"min_delta": ">=", "max_delta": "<="}
_TOP_KEYS = {"floors", "vs_champion", "profiles"}


@dataclass(frozen=True)
class Rule:
    metric: str
    op: Op
    value: float

    def holds(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class Thresholds:
    floors: tuple[Rule, ...]
    vs_champion: tuple[Rule, ...]  # on delta = candidate - champion
    source: str = ""  # file (and profile) the rules came from
    sha256: str = ""  # of that file, recorded with every decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "floors": {r.metric: f"{r}" for r in self.floors},
            "vs_champion": {r.metric: f"delta {r}" for r in self.vs_champion},
        }


def default_path() -> Path:
    return Path(str(resources.files("daetalker.registry").joinpath("thresholds.yaml")))


def _rules(section: Any, keys: dict[str, str], where: str) -> dict[str, Rule]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a mapping of metric -> rule, got {section!r}")
    rules = {}
    for metric, spec in section.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in keys:
            raise ConfigError(f"{where}.{metric}: expected exactly one of {sorted(keys)}, e.g. {{{next(iter(keys))}: 1.0}}; got {spec!r}")
        key, value = next(iter(spec.items()))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}.{metric}.{key}: expected a finite number, got {value!r}")
        rules[str(metric)] = Rule(str(metric), keys[key], float(value))  # type: ignore[arg-type]
    return rules


def load_thresholds(path: Path | str | None = None, profile: str | None = None) -> Thresholds:
    """Rules from ``path`` (default: the packaged ``thresholds.yaml``), with ``profile``'s replacements.

    A profile the file does not mention uses the base rules.
    """
    p = Path(path) if path else default_path()
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such thresholds file (fix: pass an existing --thresholds FILE)") from None
    try:
        data = yaml.safe_load(blob) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict) or set(data) - _TOP_KEYS:
        unknown = sorted(set(data) - _TOP_KEYS) if isinstance(data, dict) else data
        raise ConfigError(f"{p}: unknown keys {unknown}; expected {sorted(_TOP_KEYS)}")
    floors = _rules(data.get("floors"), _FLOOR_KEYS, f"{p}: floors")
    deltas = _rules(data.get("vs_champion"), _DELTA_KEYS, f"{p}: vs_champion")
    source = str(p)
    prof = (data.get("profiles") or {}).get(profile) if profile else None
    if prof is not None:
        if not isinstance(prof, dict) or set(prof) - {"floors", "vs_champion"}:
            raise ConfigError(f"{p}: profiles.{profile}: expected only floors and vs_champion")
        floors |= _rules(prof.get("floors"), _FLOOR_KEYS, f"{p}: profiles.{profile}.floors")
        deltas |= _rules(prof.get("vs_champion"), _DELTA_KEYS, f"{p}: profiles.{profile}.vs_champion")
        source += f" (profile {profile})"
    if not floors and not deltas:
        raise ConfigError(f"{p}: no rules; a gate without rules would promote anything")
    return Thresholds(tuple(floors.values()), tuple(deltas.values()), source, hashlib.sha256(blob).hexdigest())
