"""Moved to :mod:`daetalker.checkpoint` (models load checkpoints too); these names stay importable here."""

from daetalker.checkpoint import (  # noqa: F401
    LATEST,
    checkpoint_candidates,
    file_sha256,
    load_checkpoint,
    load_latest,
    save_checkpoint,
    verify,
)
