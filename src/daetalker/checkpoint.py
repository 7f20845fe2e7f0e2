"""Atomic, verified checkpoints: every trainer writes them, every model loader reads them.

A checkpoint is a dict of tensors and plain types written with ``torch.save``
to ``step_00001000.pt`` in three moves: temp file + fsync, ``os.replace``, then
a sidecar ``step_00001000.pt.sha256`` (JSON: sha256, byte length, step) written
the same way. A file whose sidecar is missing or disagrees (torn write, disk
full, truncation) is never loaded; ``load_latest`` falls back to the newest
good one. ``latest.pt`` is a hard link to (or copy of) the newest numbered file,
for other stages to read. Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from daetalker.errors import CheckpointError
from daetalker.hashing import sha256_file

log = logging.getLogger(__name__)

LATEST = "latest.pt"
_NUMBERED = re.compile(r"^step_(\d{8,})\.pt$")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> tuple[str, int]:
    """(sha256, bytes) of a checkpoint file, for its sidecar."""
    return sha256_file(path), Path(path).stat().st_size


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, step: int) -> dict[str, Any]:
    digest, size = file_sha256(path)
    meta = {"sha256": digest, "bytes": size, "step": step}
    _atomic_write(_sidecar(path), lambda f: f.write(json.dumps(meta).encode()))
    return meta


def verify(path: Path) -> dict[str, Any]:
    """Return the sidecar of an intact checkpoint; raise CheckpointError for a torn or unsealed one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        meta = json.loads(_sidecar(path).read_text())
        expected, length = meta["sha256"], int(meta["bytes"])
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path}: no valid {_sidecar(path).name} beside it, so the write never finished; "
            "resume from an earlier checkpoint"
        ) from e
    size = path.stat().st_size
    if size != length:
        raise CheckpointError(f"{path}: torn checkpoint ({size} bytes on disk, {length} written)")
    digest, _ = file_sha256(path)
    if digest != expected:
        raise CheckpointError(f"{path}: sha256 mismatch (corrupt checkpoint)")
    return meta


def save_checkpoint(state: dict[str, Any], directory: Path, step: int, *, keep: int = 3) -> Path:
    """Write ``state`` as ``step_<step>.pt`` atomically, point ``latest.pt`` at it, prune old ones."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".*.tmp"):  # left by a writer that was killed (there is only one writer)
        stale.unlink(missing_ok=True)
    path = directory / f"step_{step:08d}.pt"
    _atomic_write(path, lambda f: torch.save(state, f))
    meta = _write_sidecar(path, step)

    # latest.pt: a hard link costs no space; copy where links are not supported.
    tmp = directory / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, directory / LATEST)
    _atomic_write(_sidecar(directory / LATEST), lambda f: f.write(json.dumps(meta).encode()))
    _fsync_dir(directory)

    numbered = sorted(p for p in directory.iterdir() if _NUMBERED.match(p.name))
    for old in numbered[: max(0, len(numbered) - max(1, keep))]:
        _sidecar(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a verified checkpoint (tensors and plain types only)."""
    verify(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # an intact file that is not a checkpoint of ours
        raise CheckpointError(f"{path}: not a loadable checkpoint: {e}") from e


def checkpoint_candidates(directory: Path) -> list[Path]:
    """Numbered checkpoints, newest first (whatever their state)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NUMBERED.match(p.name)]
    return sorted(found, key=lambda p: int(_NUMBERED.match(p.name).group(1)), reverse=True)


def load_latest(
    directory: Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest intact checkpoint in ``directory`` (skipping torn ones), or None if there is none."""
    for path in checkpoint_candidates(directory):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
            continue
    return None
