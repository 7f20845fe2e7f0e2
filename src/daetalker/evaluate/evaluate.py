"""Evaluate a talker on a dataset split (method.md section 6): generated rows beside a ground-truth ceiling.

For every clip of the split the talker (loaded once) renders the clip's own audio
(``render_video``, H.264 as ``generate`` writes it); the mp4 is decoded back
at 25 fps and scaled to the dataset's crop resolution, so generated and real
frames are scored at the same crop and size. Each metric is computed twice:

- **generated**: decoded frames of the mp4 against the clip's audio and labels;
- **ground truth** (the ceiling row): the dataset's own ``frames.npy`` +
  ``audio.wav`` + ``labels.parquet`` + ``landmarks.npy``. Its FID is the FID of
  the first half of every clip's frames against the second halves (the floor
  FID can reach with this many frames); pose MAE, M-LMD and mouth-opening
  correlation compare a clip with itself, so they are omitted (``None``).

Pose, mouth opening and landmarks of generated frames are measured with the
estimators preprocessing labels the dataset with (``data.preprocess``'s pass
2: BlazeFace ``detect_refined`` -> Face Mesh ``from_detection`` ->
``head_pose`` on the crop's camera, ``mouth_opening``), at the same labelling
size. Frames where no face is found are left out of those metrics and counted
(``face_found_rate``).

LSE-D / LSE-C are the protocol's (best offset); LSE-D / LSE-C at offset 0 read the
same D(k) at the offset the talker actually plays (``lse.py``), so a talker whose
lips lag its audio is not scored as in sync.
LSE numbers name the SyncNet weights (``syncnet_sha256``) and the encoding
(``encoding``: read back from the x264 settings the mp4 carries).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from daetalker.errors import DaetalkerError
from daetalker.outputs import write_text
from daetalker.timebase import FPS

if TYPE_CHECKING:
    from daetalker.generate.model import Talker

REFINE_BELOW = 0.2  # as data.preprocess: refine detections smaller than this fraction of the frame
METRICS_FILE = "metrics.json"
GT_NOTE = ("ground truth = the dataset's frames.npy + audio.wav + labels (uncompressed crops); its FID is the first "
           "half of each clip's frames vs the second halves; pose_mae, m_lmd and mouth_pearson compare a clip with "
           "itself and are omitted")


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    metrics_path: Path
    report_path: Path


@dataclass
class ClipMeasure:
    """What one video (generated or ground truth) gives the metrics."""

    frames: np.ndarray  # uint8 (N, R, R, 3)
    pose: np.ndarray  # (N, 3) yaw, pitch, roll in degrees; NaN where no face
    mouth: np.ndarray  # (N,) mouth opening; NaN where no face
    landmarks: np.ndarray  # (N, 468, 3) in crop px at R; NaN where no face
    found: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


# ------------------------------------------------------------------ decoding
def decode_video(path: Path, size: int, n_frames: int | None = None) -> np.ndarray:
    """mp4 -> uint8 (N, size, size, 3) RGB at 25 fps (bicubic scaling to the dataset's crop size)."""
    from daetalker.data.ingest import FFMPEG

    cmd = FFMPEG + ["-i", str(path), "-an", "-vf", f"fps={FPS},scale={size}:{size}:flags=bicubic",
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise DaetalkerError(f"{path}: ffmpeg could not decode it: {proc.stderr.decode(errors='replace')[-300:]}")
    frames = np.frombuffer(proc.stdout, np.uint8).reshape(-1, size, size, 3)
    return frames[:n_frames] if n_frames is not None else frames


def encoding_settings(path: Path) -> dict[str, Any]:
    """The codec settings an mp4 carries (x264 writes its options into the stream): crf, preset, ..."""
    head = Path(path).read_bytes()[: 1 << 20].decode("latin-1")
    found = re.search(r"x264 - core (\d+).*?options: ([^\x00]*)", head)
    settings: dict[str, Any] = {"container": "mp4", "video_codec": "h264", "pix_fmt": "yuv420p", "fps": FPS,
                                "audio_codec": "aac"}
    if found:
        opts = dict(kv.split("=", 1) for kv in found.group(2).split() if "=" in kv)
        settings.update(encoder=f"x264 core {found.group(1)}", crf=float(opts.get("crf", "nan")),
                        rc=opts.get("rc", ""), bframes=int(opts.get("bframes", 0)))
    return settings


# ------------------------------------------------------------------ labelling
class FrameLabeller:
    """Per-frame pose / mouth / landmarks with preprocessing's estimators and its labelling geometry."""

    def __init__(self, pcfg) -> None:
        from daetalker.face.detector import FaceDetector
        from daetalker.face.mesh import FaceMesh

        self.pcfg = pcfg
        self.detector = FaceDetector(min_score=pcfg.min_face_score)
        self.mesh = FaceMesh()

    def camera(self, row: dict[str, Any], side: int) -> np.ndarray:
        """The crop's pinhole camera as preprocess built it from the source geometry (else a 53 deg guess)."""
        from daetalker.data.head_pose import camera_matrix

        keys = ("src_width", "src_height", "crop_x0", "crop_y0", "crop_size")
        if all(k in row and row[k] == row[k] for k in keys):
            s = side / float(row["crop_size"])
            w, h = float(row["src_width"]), float(row["src_height"])
            return camera_matrix(max(w, h) * s, (w / 2 - row["crop_x0"]) * s, (h / 2 - row["crop_y0"]) * s)
        return camera_matrix(float(side), side / 2, side / 2)

    def __call__(self, frames: np.ndarray, row: dict[str, Any]) -> ClipMeasure:
        import cv2

        from daetalker.data.head_pose import head_pose
        from daetalker.face.mesh import mouth_opening

        n, res = len(frames), frames.shape[1]
        side = max(self.pcfg.label_size, res)  # Face Mesh sees the crop at this size, as in preprocess
        cam = self.camera(row, side)
        pose = np.full((n, 3), np.nan)
        mouth = np.full(n, np.nan)
        lms = np.full((n, 468, 3), np.nan, np.float32)
        found = np.zeros(n, bool)
        for i, frame in enumerate(frames):
            crop = frame if side == res else cv2.resize(np.ascontiguousarray(frame), (side, side),
                                                        interpolation=cv2.INTER_CUBIC)
            dets = self.detector.detect_refined(crop, small=REFINE_BELOW)
            if not dets:
                continue
            det = max(dets, key=lambda d: d.area)  # the speaker: the largest face (preprocess.pick_speaker)
            lm, presence = self.mesh.from_detection(crop, det)
            if presence < self.pcfg.min_mesh_presence:
                continue
            found[i] = True
            pose[i] = head_pose(lm, cam)
            mouth[i] = mouth_opening(lm)
            lms[i] = lm * (res / side)
        return ClipMeasure(np.asarray(frames), pose, mouth, lms, found)


def ground_truth_measure(data_dir: Path, cid: str) -> ClipMeasure:
    """The dataset's own frames and labels of one clip."""
    import pandas as pd

    from daetalker.data import dataset as ds

    d = ds.clip_dir(data_dir, cid)
    frames = np.asarray(ds.open_frames(data_dir, cid))
    n = len(frames)
    labels = pd.read_parquet(d / "labels.parquet") if (d / "labels.parquet").is_file() else None
    if labels is not None:
        pose = labels[["yaw", "pitch", "roll"]].to_numpy(np.float64)[:n]
        mouth = labels["mouth_open"].to_numpy(np.float64)[:n]
        found = labels["face_found"].to_numpy(bool)[:n] if "face_found" in labels else np.ones(n, bool)
    else:
        pose, mouth, found = np.full((n, 3), np.nan), np.full(n, np.nan), np.zeros(n, bool)
    lm_path = d / "landmarks.npy"
    lms = np.load(lm_path)[:n] if lm_path.is_file() else np.full((n, 468, 3), np.nan, np.float32)
    return ClipMeasure(frames, pose, mouth, lms, found)


# ------------------------------------------------------------------ metrics of one clip
def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def pose_scores(pose: np.ndarray, audio: np.ndarray) -> dict[str, float]:
    """Pose diversity (std per axis and mean) and Beat Align on the frames with a face."""
    from daetalker.evaluate.pose_metrics import AXES, beat_align_score, pose_std

    ok = ~np.isnan(pose).any(axis=1)
    if ok.sum() < 2:
        return {"pose_std": math.nan, **{f"pose_std_{a}": math.nan for a in AXES}, "beat_align": math.nan}
    std = pose_std(pose[ok])
    # Beat Align needs the time axis intact: gaps are filled by interpolation first.
    filled = np.stack([np.interp(np.arange(len(pose)), np.flatnonzero(ok), pose[ok, j]) for j in range(3)], axis=1)
    return {"pose_std": float(np.mean(list(std.values()))), **{f"pose_std_{a}": v for a, v in std.items()},
            "beat_align": beat_align_score(audio, filled)}


def versus_ground_truth(gen: ClipMeasure, gt: ClipMeasure) -> dict[str, float]:
    """Pose MAE, M-LMD and mouth-opening Pearson r over frames where both have a face."""
    from daetalker.evaluate.landmark_metrics import mouth_lmd
    from daetalker.evaluate.pose_metrics import pose_mae

    n = min(len(gen.pose), len(gt.pose))
    ok = (~np.isnan(gen.pose[:n]).any(1) & ~np.isnan(gt.pose[:n]).any(1)
          & ~np.isnan(gen.landmarks[:n, :, :2]).any((1, 2)) & ~np.isnan(gt.landmarks[:n, :, :2]).any((1, 2)))
    out = {"pose_mae": math.nan, "m_lmd": math.nan, "mouth_pearson": math.nan}
    if ok.sum() >= 1:
        out["pose_mae"] = pose_mae(gen.pose[:n][ok], gt.pose[:n][ok])["mean"]
        out["m_lmd"] = mouth_lmd(gen.landmarks[:n][ok], gt.landmarks[:n][ok])
    m_ok = ok & ~np.isnan(gen.mouth[:n]) & ~np.isnan(gt.mouth[:n])
    a, b = gen.mouth[:n][m_ok], gt.mouth[:n][m_ok]
    if m_ok.sum() >= 2 and a.std() > 0 and b.std() > 0:
        out["mouth_pearson"] = float(np.corrcoef(a, b)[0, 1])
    return out


def fid_frames(frames: np.ndarray, cap: int | None) -> np.ndarray:
    """At most ``cap`` frames, evenly spaced over the clip (FID on CPU costs ~0.1 s a frame)."""
    if cap is None or len(frames) <= cap:
        return np.asarray(frames)
    return np.asarray(frames)[np.linspace(0, len(frames) - 1, cap).round().astype(int)]


# ------------------------------------------------------------------ aggregate
def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


LSE_KEYS = ("lse_d", "lse_c", "lse_d0", "lse_c0", "av_offset_abs")  # of mean_lse; see lse.py on the offset-0 pair
CLIP_KEYS = ("pose_std", "pose_std_yaw", "pose_std_pitch", "pose_std_roll", "beat_align", "pose_mae", "m_lmd",
             "mouth_pearson", "face_found_rate")


def aggregate(lse_results: list, rows: list[dict[str, Any]], fid_value: float | None) -> dict[str, Any]:
    """Mean over clips (LSE via ``mean_lse``: one weights hash), FID of the pooled frames."""
    from daetalker.evaluate.lse import mean_lse

    out: dict[str, Any] = {k: v for k, v in mean_lse(lse_results).items() if k in LSE_KEYS}
    out["av_offset"] = float(np.mean([r.offset for r in lse_results]))  # signed: a talker's systematic lag
    out["fid"] = _nan_to_none(fid_value) if fid_value is not None else None
    for k in CLIP_KEYS:
        out[k] = _mean(rows, k)
    return out


# ------------------------------------------------------------------ the whole evaluation
def evaluate_model(model: str | Path | Talker, data_dir: Path, out_dir: Path, *, syncnet_weights: Path, cfg,
                   split: str = "test", steps: int | None = None, guidance: float | None = None,
                   champion_metrics: dict | None = None,
                   max_clips: int | None = None, fid_frames_per_clip: int | None = None, seed: int = 0,
                   progress: bool = False, source: str | None = None) -> EvalResult:
    """Generate every clip of ``split`` from its audio, score generated vs ground truth, write metrics + report.

    ``model``: a bundle folder (verified, loaded once for all clips) or a loaded
    ``generate.model.Talker``; a registered ``models:/`` URI is the caller's to fetch
    (``registry.log_model.local_bundle``). ``source``: the model's name in metrics.json
    (default: the folder, or the talker's ``source``). ``cfg`` is the run's Config
    (``cfg.preprocess``: the labelling settings). Logs metrics and the report folder
    to the active MLflow run, if any.
    """
    from daetalker.evaluate.fid import InceptionFeatures
    from daetalker.evaluate.report import write_report
    from daetalker.evaluate.syncnet import load_syncnet
    from daetalker.generate.model import Talker, load_bundle
    from daetalker.generate.video import mouth_gain_of, steers_pose

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    rows = _split_rows(data_dir, split, max_clips)
    syncnet = load_syncnet(Path(syncnet_weights))
    talker = model if isinstance(model, Talker) else load_bundle(model, source=source or str(model))
    steps = talker.dae_cfg.sample_steps if steps is None else int(steps)  # metrics name the steps used
    guidance = talker.dae_cfg.guidance if guidance is None else float(guidance)  # and the guidance
    scorer = _ClipScorer(talker, syncnet, FrameLabeller(cfg.preprocess), InceptionFeatures(), steps=steps,
                         guidance=guidance, seed=seed, fid_cap=fid_frames_per_clip, progress=progress)  # fmt: skip
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    tally = _Tally()
    for row in rows:
        scorer.score(tally, data_dir, row, out_dir / "videos")
    metrics = _final_metrics(tally, syncnet.weights_sha256, split=split, model=source or talker.source, steps=steps,
                             guidance=guidance, champion=champion_metrics)  # fmt: skip
    metrics["steer_pose"] = steers_pose(talker)  # whether the latents carried the pose fed in
    metrics["mouth_gain"] = mouth_gain_of(talker)  # and how much the mouth's movement in them was scaled
    metrics_path = out_dir / METRICS_FILE
    write_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    report_path = write_report(metrics, tally.traces, out_dir / "report")
    _log_mlflow(metrics, metrics_path, report_path.parent)
    return EvalResult(metrics, metrics_path, report_path)


HELD_OUT_SPLITS = ("val", "test")  # split "heldout": every clip no model trained on


def _split_rows(data_dir: Path, split: str, max_clips: int | None) -> list[dict[str, Any]]:
    """The manifest rows of ``split`` ("heldout": val and test) by clip id, ``max_clips`` of them spread evenly
    (the first one included); an error naming the splits there are."""
    from daetalker.data import dataset as ds
    from daetalker.train.frames_dataset import read_manifest

    manifest = read_manifest(data_dir)  # names the folder and the fix when it is not a dataset
    splits = HELD_OUT_SPLITS if split == "heldout" else (split,)
    rows_df = manifest[manifest["split"].isin(splits)].sort_values("clip_id")
    if max_clips is not None and max_clips < len(rows_df):  # spread: clip ids often group by what was said
        rows_df = rows_df.iloc[np.linspace(0, len(rows_df) - 1, max_clips).round().astype(int)]
    if rows_df.empty:
        raise DaetalkerError(f"{data_dir / ds.MANIFEST}: no clips in split {split!r} "
                             f"(splits present: {sorted(manifest['split'].unique())})")
    return rows_df.to_dict("records")


@dataclass
class _Tally:
    """What the clips of an evaluation add up to: LSE results, metric rows, FID features, report traces."""

    gen_lse: list = field(default_factory=list)
    gt_lse: list = field(default_factory=list)
    gen_rows: list[dict[str, Any]] = field(default_factory=list)
    gt_rows: list[dict[str, Any]] = field(default_factory=list)
    traces: list = field(default_factory=list)
    gen_feats: list[np.ndarray] = field(default_factory=list)
    gt_first: list[np.ndarray] = field(default_factory=list)  # FID features of each clip's first half
    gt_second: list[np.ndarray] = field(default_factory=list)
    encoding: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ClipScorer:
    """Renders one clip from its own audio with the loaded talker and scores it beside its ground truth."""

    talker: Talker
    syncnet: Any
    labeller: FrameLabeller
    inception: Any  # evaluate.fid.InceptionFeatures
    steps: int
    guidance: float
    seed: int
    fid_cap: int | None
    progress: bool

    def score(self, tally: _Tally, data_dir: Path, row: dict[str, Any], videos: Path) -> None:
        from daetalker.data import dataset as ds
        from daetalker.evaluate.lse import lse
        from daetalker.evaluate.report import ClipTrace
        from daetalker.evaluate.syncnet_train import read_clip_audio
        from daetalker.generate.video import render_video

        cid = row["clip_id"]
        audio_path = ds.clip_dir(data_dir, cid) / "audio.wav"
        audio = read_clip_audio(audio_path)
        audio_f = audio.astype(np.float32) / 32768.0
        gt = ground_truth_measure(data_dir, cid)
        video = videos / f"{cid}.mp4"
        render_video(self.talker, audio_path, video, steps=self.steps, guidance=self.guidance, seed=self.seed,
                     progress=self.progress)
        tally.encoding = encoding_settings(video)
        gen = self.labeller(decode_video(video, gt.frames.shape[1], len(gt.frames)), row)
        r_gen, r_gt = lse(gen.frames, audio, self.syncnet), lse(gt.frames, audio, self.syncnet)
        tally.gen_lse.append(r_gen)
        tally.gt_lse.append(r_gt)
        tally.gen_feats.append(self.inception(fid_frames(gen.frames, self.fid_cap)))
        half = len(gt.frames) // 2
        tally.gt_first.append(self.inception(fid_frames(gt.frames[:half], self.fid_cap)))
        tally.gt_second.append(self.inception(fid_frames(gt.frames[half:], self.fid_cap)))
        tally.gen_rows.append({"clip_id": cid, "n_frames": len(gen.frames), **r_gen.as_dict(),
                               **pose_scores(gen.pose, audio_f), **versus_ground_truth(gen, gt),
                               "face_found_rate": float(gen.found.mean())})  # fmt: skip
        tally.gt_rows.append({"clip_id": cid, "n_frames": len(gt.frames), **r_gt.as_dict(),
                              **pose_scores(gt.pose, audio_f), "face_found_rate": float(gt.found.mean())})
        tally.traces.append(ClipTrace(cid, gen.pose, gt.pose, r_gen.dists, r_gt.dists, r_gen.offsets, video, audio_path,
                                      gt.frames))  # fmt: skip


def _final_metrics(tally: _Tally, syncnet_sha256: str, *, split: str, model: str, steps: int, guidance: float,
                   champion: dict | None) -> dict[str, Any]:
    """metrics.json: the generated means, the ground-truth ceiling, the settings, a row per clip (JSON-safe)."""
    from daetalker.evaluate.fid import fid_from_features

    gt_all = np.concatenate(tally.gt_first + tally.gt_second)
    metrics = aggregate(tally.gen_lse, tally.gen_rows, fid_from_features(gt_all, np.concatenate(tally.gen_feats)))
    ground = aggregate(tally.gt_lse, tally.gt_rows,
                       fid_from_features(np.concatenate(tally.gt_first), np.concatenate(tally.gt_second)))
    for k in ("pose_mae", "m_lmd", "mouth_pearson"):
        ground[k] = None
    # LSE-C is in the expert's own units: the share of the real video's is what compares across experts
    gen_c, gt_c = metrics.get("lse_c"), ground.get("lse_c")
    metrics["lse_c_vs_gt"] = gen_c / gt_c if gen_c is not None and gt_c and gt_c > 0 else None
    metrics.update(
        syncnet_sha256=syncnet_sha256, encoding=tally.encoding, split=split, clips=len(tally.gen_rows),
        model=model, steps=steps, guidance=guidance, fid_frames=int(len(np.concatenate(tally.gen_feats))),
        fid_real_frames=int(len(gt_all)), ground_truth=ground, ground_truth_note=GT_NOTE,
        champion=champion or None,
        per_clip=[{"clip_id": g["clip_id"], "generated": _clean(g), "ground_truth": _clean(t)}
                  for g, t in zip(tally.gen_rows, tally.gt_rows)],
    )
    return _clean(metrics)


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return _nan_to_none(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The flat numbers of metrics.json as MLflow metrics: generated as-is, ground truth as ``gt_<name>``."""
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({f"gt_{k}": float(v) for k, v in (metrics.get("ground_truth") or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def _log_mlflow(metrics: dict[str, Any], metrics_path: Path, report_dir: Path) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.log_metrics(numeric_metrics(metrics))
    mlflow.set_tags({"syncnet_sha256": metrics["syncnet_sha256"],
                     "eval.encoding": json.dumps(metrics["encoding"], sort_keys=True), "eval.split": metrics["split"]})
    mlflow.log_artifact(str(metrics_path), "evaluation")
    mlflow.log_artifacts(str(report_dir), "evaluation/report")
