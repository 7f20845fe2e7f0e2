"""A speaker's own settings, kept with its footage so every later run trains it the same way.

``daetalker speaker add NAME --set KEY=VALUE`` writes them to
``data/raw/NAME/speaker.yaml``. That file is inside the DVC-versioned ``data/``
folder, so it travels with the published revision: ``retrain-speaker`` (local,
``pipeline submit`` or a schedule) layers them over the profile before its own
overrides. A setting that shapes the dataset (``preprocess.*``) must be the
same for onboarding and for the pipeline's preprocess step, or the step redoes
the work; a recipe that a real speaker needs (a lip-sync expert's learning
rate) should not have to be remembered by whoever schedules the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml

from daetalker.config.base import parse_override
from daetalker.errors import ConfigError

SETTINGS_FILE = "speaker.yaml"


def merge_settings(*layers: Iterable[str]) -> tuple[str, ...]:
    """KEY=VALUE lists merged key by key, a later layer's value winning; first-seen key order kept."""
    merged: dict[str, str] = {}
    for layer in layers:
        for expr in layer:
            parse_override(expr)  # refuses "KEY" without "=" or an empty key, naming it
            merged[expr.split("=", 1)[0].strip()] = expr.strip()
    return tuple(merged.values())


def read_settings(raw_dir: Path) -> tuple[str, ...]:
    """The settings saved for the speaker whose footage is ``raw_dir``; () when none were."""
    path = Path(raw_dir) / SETTINGS_FILE
    if not path.is_file():
        return ()
    data = yaml.safe_load(path.read_text()) or {}
    settings = data.get("settings", []) if isinstance(data, dict) else None
    if not isinstance(settings, list) or not all(isinstance(s, str) for s in settings):
        raise ConfigError(f"{path}: expected 'settings:' with a list of KEY=VALUE strings "
                          f"(fix: rerun `daetalker speaker add` with --set, or edit the file)")  # fmt: skip
    return merge_settings(settings)


def write_settings(raw_dir: Path, settings: Iterable[str]) -> Path:
    """Save ``settings`` for the speaker (the file is replaced whole, atomically)."""
    from daetalker.outputs import write_text

    path = Path(raw_dir) / SETTINGS_FILE
    header = "# written by `daetalker speaker add --set`; retrain-speaker applies these before its own --set\n"
    write_text(path, header + yaml.safe_dump({"settings": list(merge_settings(settings))}, sort_keys=False))
    return path
