"""The promotion gate (pure) and its thresholds file: every rule, boundary and missing value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from daetalker.errors import ConfigError
from daetalker.registry.gate import DecisionTable, evaluate_gate
from daetalker.registry.names import GATE_METRICS, metrics_from_tags
from daetalker.registry.thresholds import Rule, Thresholds, default_path, load_thresholds

RULES = Thresholds(
    floors=(Rule("lse_c", ">=", 3.0), Rule("lse_d", "<=", 9.0), Rule("fid", "<=", 50.0), Rule("pose_mae", "<=", 10.0),
            Rule("face_found_rate", ">=", 0.9), Rule("lse_c_vs_gt", ">=", 0.5)),
    vs_champion=(Rule("lse_c", ">=", -0.1), Rule("lse_d", "<=", 0.1), Rule("fid", "<=", 1.0), Rule("pose_mae", "<=", 0.5),
                 Rule("face_found_rate", ">=", -0.02), Rule("lse_c_vs_gt", ">=", -0.1)),
)
GOOD = {"lse_c": 6.0, "lse_d": 7.0, "fid": 30.0, "pose_mae": 3.0, "face_found_rate": 0.95, "lse_c_vs_gt": 0.8}
# One step past each floor, in the metric's bad direction.
PAST_FLOOR = {"lse_c": 2.99, "lse_d": 9.01, "fid": 50.01, "pose_mae": 10.01, "face_found_rate": 0.89, "lse_c_vs_gt": 0.49}
# Worse than GOOD (as champion) by more than the tolerance; and by exactly the tolerance.
PAST_TOLERANCE = {"lse_c": 5.89, "lse_d": 7.11, "fid": 31.01, "pose_mae": 3.51, "face_found_rate": 0.92,
                  "lse_c_vs_gt": 0.69}
AT_TOLERANCE = {"lse_c": 5.9, "lse_d": 7.1, "fid": 31.0, "pose_mae": 3.5,
                "face_found_rate": 0.9301, "lse_c_vs_gt": 0.7001}  # 0.93 - 0.95 rounds past -0.02


def failed(table: DecisionTable) -> set[tuple[str, str]]:
    return {(r.metric, r.check) for r in table.failures}


def test_first_model_needs_only_the_floors() -> None:
    t = evaluate_gate(GOOD, None, RULES)
    assert t.passed and not t.failures and len(t.rows) == 2 * len(GATE_METRICS)
    deltas = [r for r in t.rows if r.check == "vs_champion"]
    assert all(r.note == "no champion" and r.champion is None and r.delta is None for r in deltas)
    assert t.summary() == "pass: every threshold holds"


@pytest.mark.parametrize("metric", GATE_METRICS)
def test_each_floor_alone_rejects(metric: str) -> None:
    t = evaluate_gate({**GOOD, metric: PAST_FLOOR[metric]}, None, RULES)
    assert not t.passed and failed(t) == {(metric, "floor")}
    assert metric in t.summary() and t.summary().startswith("fail:")


@pytest.mark.parametrize("metric", GATE_METRICS)
def test_floor_boundary_is_inclusive(metric: str) -> None:
    at_floor = {r.metric: r.value for r in RULES.floors}[metric]
    assert evaluate_gate({**GOOD, metric: at_floor}, None, RULES).passed


@pytest.mark.parametrize("metric", GATE_METRICS)
def test_each_regression_past_tolerance_alone_rejects(metric: str) -> None:
    t = evaluate_gate({**GOOD, metric: PAST_TOLERANCE[metric]}, GOOD, RULES)
    assert not t.passed and failed(t) == {(metric, "vs_champion")}
    row = next(r for r in t.rows if r.metric == metric and r.check == "vs_champion")
    assert row.champion == GOOD[metric] and row.delta == pytest.approx(PAST_TOLERANCE[metric] - GOOD[metric])


@pytest.mark.parametrize("metric", GATE_METRICS)
def test_not_worse_within_tolerance_passes(metric: str) -> None:
    assert evaluate_gate({**GOOD, metric: AT_TOLERANCE[metric]}, GOOD, RULES).passed


def test_equal_and_better_candidates_pass_worse_fails_everywhere() -> None:
    assert evaluate_gate(GOOD, GOOD, RULES).passed  # a retrain exactly as good is not blocked
    better = {"lse_c": 7.0, "lse_d": 6.0, "fid": 20.0, "pose_mae": 2.0, "face_found_rate": 1.0, "lse_c_vs_gt": 0.95}
    assert evaluate_gate(better, GOOD, RULES).passed
    t = evaluate_gate(GOOD, better, RULES)  # the old champion against the better one
    assert failed(t) == {(m, "vs_champion") for m in GATE_METRICS}


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf])
def test_missing_or_non_finite_candidate_value_fails_both_rows(bad: float | None) -> None:
    cand = dict(GOOD)
    if bad is None:
        del cand["fid"]
    else:
        cand["fid"] = bad
    t = evaluate_gate(cand, GOOD, RULES)
    assert not t.passed and failed(t) == {("fid", "floor"), ("fid", "vs_champion")}
    assert all(r.note for r in t.failures)


def test_champion_without_a_value_is_not_compared_but_floor_still_holds() -> None:
    champ = {k: v for k, v in GOOD.items() if k != "pose_mae"}
    t = evaluate_gate(GOOD, champ, RULES)
    row = next(r for r in t.rows if r.metric == "pose_mae" and r.check == "vs_champion")
    assert t.passed and row.passed and row.note == "champion has no value"
    assert not evaluate_gate({**GOOD, "pose_mae": 11.0}, champ, RULES).passed  # floor applies regardless


def test_no_rules_never_passes() -> None:
    assert not evaluate_gate(GOOD, None, Thresholds((), ())).passed


def test_table_text_and_round_trip() -> None:
    t = evaluate_gate({**GOOD, "fid": 60.0}, GOOD, RULES)
    text = t.format()
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "check", "value", "champion", "delta", "rule", "result"]
    assert len(lines) == 1 + 2 * len(GATE_METRICS) + 1 and lines[-1].startswith("decision: fail:")
    fid_floor = next(line for line in lines if line.startswith("fid") and "floor" in line)
    assert "60" in fid_floor and "<= 50" in fid_floor and "FAIL" in fid_floor
    back = DecisionTable.from_dict(t.to_dict())
    assert back == t and back.format() == text


def test_metrics_from_version_tags() -> None:
    tags = {"metric.lse_c": "6.5", "metric.fid": "oops", "git_commit": "abc"}
    m = metrics_from_tags(tags)
    assert m["lse_c"] == 6.5 and math.isnan(m["fid"]) and set(m) == {"lse_c", "fid"}
    assert not evaluate_gate({**GOOD, "fid": m["fid"]}, None, RULES).passed


# ------------------------------------------------------------------ thresholds file
def test_packaged_thresholds_cover_every_gate_metric() -> None:
    t = load_thresholds()
    assert {r.metric for r in t.floors} == {r.metric for r in t.vs_champion} == set(GATE_METRICS)
    ops = {r.metric: r.op for r in t.floors}
    assert ops == {"lse_c": ">=", "lse_d": "<=", "fid": "<=", "pose_mae": "<=", "face_found_rate": ">=",
                   "lse_c_vs_gt": ">="}
    # Tolerances let "not worse" through: the champion itself always passes against itself.
    assert all(r.holds(0.0) for r in t.vs_champion)
    assert len(t.sha256) == 64 and t.source == str(default_path())


def test_profile_replaces_floors_only() -> None:
    base, tiny = load_thresholds(), load_thresholds(profile="tiny")
    assert tiny.vs_champion == base.vs_champion
    assert {r.metric: r.value for r in tiny.floors} != {r.metric: r.value for r in base.floors}
    assert "profile tiny" in tiny.source
    # A profile the file does not mention keeps the base rules.
    assert load_thresholds(profile="paper256").floors == base.floors


def test_custom_file(tmp_path: Path) -> None:
    f = tmp_path / "gate.yaml"
    f.write_text("floors:\n  lse_c: {min: 1}\nvs_champion:\n  fid: {max_delta: 0}\n")
    t = load_thresholds(f)
    assert t.floors == (Rule("lse_c", ">=", 1.0),) and t.vs_champion == (Rule("fid", "<=", 0.0),)
    assert evaluate_gate({"lse_c": 1.0, "fid": 10.0}, {"fid": 10.0}, t).passed
    assert not evaluate_gate({"lse_c": 1.0, "fid": 10.1}, {"fid": 10.0}, t).passed


@pytest.mark.parametrize(
    "text, match",
    [
        ("floors:\n  lse_c: {min: 1, max: 2}\n", "exactly one of"),
        ("floors:\n  lse_c: {minimum: 1}\n", "exactly one of"),
        ("floors:\n  lse_c: {min: high}\n", "finite number"),
        ("floors:\n  lse_c: {min: true}\n", "finite number"),
        ("floors:\n  lse_c: {min: .nan}\n", "finite number"),
        ("vs_champion:\n  fid: {max: 1}\n", "exactly one of"),
        ("floor:\n  lse_c: {min: 1}\n", "unknown keys"),
        ("floors: 3\n", "expected a mapping"),
        ("floors: {}\n", "no rules"),
        ("floors: [\n", "not valid YAML"),
        ("floors:\n  lse_c: {min: 1}\nprofiles:\n  tiny:\n    gates: {}\n", "only floors and vs_champion"),
    ],
)
def test_bad_thresholds_files_name_the_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_thresholds(f, profile="tiny")
    assert str(f) in str(e.value)


def test_missing_thresholds_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such thresholds file"):
        load_thresholds(tmp_path / "nope.yaml")


# The demo models of issue 16, as their evaluations measured them (generated held-out video):
PIXEL_DEMO = {"lse_c": 0.009, "lse_d": 1.02, "fid": 224.1, "pose_mae": 5.17, "face_found_rate": 0.025,
              "lse_c_vs_gt": 0.03}  # the 32 px pixel DAE: a blurred head without eyes


@pytest.mark.parametrize("profile", ["tiny", "tiny-pixel"])
def test_demo_floors_refuse_a_model_without_a_face_or_lip_sync(profile: str) -> None:
    """Issue 16: a model whose video shows a face in < 90% of frames, or whose LSE-C is under half the
    real video's, is never champion, whatever its profile."""
    rules = load_thresholds(profile=profile)
    t = evaluate_gate(PIXEL_DEMO, None, rules)
    assert not t.passed and failed(t) == {("face_found_rate", "floor"), ("lse_c_vs_gt", "floor")}
    assert not evaluate_gate({**PIXEL_DEMO, "face_found_rate": 0.89, "lse_c_vs_gt": 0.9}, None, rules).passed
    assert not evaluate_gate({**PIXEL_DEMO, "face_found_rate": 1.0, "lse_c_vs_gt": 0.49}, None, rules).passed
    assert evaluate_gate({**PIXEL_DEMO, "face_found_rate": 0.9, "lse_c_vs_gt": 0.5}, None, rules).passed
