"""The evaluation report: one HTML page to read in a minute, charts as PNG beside it.

``report/report.html`` holds the headline table (generated | ground truth |
champion), three charts (``metrics.png``: each metric against the ceiling and
the champion; ``pose_<clip>.png``: yaw/pitch/roll generated vs ground truth;
``lse_curves.png``: SyncNet distance D(k) over AV offsets) and, per clip, a
side-by-side GT | generated mp4 with the clip's audio (ffmpeg ``hstack``).
Every number on the page is ``fmt(value)`` of the value in metrics.json.
"""

from __future__ import annotations

import html
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daetalker.errors import DaetalkerError
from daetalker.outputs import write_text

# (key, label, better): the rows of the headline table, in order
HEADLINE = (
    ("lse_d", "LSE-D", "lower"), ("lse_c", "LSE-C", "higher"), ("lse_d0", "LSE-D at offset 0", "lower"),
    ("lse_c0", "LSE-C at offset 0", "higher"), ("av_offset", "AV offset (frames)", "0"),
    ("av_offset_abs", "|AV offset| (frames)", "0"),
    ("fid", "FID", "lower"), ("pose_mae", "Pose MAE (deg)", "lower"), ("pose_std", "Pose std (deg)", "~GT"),
    ("pose_std_yaw", "Yaw std (deg)", "~GT"), ("pose_std_pitch", "Pitch std (deg)", "~GT"),
    ("pose_std_roll", "Roll std (deg)", "~GT"), ("beat_align", "Beat Align", "higher"),
    ("m_lmd", "M-LMD (face heights)", "lower"), ("mouth_pearson", "Mouth opening r", "higher"),
    ("face_found_rate", "Face found", "1"),
)  # fmt: skip
CHART_KEYS = ("lse_d", "lse_c", "fid", "pose_mae", "pose_std", "beat_align", "m_lmd", "mouth_pearson")


@dataclass
class ClipTrace:
    """One clip's series for the charts and its videos."""

    clip_id: str
    pose_gen: np.ndarray  # (N, 3)
    pose_gt: np.ndarray  # (N, 3)
    dists_gen: np.ndarray  # (2 vshift + 1,) D(k)
    dists_gt: np.ndarray
    offsets: np.ndarray  # AV offset of each entry of dists
    video: Path  # the generated mp4
    audio: Path
    gt_frames: np.ndarray  # uint8 (N, R, R, 3)


def fmt(value: Any) -> str:
    """How the page writes a number (tests look for exactly this)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.3f}"


# ------------------------------------------------------------------ charts
def metric_bars(metrics: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("generated", metrics), ("ground truth", metrics.get("ground_truth") or {})]
    if metrics.get("champion"):
        rows.append(("champion", metrics["champion"]))
    fig, axes = plt.subplots(2, 4, figsize=(12, 5))
    for ax, key in zip(axes.flat, CHART_KEYS):
        shown = [(n, m[key]) for n, m in rows if m.get(key) is not None]
        colors = {"generated": "C0", "ground truth": "C2", "champion": "C1"}
        ax.bar([n for n, _ in shown], [v for _, v in shown], color=[colors[n] for n, _ in shown])
        ax.set_title(key)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def pose_plot(trace: ClipTrace, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 5), sharex=True)
    t = np.arange(len(trace.pose_gt)) / 25.0
    for j, (ax, axis) in enumerate(zip(axes, ("yaw", "pitch", "roll"))):
        ax.plot(t, trace.pose_gt[:, j], color="C2", label="ground truth")
        ax.plot(t[: len(trace.pose_gen)], trace.pose_gen[:, j], color="C0", label="generated")
        ax.set_ylabel(f"{axis} (deg)")
    axes[0].legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(trace.clip_id)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def lse_curves(traces: list[ClipTrace], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, tr in enumerate(traces):
        ax.plot(tr.offsets, tr.dists_gen, color=f"C{i % 10}", label=f"{tr.clip_id} generated")
        ax.plot(tr.offsets, tr.dists_gt, color=f"C{i % 10}", ls="--", label=f"{tr.clip_id} ground truth")
    ax.set_xlabel("AV offset k (frames)")
    ax.set_ylabel("D(k)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def side_by_side(trace: ClipTrace, path: Path) -> Path:
    """GT | generated, both at the dataset's crop size, with the clip's audio (H.264 + AAC)."""
    from daetalker.data.ingest import FFMPEG

    n, res = trace.gt_frames.shape[:2]
    cmd = FFMPEG + [
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{res}x{res}", "-r", "25", "-i", "pipe:0",
        "-i", str(trace.video), "-i", str(trace.audio),
        "-filter_complex", f"[1:v]fps=25,scale={res}:{res}:flags=bicubic[g];[0:v][g]hstack=inputs=2[v]",
        "-map", "[v]", "-map", "2:a:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-t", f"{n / 25:.3f}", "-movflags", "+faststart",
        "-y", str(path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, input=np.ascontiguousarray(trace.gt_frames).tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise DaetalkerError(f"{path}: ffmpeg hstack failed: {proc.stderr.decode(errors='replace')[-300:]}")
    return path


# ------------------------------------------------------------------ page
def headline_table(metrics: dict[str, Any]) -> str:
    gt, champ = metrics.get("ground_truth") or {}, metrics.get("champion")
    head = "<tr><th>metric</th><th>better</th><th>generated</th><th>ground truth</th>"
    head += "<th>champion</th></tr>" if champ else "</tr>"
    body = []
    for key, label, better in HEADLINE:
        cells = [metrics.get(key), gt.get(key)] + ([champ.get(key)] if champ else [])
        tds = "".join(f'<td class="num" data-key="{key}">{html.escape(fmt(v))}</td>' for v in cells)
        body.append(f"<tr><td>{html.escape(label)}</td><td>{better}</td>{tds}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def per_clip_table(metrics: dict[str, Any]) -> str:
    keys = ("lse_d", "lse_c", "lse_d0", "lse_c0", "av_offset", "pose_mae", "beat_align", "m_lmd", "mouth_pearson")
    head = "<tr><th>clip</th><th>row</th>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>"
    body = []
    for clip in metrics.get("per_clip", []):
        for row in ("generated", "ground_truth"):
            vals = "".join(f"<td class='num'>{html.escape(fmt(clip[row].get(k)))}</td>" for k in keys)
            body.append(f"<tr><td>{html.escape(clip['clip_id'])}</td><td>{row}</td>{vals}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 8px}.num{text-align:right;font-family:monospace}"
         "img{max-width:100%}.note{color:#555;font-size:90%}")


def write_report(metrics: dict[str, Any], traces: list[ClipTrace], out_dir: Path) -> Path:
    """report.html + PNG charts + side-by-side mp4s in ``out_dir``; returns the html path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric_bars(metrics, out_dir / "metrics.png")
    lse_curves(traces, out_dir / "lse_curves.png")
    clips = []
    for tr in traces:
        pose_plot(tr, out_dir / f"pose_{tr.clip_id}.png")
        side_by_side(tr, out_dir / f"side_by_side_{tr.clip_id}.mp4")
        cid = html.escape(tr.clip_id)
        clips.append(f"<h3>{cid}</h3><p>ground truth | generated</p>"
                     f'<video controls width="512" src="side_by_side_{cid}.mp4"></video>'
                     f'<img src="pose_{cid}.png" alt="pose {cid}">')
    enc = metrics.get("encoding") or {}
    enc_text = ", ".join(f"{k}={v}" for k, v in enc.items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>DAE-Talker evaluation</title><style>{STYLE}</style></head><body>
<h1>DAE-Talker evaluation</h1>
<p>model <code>{html.escape(str(metrics.get('model')))}</code>, split <b>{html.escape(str(metrics.get('split')))}</b>,
{metrics.get('clips')} clips, DDIM steps {html.escape(str(metrics.get('steps')))}, reference guidance
{html.escape(str(metrics.get('guidance', 1.0)))}, pose steering {'on' if metrics.get('steer_pose') else 'off'}, mouth gain
{html.escape(str(metrics.get('mouth_gain', 1.0)))}.</p>
{headline_table(metrics)}
<p class="note">LSE-D / LSE-C take the best AV offset in [-15, 15] (the SyncNet protocol), so audio out of
sync by a few frames scores almost as well as synced audio; the AV offset reveals it. The rows "at offset 0"
read the same curve D(k) at k = 0, as the video plays: a lag shows there.
LSE with SyncNet <code id="syncnet-sha256">{html.escape(str(metrics.get('syncnet_sha256')))}</code>;
encoding: {html.escape(enc_text)}. FID from {metrics.get('fid_frames')} generated vs
{metrics.get('fid_real_frames')} real frames (compare only at equal counts).
{html.escape(str(metrics.get('ground_truth_note', '')))}.</p>
<h2>Metrics against the ceiling{' and the champion' if metrics.get('champion') else ''}</h2>
<img src="metrics.png" alt="metric bars">
<h2>Lip sync: D(k) over AV offsets (solid generated, dashed ground truth)</h2>
<img src="lse_curves.png" alt="LSE curves">
<h2>Per clip</h2>
{per_clip_table(metrics)}
{''.join(clips)}
</body></html>
"""
    return write_text(out_dir / "report.html", page)
