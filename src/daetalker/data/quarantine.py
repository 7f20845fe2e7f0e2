"""Inputs that could not become training data, with the reason and the fix.

Every failure of one source (a user error or a bug) becomes a record here
instead of stopping the batch; ``quarantine.parquet`` lists them.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from daetalker.errors import InputMediaError

# The reasons preprocess can give; docs/dataset.md explains each.
REASONS = (
    "empty_file", "unreadable", "too_large", "symlink_outside_input", "duplicate_source",
    "no_video_stream", "no_audio_stream", "too_short", "audio_short", "decode_error",
    "audio_decode_error", "truncated", "no_face", "low_detection_rate", "segment_too_short",
    "internal_error",
)


@dataclass(frozen=True)
class QuarantineRecord:
    source: str  # path relative to the input folder
    reason: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def from_exception(source: str, exc: BaseException) -> QuarantineRecord:
    """A user error keeps its reason and fix; anything else is an internal error with its origin."""
    if isinstance(exc, InputMediaError):
        detail = exc.detail + (f" (fix: {exc.fix})" if exc.fix else "")
        return QuarantineRecord(source, exc.reason, detail)
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return QuarantineRecord(source, "internal_error", f"{type(exc).__name__}: {exc}{where}")


def write_quarantine(records: list[QuarantineRecord], path: Path) -> None:
    import pandas as pd

    from daetalker.data.dataset import QUARANTINE_SCHEMA, write_table

    rows = sorted((r.as_dict() for r in records), key=lambda r: (r["source"], r["reason"], r["detail"]))
    write_table(pd.DataFrame(rows, columns=list(QUARANTINE_SCHEMA)), path, QUARANTINE_SCHEMA)
