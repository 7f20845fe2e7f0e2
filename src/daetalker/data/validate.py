"""``daetalker validate``: great-expectations suites over a processed dataset.

Two suites: ``manifest`` (one row per clip, with facts measured from the clip's
files: frame/audio/mel/label lengths, landmark extent, visible crop; a file that
cannot be read is one failure naming it and the cause, its facts left out) and
``frames`` (every row of every labels.parquet). Results go beside the data as
validation.json (deterministic: no run ids or times, so re-validating the
same data changes no bytes of the DVC-tracked folder) and validation.html.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daetalker.config.preprocess import PreprocessConfig
from daetalker.data import dataset as ds
from daetalker.data.face_crop import visible_fraction
from daetalker.errors import DaetalkerError

JSON_NAME = "validation.json"
HTML_NAME = "validation.html"
SPLITS = ["train", "val", "test"]
MEASURED = ["frames_rows", "frames_side", "labels_rows", "landmarks_rows", "mel_rows", "audio_samples",
            "audio_rate", "expected_mel_rows", "expected_audio_samples", "landmark_min", "landmark_max",
            "crop_visible", "usable_s", "unreadable"]
# Failures whose cause GX's own wording does not name: the fix, said once.
FIXES = {
    ("expect_column_distinct_values_to_contain_set", "split"):
        "the train split is empty: re-run `daetalker preprocess` into this folder (with fewer than "
        f"{ds.MIN_SOURCES_PER_SOURCE} recordings it splits each one by time; docs/dataset.md, Splits) "
        "or add recordings of the speaker",
}


class ValidationFailed(DaetalkerError):
    """The dataset as a whole fails its expectations; the message names them and the clips."""


@dataclass
class FailedExpectation:
    suite: str
    expectation: str  # e.g. expect_column_values_to_be_between
    column: str
    detail: str  # observed value or unexpected share (for ``unreadable``: the files and causes)
    clips: list[str] = field(default_factory=list)
    fix: str = ""

    def __str__(self) -> str:
        clips = f" in {', '.join(self.clips[:8])}{' ...' if len(self.clips) > 8 else ''}" if self.clips else ""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.suite}: {self.expectation}({self.column}) {self.detail}{clips}{fix}"


@dataclass
class ValidationResult:
    success: bool
    failed: list[FailedExpectation]
    evaluated: int
    json_path: Path
    html_path: Path
    n_clips: int
    usable_minutes: float

    def raise_for_failure(self) -> None:
        if not self.success:
            lines = "\n  ".join(str(f) for f in self.failed)
            raise ValidationFailed(f"{self.json_path.parent}: dataset fails {len(self.failed)} expectation(s) "
                                   f"(report: {self.html_path}):\n  {lines}")


# ------------------------------------------------------------------ tables
def measure_clips(data_dir: Path) -> "Any":
    """manifest.parquet plus facts read from each clip's files (cheap: headers and mmaps).

    Each file is read on its own: a missing or torn one leaves only its own facts
    empty (NaN, which the expectations skip) and says why in ``unreadable``, so it
    is one failure naming the file and the cause, not one per length it hides.
    """
    import pandas as pd

    data_dir = Path(data_dir)
    if not (data_dir / ds.MANIFEST).is_file():
        raise DaetalkerError(f"{data_dir / ds.MANIFEST}: no manifest (fix: run `daetalker preprocess` first)")
    m = pd.read_parquet(data_dir / ds.MANIFEST)
    facts = []
    for row in m.itertuples():
        f: dict[str, Any] = {k: np.nan for k in MEASURED}
        f["crop_visible"] = visible_fraction(row.crop_x0, row.crop_y0, row.crop_size, row.src_width, row.src_height)
        f["usable_s"] = 0.0 if row.silent else row.duration_s
        f["expected_mel_rows"], f["expected_audio_samples"] = 4 * row.n_frames, 640 * row.n_frames
        errors = []
        for name in ds.FILES:
            try:
                f.update(_file_facts(name, ds.read_header(ds.clip_dir(data_dir, row.clip_id) / name,
                                                          where=f"{ds.CLIPS}/{row.clip_id}/{name}")))
            except ds.DatasetError as exc:
                errors.append(str(exc))
        f["unreadable"] = "; ".join(errors) or None
        facts.append(f)
    return pd.concat([m.reset_index(drop=True), pd.DataFrame(facts, columns=MEASURED)], axis=1)


def _file_facts(name: str, h: Any) -> dict[str, Any]:
    """The measured facts of one clip file from its header (:func:`ds.read_header`)."""
    if name == "frames.npy":
        return {"frames_rows": h.shape[0], "frames_side": h.shape[1] if h.ndim > 1 else np.nan}
    if name == "landmarks.npy":
        lo, hi = np.inf, -np.inf
        for i in range(0, h.shape[0], 2000):  # bounded memory on long clips
            xy = np.asarray(h[i : i + 2000, :, :2])
            lo, hi = min(lo, float(np.nanmin(xy))), max(hi, float(np.nanmax(xy)))
        return {"landmarks_rows": h.shape[0], "landmark_min": lo, "landmark_max": hi}
    if name == "mel.npy":
        return {"mel_rows": h.shape[0]}
    if name == "audio.wav":
        return {"audio_samples": h.frames, "audio_rate": h.samplerate}
    return {"labels_rows": h.num_rows}


def frame_table(data_dir: Path, clip_ids: list[str]) -> "Any":
    import pandas as pd

    parts = []
    for cid in clip_ids:
        p = ds.clip_dir(data_dir, cid) / "labels.parquet"
        try:
            df = pd.read_parquet(p)
        except (OSError, ValueError):  # missing or torn: the manifest suite's ``unreadable`` names it
            continue
        df.insert(0, "clip_id", cid)
        parts.append(df)
    cols = ["clip_id", *ds.LABEL_COLUMNS]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


# ------------------------------------------------------------------ suites
def manifest_expectations(cfg: PreprocessConfig) -> list:
    import great_expectations.expectations as gxe

    def pair(column_A: str, column_B: str):  # noqa: N803 - GX's names
        # a fact of an unreadable file is NaN: ``unreadable`` reports it, not every length it hides
        return gxe.ExpectColumnPairValuesToBeEqual(column_A=column_A, column_B=column_B,
                                                   ignore_row_if="either_value_is_missing")

    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableColumnsToMatchSet(column_set=list(ds.MANIFEST_SCHEMA) + MEASURED, exact_match=True),
        gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="clip_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="source_sha256", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnValuesToBeInSet(column="fps", value_set=[float(cfg.fps)]),
        gxe.ExpectColumnValuesToBeInSet(column="resolution", value_set=[cfg.resolution]),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
        gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train"]),
        gxe.ExpectColumnValuesToBeNull(column="unreadable"),
        gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=round(cfg.min_seconds * cfg.fps)),
        pair(column_A="frames_rows", column_B="n_frames"),
        pair(column_A="frames_side", column_B="resolution"),
        pair(column_A="labels_rows", column_B="n_frames"),
        pair(column_A="landmarks_rows", column_B="n_frames"),
        pair(column_A="mel_rows", column_B="expected_mel_rows"),
        pair(column_A="audio_samples", column_B="expected_audio_samples"),
        gxe.ExpectColumnValuesToBeInSet(column="audio_rate", value_set=[cfg.sample_rate]),
        gxe.ExpectColumnValuesToBeBetween(column="detection_rate", min_value=cfg.min_detection_rate, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="crop_visible", min_value=cfg.min_crop_visible, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="landmark_min", min_value=0.0),
        gxe.ExpectColumnValuesToBeBetween(column="landmark_max", max_value=float(cfg.resolution)),
        gxe.ExpectColumnValuesToNotBeNull(column="audio_dbfs"),
        gxe.ExpectColumnSumToBeBetween(column="usable_s", min_value=60.0 * cfg.min_usable_minutes),
    ]


def frame_expectations(cfg: PreprocessConfig) -> list:
    import great_expectations.expectations as gxe

    out = [gxe.ExpectCompoundColumnsToBeUnique(column_list=["clip_id", "frame"])]
    for col in ("yaw", "pitch", "roll", "mouth_open", "det_score"):
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
    for col, lim in (("yaw", cfg.max_abs_yaw), ("pitch", cfg.max_abs_pitch), ("roll", cfg.max_abs_roll)):
        out.append(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=-lim, max_value=lim, mostly=cfg.pose_mostly))
    out.append(gxe.ExpectColumnValuesToBeBetween(column="mouth_open", min_value=0.0, max_value=cfg.max_mouth_open,
                                                 mostly=cfg.pose_mostly))
    out.append(gxe.ExpectColumnValuesToBeBetween(column="det_score", min_value=0.0, max_value=1.0))
    return out


def run_suite(name: str, df, expectations: list, index_columns: list[str]) -> dict[str, Any]:
    """Run one suite on a dataframe in an ephemeral context; the result as a plain dict."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = ctx.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name) \
        .add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=name))
    for e in expectations:
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df},
                    result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns})
    return result.to_json_dict()


def _clean(result: dict[str, Any], suite: str) -> tuple[dict[str, Any], list[FailedExpectation]]:
    """GX's result without ids, times and full unexpected lists (deterministic, small),
    plus the failed expectations with the clips they concern."""
    out, failed = [], []
    for r in result["results"]:
        cfg = r["expectation_config"]
        kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        res = dict(r.get("result") or {})
        index = res.pop("unexpected_index_list", None) or []
        for k in ("unexpected_list", "unexpected_index_query", "partial_unexpected_index_list"):
            res.pop(k, None)
        clips = sorted({str(i.get("clip_id")) for i in index if isinstance(i, dict) and "clip_id" in i})
        entry = {"expectation": cfg["type"], "kwargs": kwargs, "success": bool(r["success"]),
                 "result": res, "failing_clips": clips}
        if r.get("exception_info", {}).get("raised_exception"):
            entry["exception"] = str(r["exception_info"].get("exception_message"))
        out.append(entry)
        if not r["success"]:
            column = kwargs.get("column") or ",".join(
                str(v) for k, v in kwargs.items() if k in ("column_A", "column_B", "column_list"))
            failed.append(FailedExpectation(suite, cfg["type"], column or "table", _observed(res, entry), clips))
    clean = {"suite": suite, "success": bool(result["success"]), "statistics": result["statistics"], "results": out}
    return clean, failed


def _observed(res: dict[str, Any], entry: dict[str, Any]) -> str:
    if "exception" in entry:
        return f"raised: {entry['exception']}"
    if "observed_value" in res:
        v = res["observed_value"]
        return f"observed {v:.6g}" if isinstance(v, float) else f"observed {v}"
    if "unexpected_count" in res:
        return f"{res['unexpected_count']} unexpected of {res.get('element_count')} ({res.get('unexpected_percent', 0):.2f}%)"
    return "failed"


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


# ------------------------------------------------------------------ entry point
def validate_dataset(data_dir: Path, cfg: PreprocessConfig) -> ValidationResult:
    """Validate ``data_dir``; write validation.json / validation.html beside it.

    ``cfg`` is the preprocess section (a whole :class:`~daetalker.config.Config`
    works too). Returns the result; the caller decides whether a failure stops
    the pipeline (``result.raise_for_failure()``, as the CLI does).
    """
    cfg = getattr(cfg, "preprocess", cfg)
    data_dir = Path(data_dir)
    clips = measure_clips(data_dir)
    frames = frame_table(data_dir, list(clips["clip_id"]))
    m_res, m_failed = _clean(run_suite("manifest", clips, manifest_expectations(cfg), ["clip_id"]), "manifest")
    f_res, f_failed = _clean(run_suite("frames", frames, frame_expectations(cfg), ["clip_id", "frame"]), "frames")
    failed = _explain(m_failed, clips) + f_failed
    usable = float(clips["usable_s"].sum()) / 60 if len(clips) else 0.0
    summary = {
        "success": not failed,
        "clips": int(len(clips)),
        "frames": int(len(frames)),
        "usable_minutes": round(usable, 4),
        "splits": {s: int((clips["split"] == s).sum()) for s in SPLITS},
        "split_strategy": _split_strategy(data_dir),
        "quarantined_sources": _quarantine_count(data_dir),
        "failed": [str(f) for f in failed],
        "suites": [m_res, f_res],
    }
    json_path, html_path = data_dir / JSON_NAME, data_dir / HTML_NAME
    ds.write_text(json.dumps(_json_safe(summary), indent=1, sort_keys=True) + "\n", json_path)
    ds.write_text(render_html(summary, data_dir), html_path)
    result = ValidationResult(not failed, failed, sum(len(s["results"]) for s in (m_res, f_res)), json_path,
                              html_path, int(len(clips)), usable)
    return result


def _explain(failed: list[FailedExpectation], clips) -> list[FailedExpectation]:
    """Unreadable files: the files and their causes instead of a share; known failures: the fix."""
    for f in failed:
        if f.column == "unreadable":
            f.detail = "; ".join(str(e) for e in clips["unreadable"].dropna())
        f.fix = FIXES.get((f.expectation, f.column), "")
    return failed


def _split_strategy(data_dir: Path) -> str | None:
    """How preprocess split the clips (preprocess.json), None for datasets written without one."""
    try:
        return json.loads((Path(data_dir) / ds.RUN_RECORD).read_text()).get("split_strategy")
    except (OSError, ValueError):
        return None


def _quarantine_count(data_dir: Path) -> int:
    import pandas as pd

    p = Path(data_dir) / ds.QUARANTINE
    return int(pd.read_parquet(p)["source"].nunique()) if p.is_file() else 0


# ------------------------------------------------------------------ report
def render_html(summary: dict[str, Any], data_dir: Path) -> str:
    """A standalone page: verdict, dataset figures, one table per suite."""
    e = html.escape
    ok = summary["success"]
    head = (f"<h1>Dataset validation: <span class='{'ok' if ok else 'bad'}'>{'PASSED' if ok else 'FAILED'}</span></h1>"
            f"<p>{e(Path(data_dir).name)}: {summary['clips']} clips, {summary['frames']} frames, "
            f"{summary['usable_minutes']:.2f} usable minutes; splits "
            + ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
            + (f" ({e(summary['split_strategy'])})" if summary.get("split_strategy") else "")
            + f"; {summary['quarantined_sources']} source(s) in quarantine.</p>")
    body = [head]
    if summary["failed"]:
        body.append("<h2>Failures</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in summary["failed"]) + "</ul>")
    for suite in summary["suites"]:
        st = suite["statistics"]
        body.append(f"<h2>Suite <code>{e(suite['suite'])}</code>: {st['successful_expectations']}/"
                    f"{st['evaluated_expectations']} passed</h2>")
        body.append("<table><tr><th></th><th>expectation</th><th>arguments</th><th>observed</th>"
                    "<th>failing clips</th></tr>")
        for r in suite["results"]:
            args = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items())
            mark = "<span class='ok'>&#10004;</span>" if r["success"] else "<span class='bad'>&#10008;</span>"
            body.append(f"<tr><td>{mark}</td><td>{e(r['expectation'])}</td><td>{e(args)}</td>"
                        f"<td>{e(_observed(r['result'], r))}</td><td>{e(', '.join(r['failing_clips'][:20]))}"
                        f"{' ...' if len(r['failing_clips']) > 20 else ''}</td></tr>")
        body.append("</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;width:100%}"
             "td,th{border:1px solid #ccc;padding:4px 6px;font-size:90%;text-align:left;vertical-align:top}"
             ".ok{color:#080}.bad{color:#b00}code{background:#eee}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>daetalker validation</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
