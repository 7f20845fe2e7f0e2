"""An append-only, hash-chained JSONL log: editing or removing an entry breaks the chain.

Each line is one JSON object (sorted keys, no spaces) carrying ``seq`` and
``prev``, the sha256 of the previous line's bytes (64 zeros for the first).
Changing, inserting or deleting a line makes :meth:`AuditLog.verify` fail at
the first line after it. Cutting entries off the end leaves a valid shorter
chain; that is caught by comparing with the copies kept elsewhere (each MLflow
audit run stores the log as it was, and its ``log_seq``/``log_head`` tags).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from daetalker.errors import IntegrityError

GENESIS = "0" * 64


def line_hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AuditLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Add ``entry`` (plus ``seq``, ``prev``, ``ts``) durably; returns what was written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # one writer at a time, across threads and processes
            try:
                fh.seek(0)
                lines = fh.read().splitlines()
                prev = line_hash(lines[-1]) if lines else GENESIS
                full = {**entry, "seq": len(lines), "prev": prev, "ts": entry.get("ts") or now_iso()}
                fh.seek(0, os.SEEK_END)
                fh.write(json.dumps(full, sort_keys=True, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return full

    def text(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""

    def entries(self) -> list[dict[str, Any]]:
        """All entries, after checking the chain."""
        return verify_log_text(self.text(), str(self.path))

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last line)."""
        lines = self.text().splitlines()
        return len(lines), line_hash(lines[-1]) if lines else GENESIS


def verify_log_text(text: str, where: str = "audit log") -> list[dict[str, Any]]:
    """Parse and check a log's chain; :class:`IntegrityError` names the first bad line."""
    out = []
    prev = GENESIS
    for i, line in enumerate(text.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            raise IntegrityError(f"{where}: line {i + 1} is not JSON (the log was edited)") from None
        if entry.get("prev") != prev or entry.get("seq") != i:
            raise IntegrityError(
                f"{where}: line {i + 1} does not follow line {i} (an entry was edited, inserted or removed); "
                f"compare with the audit_log.jsonl copies in the MLflow experiment 'daetalker-audit'"
            )
        prev = line_hash(line)
        out.append(entry)
    return out
