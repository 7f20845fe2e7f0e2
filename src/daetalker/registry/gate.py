"""The promotion gate as a pure function: metrics + thresholds -> a decision table.

Every rule becomes one row, so the table shows why a candidate passed or
failed, not only that it did. Policy for values that are not there:

- a candidate value that is missing, NaN or infinite fails its row;
- with no champion yet, the ``vs_champion`` rows pass (noted "no champion");
- a champion without a value for a metric cannot be compared: that row passes
  (noted); the floor on the same metric still applies to the candidate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from daetalker.registry.thresholds import Rule, Thresholds


@dataclass(frozen=True)
class GateRow:
    metric: str
    check: Literal["floor", "vs_champion"]
    value: float | None  # candidate's
    champion: float | None
    delta: float | None  # value - champion
    rule: str  # ">= 3" or "delta >= -0.1"
    threshold: float
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class DecisionTable:
    rows: tuple[GateRow, ...]
    passed: bool
    thresholds: dict[str, Any]

    @property
    def failures(self) -> list[GateRow]:
        return [r for r in self.rows if not r.passed]

    def summary(self) -> str:
        if self.passed:
            return "pass: every threshold holds"
        return "fail: " + "; ".join(f"{r.metric} {r.check} {r.rule}" + (f" ({r.note})" if r.note else "") for r in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary(), "thresholds": self.thresholds,
                "rows": [asdict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DecisionTable":
        return cls(tuple(GateRow(**r) for r in d["rows"]), bool(d["passed"]), dict(d.get("thresholds", {})))

    def format(self) -> str:
        """Fixed-width text table (printed by ``daetalker promote`` and stored with the decision)."""
        head = ("metric", "check", "value", "champion", "delta", "rule", "result")
        body = [
            (r.metric, r.check, _num(r.value), _num(r.champion), _num(r.delta), r.rule,
             ("pass" if r.passed else "FAIL") + (f" ({r.note})" if r.note else ""))
            for r in self.rows
        ]  # fmt: skip
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
        return "\n".join([*lines, f"decision: {self.summary()}"])


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _value(metrics: Mapping[str, float] | None, key: str) -> float | None:
    if metrics is None or key not in metrics:
        return None
    try:
        return float(metrics[key])
    except (TypeError, ValueError):
        return math.nan


def _floor_row(rule: Rule, cand: Mapping[str, float]) -> GateRow:
    v = _value(cand, rule.metric)
    if v is None or not math.isfinite(v):
        note = "candidate has no value" if v is None else "candidate value is not finite"
        return GateRow(rule.metric, "floor", v, None, None, str(rule), rule.value, False, note)
    return GateRow(rule.metric, "floor", v, None, None, str(rule), rule.value, rule.holds(v))


def _delta_row(rule: Rule, cand: Mapping[str, float], champ: Mapping[str, float] | None) -> GateRow:
    v, c = _value(cand, rule.metric), _value(champ, rule.metric)
    text = f"delta {rule}"
    if v is None or not math.isfinite(v):
        return GateRow(rule.metric, "vs_champion", v, c, None, text, rule.value, False, "candidate has no value")
    if champ is None:
        return GateRow(rule.metric, "vs_champion", v, None, None, text, rule.value, True, "no champion")
    if c is None or not math.isfinite(c):
        return GateRow(rule.metric, "vs_champion", v, c, None, text, rule.value, True, "champion has no value")
    d = v - c
    return GateRow(rule.metric, "vs_champion", v, c, d, text, rule.value, rule.holds(d))


def evaluate_gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    thresholds: Thresholds,
) -> DecisionTable:
    """One row per rule; the gate passes only if every row passes (and there is at least one)."""
    rows = [_floor_row(r, candidate) for r in thresholds.floors]
    rows += [_delta_row(r, candidate, champion) for r in thresholds.vs_champion]
    return DecisionTable(tuple(rows), bool(rows) and all(r.passed for r in rows), thresholds.to_dict())
