"""Onboarding a speaker from a folder of footage: copy in, preprocess, validate, version, publish.

``daetalker speaker add NAME --videos DIR`` runs these in the checkout, so what
it leaves is what ``daetalker pipeline run --pipeline retrain-speaker`` (or a
scheduled run on a cluster) trains on: ``data/raw/NAME`` (the footage's
bytes), ``data/processed/NAME`` (the dataset), both in the DVC revision that
``data.dvc`` records, pushed and published for NAME.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from daetalker.config import Config
from daetalker.config.speaker import write_settings
from daetalker.errors import DaetalkerError
from daetalker.kubeflow.context import RunContext
from daetalker.stages import data as data_stages
from daetalker.stages.run import StageRun


@dataclass(frozen=True)
class Footage:
    copied: int  # files new or changed since the last `speaker add`
    unchanged: int  # already in data/raw/NAME with the same bytes


@dataclass(frozen=True)
class Onboarded:
    speaker: str
    footage: Footage
    clips: int
    quarantined: int
    usable_minutes: float
    data_dir: Path
    validation_report: Path
    data_rev: str
    remote: str


def copy_footage(videos: Path, raw_dir: Path) -> Footage:
    """Copy every source preprocess reads under ``videos`` into ``raw_dir`` at the same relative path:
    videos, audio files and ground-truth tables beside a video (docs/dataset.md, Input).

    The copy holds the bytes, so DVC versions the footage itself, and symlinks in ``videos`` (a folder
    of links to footage kept elsewhere) are followed here: preprocess quarantines a link that leaves
    its input folder. Files already there with the same bytes are left alone (same mtime, no rework).
    """
    from daetalker.data.preprocess import AUDIO_EXTS, VIDEO_EXTS

    videos = Path(videos)
    if not videos.is_dir():
        raise DaetalkerError(f"--videos {videos}: not a folder (fix: point it at the folder that holds the clips)")
    found = [p for p in sorted(videos.rglob("*")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(videos).parts)]  # fmt: skip
    stems = {p.with_suffix("") for p in found if p.suffix.lower() in VIDEO_EXTS}
    if not stems:
        raise DaetalkerError(f"--videos {videos}: no video file in it or below "
                             f"(looked for {' '.join(sorted(VIDEO_EXTS))})")  # fmt: skip
    files = [p for p in found if p.suffix.lower() in VIDEO_EXTS | AUDIO_EXTS
             or (p.suffix == ".parquet" and p.with_suffix("") in stems)]  # fmt: skip
    copied = unchanged = 0
    for src in files:
        dst = raw_dir / src.relative_to(videos)
        if dst.is_file() and not dst.is_symlink() and filecmp.cmp(src, dst, shallow=False):
            unchanged += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.part")
        shutil.copyfile(src, tmp)  # follows a link; a half-copied file is never under its real name
        os.replace(tmp, dst)
        copied += 1
    return Footage(copied, unchanged)


def add_speaker(speaker: str, videos: Path, root: Path, cfg: Config, *, mlflow: bool, settings: tuple[str, ...] = (),
                progress: Callable[..., Any] | None = None, actor: str = "") -> Onboarded:  # fmt: skip
    """Onboard ``speaker`` (a valid registry name) from ``videos`` into the checkout at ``root``.

    ``cfg`` is the profile with ``settings`` (KEY=VALUE) over it; the settings are saved with the
    footage (``config/speaker.py``), so the revision carries them to every retrain-speaker run.

    A clip that preprocessing refuses goes to quarantine with its reason and the rest go on; a
    dataset that fails validation stops before versioning, with every file written so far kept
    (the next run reuses them). Returns what a person needs to go on: the counts and the revision.
    """
    from daetalker.versioning import dvc_repo, revision

    root = Path(root).resolve()
    ctx = RunContext(speaker=speaker, profile=cfg.profile, workspace=str(root))
    run = StageRun(ctx.experiment_name, runner="cli", speaker=speaker, mlflow=mlflow,
                   tags={"daetalker.onboarding": "speaker add"})  # fmt: skip
    footage = copy_footage(videos, ctx.raw_dir())
    if settings:
        write_settings(ctx.raw_dir(), settings)
    summary = data_stages.preprocess(run, ctx.raw_dir(), ctx.processed_dir(), cfg, progress=progress)
    checked = data_stages.validate(run, ctx.processed_dir(), cfg)
    checked.raise_for_failure()
    versioned = data_stages.version(run, root, ctx.data_root.name, cfg)
    remote = dvc_repo.select_remote(root)
    revision.publish(remote, speaker, versioned["data_hash"], actor)
    return Onboarded(speaker, footage, summary.n_clips, summary.n_quarantined, checked.usable_minutes,
                     ctx.processed_dir(), Path(checked.html_path), versioned["data_hash"], remote.describe())
