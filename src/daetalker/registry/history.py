"""Every alias move of a model: who, when, why, which version - read from the audit runs.

OSS MLflow keeps only the current aliases; the audit experiment keeps the
past. One row per planned move (or one row for a decision that moved
nothing), with whether it was applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daetalker.registry import audit
from daetalker.registry.audit_log import AuditLog
from daetalker.registry.names import CHAMPION, model_name
from daetalker.registry.retry import RetryPolicy, bounded_http


@dataclass(frozen=True)
class HistoryEvent:
    time: str  # when the move was applied (outcome time), else when it was decided
    model: str
    action: str  # promote | rollback
    version: str  # the version the decision was about
    alias: str  # "" for a decision that planned no move
    from_version: str
    to_version: str
    applied: bool
    status: str  # committed | partial | aborted | intent (still open: reconciled by the next change)
    decision: str  # pass | fail
    summary: str
    actor: str
    actor_source: str
    reason: str
    origin: str
    audit_run_id: str


def _events(run: Any) -> list[HistoryEvent]:
    t = run.data.tags
    applied = set(filter(None, t.get("applied", "").split(",")))
    common = dict(
        time=t.get("outcome_at") or t.get("decided_at", ""), model=t.get("model", ""), action=t.get("action", ""),
        version=t.get("version", ""), status=t.get("status", ""), decision=t.get("decision", ""),
        summary=t.get("summary", ""), actor=t.get("actor", ""), actor_source=t.get("actor_source", ""),
        reason=t.get("reason", ""), origin=t.get("origin", ""), audit_run_id=run.info.run_id,
    )  # fmt: skip
    moves = [m for m in t.get("moves", "").split(";") if m]
    if not moves:
        return [HistoryEvent(alias="", from_version="", to_version="", applied=False, **common)]
    out = []
    for m in moves:
        alias, _, span = m.partition(":")
        src, _, dst = span.partition("->")
        out.append(HistoryEvent(alias=alias, from_version="" if src == "-" else src, to_version=dst,
                                applied=alias in applied, **common))  # fmt: skip
    return out


def history(speaker: str, *, tracking_uri: str | None = None, policy: RetryPolicy = RetryPolicy()) -> list[HistoryEvent]:
    """All decisions on ``talker-<speaker>``, oldest first."""
    from mlflow import MlflowClient

    from daetalker.services.mlflow_server import ensure_tracking_uri

    name = model_name(speaker)
    client = MlflowClient(tracking_uri or ensure_tracking_uri())
    with bounded_http(policy):
        runs = audit.search_audit_runs(client, name, policy)
    return [e for run in runs for e in _events(run)]


def champion_at(events: list[HistoryEvent], when: datetime) -> str | None:
    """The version that was champion at ``when`` (timezone-aware), by the applied moves."""
    current = None
    for e in sorted(events, key=lambda e: e.time):
        if e.alias == CHAMPION and e.applied and datetime.fromisoformat(e.time) <= when:
            current = e.to_version
    return current


def format_history(events: list[HistoryEvent]) -> str:
    head = ("time (UTC)", "action", "alias", "move", "applied", "decision", "actor", "reason", "audit run")
    rows = [
        (e.time.replace("+00:00", "")[:23], f"{e.action} v{e.version}", e.alias or "-",
         f"{e.from_version or '-'} -> {e.to_version}" if e.alias else "-",
         ("yes" if e.applied else "no") + ("" if e.status in ("committed", "aborted") else f" ({e.status})"),
         e.decision, f"{e.actor} [{e.actor_source}]", e.reason, e.audit_run_id[:8])
        for e in events
    ]  # fmt: skip
    if not rows:
        return "no decisions recorded"
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def verify_local_log(speaker: str, state_dir: Path | str | None = None) -> tuple[Path, int]:
    """Check this machine's hash-chained log of ``speaker``; (path, entries). IntegrityError if broken."""
    from daetalker.registry.promote import audit_log_path

    path = audit_log_path(model_name(speaker), state_dir)
    return path, len(AuditLog(path).entries())
