"""``daetalker preprocess``: a folder of speaker videos -> the training dataset (docs/dataset.md).

Per source: hash, probe, decode audio, detection pass over every frame at a
reduced size, pick the speaker and cut segments, then one cropping pass per
kept segment that writes frames, Face Mesh landmarks, pose and mouth labels,
wav and log-mel into a temporary folder moved into place when complete.
Any failure of one source lands in quarantine; the batch goes on. Sources
whose content hash and config are unchanged since the last run are skipped.
Splits are drawn per source; with fewer than three recordings each kept
segment is cut in time into train, val and test clips instead (docs/dataset.md).
A run that keeps no clip raises :class:`NothingKept` after writing its reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from daetalker.config.base import to_dict
from daetalker.hashing import sha256_file
from daetalker.config.preprocess import PreprocessConfig
from daetalker.data import dataset as ds
from daetalker.data.face_crop import FaceLog, FrameFaces, Speaker, crop_box, pick_speaker, split_segments
from daetalker.data.probe import MediaInfo, check_usable, probe
from daetalker.data.quarantine import QuarantineRecord, from_exception, write_quarantine
from daetalker.errors import InputMediaError

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts",
              ".m2ts", ".flv", ".wmv", ".3gp", ".ogv"}
AUDIO_EXTS = {".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus"}
GT_COLUMNS = ("yaw", "pitch", "roll", "mouth_open")
# Faces under this share of the frame's longer side are detected again on a zoomed crop;
# larger ones are >= 25 px in BlazeFace's 128 px input, enough for the crop box.
REFINE_BELOW = 0.2
# Config keys that do not change a byte of the output (parallelism, validation thresholds).
NOT_IN_FINGERPRINT = {"workers", "min_usable_minutes", "max_abs_yaw", "max_abs_pitch", "max_abs_roll",
                      "max_mouth_open", "pose_mostly", "min_crop_visible"}


@dataclass
class Source:
    rel: str  # posix path relative to the input folder: the manifest's ``source``
    path: Path
    sha256: str = ""


@dataclass
class SourceResult:
    rel: str
    sha256: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # manifest rows of kept segments
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    reused: bool = False
    # Cost of this source in the process that handled it (bench figures; never written).
    decoded_s: float = 0.0  # seconds of source video decoded
    cpu_s: float = 0.0  # CPU of the process and its ffmpeg children
    rss_mb: float = 0.0  # peak RSS of that process so far

    @property
    def status(self) -> str:
        if self.rows and self.quarantine:
            return "partial"
        return "ok" if self.rows else "quarantined"


@dataclass
class PreprocessSummary:
    out_dir: Path
    n_sources: int
    n_clips: int  # kept segments (manifest rows)
    n_quarantined: int  # quarantine rows
    n_reused: int  # sources skipped because unchanged
    frames: int
    seconds: float  # of kept output video
    source_seconds: float  # of video decoded in this run
    wall_s: float
    cpu_s: float  # spent on the sources processed in this run (workers and their ffmpeg)
    peak_rss_mb: float  # largest peak RSS of this process and the workers (ffmpeg not included)
    manifest: Path
    quarantine: Path
    split_strategy: str = ds.PER_SOURCE  # preprocess.json ``split_strategy``
    splits: dict[str, int] = field(default_factory=dict)  # clips per split


class NothingKept(ds.DatasetError):
    """Every source was quarantined (or none was found); the reports are written, ``summary`` holds the run."""

    def __init__(self, message: str, summary: PreprocessSummary) -> None:
        super().__init__(message)
        self.summary = summary


# ------------------------------------------------------------------ discovery
def discover(in_dir: Path, exclude: Path | None = None) -> tuple[list[Source], list[QuarantineRecord], list[str]]:
    """Media files under ``in_dir`` (sorted); refused symlinks; ignored other files.

    An audio file beside a video of the same stem (the synth's clip.wav next to
    clip.mp4) is that video's companion, not an input. ``exclude`` (the output
    folder, when it lies inside the input) is not searched.
    """
    root = Path(in_dir).resolve()
    skip = Path(exclude).resolve() if exclude is not None else None
    sources, refused, ignored = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for d in list(dirnames):
            if here / d == skip:
                dirnames.remove(d)
            elif d.startswith(".") or (here / d).is_symlink():
                dirnames.remove(d)
                if (here / d).is_symlink():
                    refused.append(QuarantineRecord((here / d).relative_to(root).as_posix(), "symlink_outside_input"
                                   if not _inside((here / d).resolve(), root) else "symlink_directory",
                                   "symbolic links to folders are not followed (fix: copy the files in)"))
        stems = {Path(f).stem for f in filenames if Path(f).suffix.lower() in VIDEO_EXTS}
        for name in sorted(filenames):
            p = here / name
            rel = p.relative_to(root).as_posix()
            ext = p.suffix.lower()
            if name.startswith("."):
                continue
            if ext not in VIDEO_EXTS | AUDIO_EXTS:
                ignored.append(rel)
                continue
            if ext in AUDIO_EXTS and p.stem in stems:
                continue  # companion audio
            if p.is_symlink() and not _inside(p.resolve(), root):
                refused.append(QuarantineRecord(rel, "symlink_outside_input",
                                                f"links to {os.readlink(p)}, outside the input folder "
                                                "(fix: copy the file into the input folder)"))
                continue
            sources.append(Source(rel, p))
    return sources, refused, sorted(ignored)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def config_fingerprint(cfg: PreprocessConfig) -> str:
    d = {k: v for k, v in to_dict(cfg).items() if k not in NOT_IN_FINGERPRINT}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ one source
class ClipProcessor:
    """Holds the face models of one process and turns one source into clip folders."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        from daetalker.face.detector import FaceDetector
        from daetalker.face.mesh import FaceMesh

        self.cfg = cfg
        self.detector = FaceDetector(min_score=cfg.min_face_score)
        self.mesh = FaceMesh()

    def process(self, src: Source, out_dir: Path) -> SourceResult:
        """Never raises for a bad input: failures become quarantine records."""
        result = SourceResult(src.rel, src.sha256)
        cpu0 = _cpu_seconds()
        tmp_root = Path(out_dir) / ".tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
                self._process(src, Path(out_dir), Path(tmp), result)
        except Exception as exc:  # noqa: BLE001 - isolation: one bad file must not stop the batch
            for row in result.rows:  # a half-done source leaves nothing behind
                shutil.rmtree(ds.clip_dir(out_dir, row["clip_id"]), ignore_errors=True)
            result.rows = []
            result.quarantine.append(from_exception(src.rel, exc))
        import resource

        result.cpu_s = _cpu_seconds() - cpu0
        result.rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return result

    def _process(self, src: Source, out_dir: Path, tmp: Path, result: SourceResult) -> None:
        from daetalker.data.audio_features import measure_loudness

        cfg = self.cfg
        spf = cfg.sample_rate // cfg.fps  # 640 samples per frame
        info = probe(src.path)
        check_usable(info, cfg.min_seconds, cfg.max_audio_gap_s)
        raw = tmp / "audio.f32"
        faces, n_samples = self._detect_with_audio(info, raw)
        n = len(faces)
        result.decoded_s = n / cfg.fps  # counted even when the checks below refuse the source
        self._check_decoded(src, info, n, n_samples)
        speaker = pick_speaker(faces)
        if not speaker.found.any():
            raise InputMediaError(src.path, "no_face", f"no face in any of {n} frames",
                                  "use videos that show the speaker's face")
        loud = measure_loudness(raw, cfg, 0, spf * n)
        gt = _ground_truth(src.path)
        for k, (a, b) in enumerate(split_segments(speaker.boxes, cfg.max_head_motion)):
            a, b = self._cut_edge_silence(raw, a, b)
            where = f"segment {k} (frames {a}-{b - 1})"
            if b - a < cfg.min_seconds * cfg.fps:
                result.quarantine.append(QuarantineRecord(
                    src.rel, "segment_too_short",
                    f"{where}: {(b - a) / cfg.fps:.2f} s between head jumps < {cfg.min_seconds} s"))
                continue
            rate = float(speaker.found[a:b].mean())
            if rate < cfg.min_detection_rate:
                result.quarantine.append(QuarantineRecord(
                    src.rel, "low_detection_rate" if rate > 0 else "no_face",
                    f"{where}: a face in {rate:.0%} of frames < {cfg.min_detection_rate:.0%} "
                    "(fix: cut the clip to the part that shows the speaker)"))
                continue
            cid = ds.clip_id(src.rel, src.sha256, k)
            seg_tmp = tmp / cid
            seg_tmp.mkdir()
            row, face_rate = self._write_segment(info, speaker, a, b, raw, loud.gain_db, gt, seg_tmp)
            if face_rate < cfg.min_detection_rate:
                result.quarantine.append(QuarantineRecord(
                    src.rel, "low_detection_rate",
                    f"{where}: Face Mesh found the face in {face_rate:.0%} of frames "
                    f"< {cfg.min_detection_rate:.0%}"))
                continue
            row.update(clip_id=cid, source=src.rel, source_sha256=src.sha256, segment=k, audio_dbfs=loud.level_dbfs,
                       silent=loud.silent, split=ds.assign_split(src.sha256, cfg.val_fraction,
                                                                cfg.test_fraction, cfg.split_seed))
            ds.install_dir(seg_tmp, ds.clip_dir(out_dir, cid))
            result.rows.append(row)

    def _cut_edge_silence(self, raw: Path, a: int, b: int) -> tuple[int, int]:
        """Frames [a, b) less the leading and trailing silence past ``edge_silence_keep_s``."""
        from daetalker.data.audio_features import frame_levels, speech_span

        cfg = self.cfg
        if cfg.edge_silence_keep_s < 0 or b <= a:
            return a, b
        lo, hi = speech_span(frame_levels(raw, cfg, a, b - a), round(cfg.edge_silence_keep_s * cfg.fps))
        return a + lo, a + hi

    def _detect_with_audio(self, info: MediaInfo, raw: Path) -> tuple[FaceLog, int]:
        """Pass 1 with the audio decoding to ``raw`` beside it: (faces per frame, audio samples written)."""
        from daetalker.data.ingest import finish_audio, start_audio

        audio = start_audio(info, raw, self.cfg.sample_rate)  # decodes beside the detection pass
        try:
            faces = self._detect(info)
        except BaseException:  # no ffmpeg left behind when detection fails or is interrupted
            audio.kill()
            audio.wait()
            raise
        return faces, finish_audio(audio, info, raw)

    def _check_decoded(self, src: Source, info: MediaInfo, n: int, n_samples: int) -> None:
        """Refuse a source whose ``n`` decoded frames are truncated or too few, or whose audio ends early."""
        cfg = self.cfg
        spf = cfg.sample_rate // cfg.fps
        expected = info.expected_frames(cfg.fps)
        if n < 0.95 * expected - 2:
            raise InputMediaError(src.path, "truncated", f"decoded {n} of {expected} frames the header promises",
                                  "copy or download the file again; it ends early")
        if n < cfg.min_seconds * cfg.fps:
            raise InputMediaError(src.path, "too_short", f"{n} frames at {cfg.fps} fps < {cfg.min_seconds} s",
                                  "use clips of at least a second")
        if n_samples < spf * n - cfg.max_audio_gap_s * cfg.sample_rate:
            raise InputMediaError(src.path, "audio_short",
                                  f"{n_samples / cfg.sample_rate:.2f} s of audio for {n / cfg.fps:.2f} s of video",
                                  "use a recording whose sound covers the whole video")

    # -------------------------------------------------------------- passes
    def _detect(self, info: MediaInfo) -> FaceLog:
        """Pass 1: every frame of the 25 fps timeline at <= detect_max_side px; boxes in source px."""
        from daetalker.data.ingest import fit_size, iter_frames

        w, h = fit_size(info.width, info.height, self.cfg.detect_max_side)
        sx, sy = info.width / w, info.height / h
        log = FaceLog(min(info.expected_frames(self.cfg.fps) + 8, 1 << 15))  # grows if the header lies
        for frame in iter_frames(info, (w, h), self.cfg.fps):
            dets = self.detector.detect_refined(frame, small=REFINE_BELOW)
            if not dets:
                log.append(FrameFaces.empty())
                continue
            boxes = np.array([d.box for d in dets], np.float32) * np.array([sx, sy, sx, sy], np.float32)
            kps = np.stack([d.keypoints for d in dets]).astype(np.float32) * np.array([sx, sy], np.float32)
            log.append(FrameFaces(boxes, np.array([d.score for d in dets], np.float32), kps))
        return log

    def _write_segment(self, info: MediaInfo, speaker: Speaker, a: int, b: int, raw: Path, gain_db: float,
                       gt, seg_dir: Path) -> tuple[dict[str, Any], float]:
        """Pass 2 over frames [a, b): fixed crop, Face Mesh, labels, audio; returns the manifest row."""
        import cv2

        from daetalker.data.audio_features import write_audio_and_mel
        from daetalker.data.head_pose import camera_matrix, head_pose
        from daetalker.data.ingest import crop_filter, iter_frames
        from daetalker.face.detector import Detection
        from daetalker.face.mesh import mouth_opening

        cfg = self.cfg
        n, res = b - a, cfg.resolution
        x0, y0, size = crop_box(speaker.boxes[a:b], cfg.crop_margin, cfg.crop_lift)
        side = max(cfg.label_size, res)  # Face Mesh works on the crop at this size
        s = side / size  # source px -> crop px
        # Pinhole guess for the source camera (focal = longer side, ~53 deg), seen through the crop.
        cam = camera_matrix(max(info.width, info.height) * s, (info.width / 2 - x0) * s, (info.height / 2 - y0) * s)
        boxes, kps = _fill_gaps(speaker.boxes[a:b]), _fill_gaps(speaker.keypoints[a:b])
        shift = np.array([x0, y0], np.float32)
        yaw, pitch, roll, mouth = (np.full(n, np.nan, np.float32) for _ in range(4))
        found = np.zeros(n, bool)
        to_res = res / side
        count = 0
        with ds.NpyWriter(seg_dir / "frames.npy", (n, res, res, 3), np.uint8) as frames, \
                ds.NpyWriter(seg_dir / "landmarks.npy", (n, 468, 3), np.float32) as lms:
            vf = crop_filter(info, x0, y0, size, side)
            for i, crop in enumerate(iter_frames(info, (side, side), cfg.fps, vf=vf, start_frame=a, n_frames=n)):
                box = (boxes[i].reshape(2, 2) - shift) * s
                det = Detection(tuple(float(v) for v in box.reshape(-1)), 0.0, (kps[i] - shift) * s)
                lm, presence = self.mesh.from_detection(crop, det)
                if presence >= cfg.min_mesh_presence and speaker.found[a + i]:
                    found[i] = True
                    yaw[i], pitch[i], roll[i] = head_pose(lm, cam)
                    mouth[i] = mouth_opening(lm)
                else:
                    lm = np.full((468, 3), np.nan, np.float32)
                frames.write(crop if side == res else cv2.resize(crop, (res, res), interpolation=cv2.INTER_AREA))
                lms.write(lm * to_res)
                count = i + 1
            if count != n:
                raise InputMediaError(info.path, "truncated", f"crop pass decoded {count} of {n} frames",
                                      "copy the file again; it ends early")
        if found.any():
            _interpolate_landmarks(seg_dir / "landmarks.npy", found)
        _write_labels(seg_dir / "labels.parquet", found, yaw, pitch, roll, mouth, speaker.scores[a:b])
        spf = cfg.sample_rate // cfg.fps
        write_audio_and_mel(raw, spf * a, spf * n, gain_db, seg_dir / "audio.wav", seg_dir / "mel.npy", cfg)
        has_gt = gt is not None and _write_ground_truth(gt, a, n, seg_dir / ds.GROUND_TRUTH)
        row = dict(start_frame=a, n_frames=n, fps=float(cfg.fps), duration_s=n / cfg.fps, src_width=info.width,
                   src_height=info.height, crop_x0=x0, crop_y0=y0, crop_size=size, resolution=res,
                   detection_rate=round(float(found.mean()), 6),
                   n_faces_max=int(speaker.n_faces[a:b].max()), has_ground_truth=bool(has_gt))
        return row, float(found.mean())


def _cpu_seconds() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _fill_gaps(x: np.ndarray) -> np.ndarray:
    """Rows that are NaN take the nearest earlier row (the first ones the first found row)."""
    x = x.copy()
    ok = ~np.isnan(x.reshape(len(x), -1)[:, 0])
    idx = np.where(ok, np.arange(len(x)), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.argmax(ok))
    idx[idx < 0] = first
    return x[idx]


def _interpolate_landmarks(path: Path, found: np.ndarray) -> None:
    """Frames without a face get landmarks interpolated in time (a few rows, via mmap)."""
    missing = np.flatnonzero(~found)
    if not len(missing):
        return
    good = np.flatnonzero(found)
    lm = np.load(path, mmap_mode="r+")
    for t in missing:
        j = np.searchsorted(good, t)
        lo, hi = good[max(j - 1, 0)], good[min(j, len(good) - 1)]
        w = 0.0 if hi == lo else (t - lo) / (hi - lo)
        lm[t] = (1 - w) * lm[lo] + w * lm[hi]
    lm.flush()
    del lm


def _write_labels(path: Path, found, yaw, pitch, roll, mouth, det_score) -> None:
    import pandas as pd

    df = pd.DataFrame({"frame": np.arange(len(found), dtype=np.int64), "yaw": yaw, "pitch": pitch, "roll": roll,
                       "mouth_open": mouth})
    cols = ["yaw", "pitch", "roll", "mouth_open"]
    if found.any():  # frames without a face: interpolated in time, flagged face_found=False
        df[cols] = df[cols].interpolate(limit_direction="both")
    df[cols] = df[cols].astype(np.float32)
    df["det_score"] = np.where(found, det_score, 0.0).astype(np.float32)
    df["face_found"] = found
    ds.write_table(df, path)


def _ground_truth(path: Path):
    """The synthetic speaker's per-frame truth beside the video (clip.parquet), if any."""
    import pandas as pd

    side = path.with_suffix(".parquet")
    if not side.is_file():
        return None
    gt = pd.read_parquet(side)
    return gt if set(GT_COLUMNS) <= set(gt.columns) else None


def _write_ground_truth(gt, a: int, n: int, path: Path) -> bool:
    """Rows [a, a+n) of the source's 25 fps truth, renumbered from 0 like labels.parquet."""
    if "frame" in gt.columns:
        gt = gt.sort_values("frame").set_index("frame").reindex(range(a, a + n))
    else:
        gt = gt.iloc[a : a + n].reset_index(drop=True)
    if len(gt) < n - 1 or gt[list(GT_COLUMNS)].isna().to_numpy().mean() > 0.01:
        return False
    gt = gt.reset_index(drop=True).reindex(range(n)).ffill()
    out = gt[[c for c in gt.columns if c != "frame"]].copy()
    out.insert(0, "frame", np.arange(n, dtype=np.int64))
    ds.write_table(out, path)
    return True


# ------------------------------------------------------------------ the batch
_WORKER: ClipProcessor | None = None
WORKER_PRELOAD = ("numpy", "cv2", "pandas", "pyarrow.parquet", "soundfile", "torch", "ai_edge_litert.interpreter",
                  "daetalker.data.preprocess", "daetalker.features.log_mel")


def _init_worker(cfg_dict: dict[str, Any]) -> None:
    global _WORKER
    from daetalker.config.base import from_dict

    import torch

    torch.set_num_threads(1)  # parallelism comes from the workers
    _WORKER = ClipProcessor(from_dict(PreprocessConfig, cfg_dict))


def _run_one(args: tuple[Source, str]) -> SourceResult:
    assert _WORKER is not None
    src, out_dir = args
    return _WORKER.process(src, Path(out_dir))


def _load_record(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / ds.RUN_RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _clip_problem(out_dir: Path, row: dict[str, Any], cfg: PreprocessConfig) -> str | None:
    from daetalker.data.audio_features import hop_samples

    spf = cfg.sample_rate // cfg.fps
    return ds.clip_problem(out_dir, row, spf // hop_samples(cfg), spf)


def _reuse(old: dict[str, Any], fingerprint: str, src: Source, out_dir: Path,
           cfg: PreprocessConfig) -> SourceResult | None:
    """The previous run's result for an unchanged source, if its clip folders are all there."""
    if old.get("config_fingerprint") != fingerprint:
        return None
    entry = old.get("sources", {}).get(src.rel)
    if not entry or entry.get("sha256") != src.sha256:
        return None
    rows = entry.get("clips", [])
    if any(_clip_problem(out_dir, r, cfg) for r in rows):  # missing or torn: process the source again
        return None
    q = [QuarantineRecord(src.rel, r["reason"], r["detail"]) for r in entry.get("quarantine", [])]
    return SourceResult(src.rel, src.sha256, rows, q, reused=True)


def _record(cfg: PreprocessConfig, fingerprint: str, results: dict[str, SourceResult],
            refused: list[QuarantineRecord], ignored: list[str], strategy: str | None = None) -> str:
    import daetalker

    cfg_dict = {k: v for k, v in to_dict(cfg).items() if k != "workers"}
    sources = {}
    for rel in sorted(results):
        r = results[rel]
        sources[rel] = {"sha256": r.sha256, "status": r.status, "clips": sorted(r.rows, key=lambda x: x["clip_id"]),
                        "quarantine": [{"reason": q.reason, "detail": q.detail} for q in r.quarantine]}
    for q in refused:
        sources[q.source] = {"sha256": "", "status": "refused", "clips": [],
                             "quarantine": [{"reason": q.reason, "detail": q.detail}]}
    rec = {"package_version": daetalker.__version__, "config_fingerprint": fingerprint, "config": cfg_dict,
           "split_strategy": strategy, "sources": dict(sorted(sources.items())), "ignored": ignored}
    return json.dumps(rec, indent=1, sort_keys=False) + "\n"


def preprocess_dataset(in_dir: Path, out_dir: Path, cfg: PreprocessConfig, workers: int = 1,
                       progress: Callable[[str, SourceResult], None] | None = None) -> PreprocessSummary:
    """Process every media file under ``in_dir`` into ``out_dir`` (docs/dataset.md).

    Deterministic: the same inputs and config give the same bytes, and a rerun
    skips sources whose sha256 and config are unchanged. ``progress`` is called
    after each source with its relative path and result.
    """
    import resource

    t0 = time.perf_counter()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise InputMediaError(in_dir, "not_a_folder", "the input is not a folder", "pass the folder of videos")
    out_dir.mkdir(parents=True, exist_ok=True)
    sources, refused, ignored = discover(in_dir, exclude=out_dir)
    fingerprint = config_fingerprint(cfg)
    results, todo = _plan(sources, cfg, fingerprint, out_dir)

    def done(r: SourceResult) -> None:
        results[r.rel] = r
        ds.write_text(_record(cfg, fingerprint, results, refused, ignored), out_dir / ds.RUN_RECORD)
        if progress:
            progress(r.rel, r)

    for r in list(results.values()):
        if r.reused and progress:
            progress(r.rel, r)
    _run(todo, out_dir, cfg, workers, done)
    redo = _cut_but_per_source(sources, results, cfg)
    _run(redo, out_dir, cfg, workers, done)
    manifest, quarantine, strategy = _write_outputs(out_dir, cfg, fingerprint, results, refused, ignored)
    ran = [results[s.rel] for s in todo + redo]
    summary = PreprocessSummary(
        out_dir, len(sources) + len(refused), len(manifest), len(quarantine), sum(r.reused for r in results.values()),
        int(manifest["n_frames"].sum()), float(manifest["duration_s"].sum()), sum(r.decoded_s for r in ran),
        time.perf_counter() - t0, sum(r.cpu_s for r in ran),
        max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024] + [r.rss_mb for r in ran]),
        out_dir / ds.MANIFEST, out_dir / ds.QUARANTINE, strategy,
        {s: int((manifest["split"] == s).sum()) for s in ds.SPLITS})
    log.info("%s: %d clips, split %s %s", out_dir, summary.n_clips, strategy, summary.splits)
    if not len(manifest):
        raise NothingKept(_nothing_kept(in_dir, summary, quarantine, len(ignored)), summary)
    return summary


def _nothing_kept(in_dir: Path, s: PreprocessSummary, quarantine: list[QuarantineRecord], n_ignored: int) -> str:
    """What a run without a clip says: what was found, where the reasons are, the fix."""
    record = s.out_dir / ds.RUN_RECORD
    if not s.n_sources:
        return (f"{in_dir}: no video or audio file found, nothing to preprocess ({n_ignored} other file(s) "
                f"ignored, listed in {record}) (fix: point --in at the folder of the speaker's videos: "
                f"{' '.join(sorted(VIDEO_EXTS))})")
    reasons = {}
    for q in quarantine:
        reasons[q.reason] = reasons.get(q.reason, 0) + 1
    why = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
    return (f"{in_dir}: nothing usable was kept: all {s.n_sources} source(s) quarantined ({why}); each one's "
            f"reason and fix are in {s.quarantine} (and {record}) (fix: correct or replace those videos as the "
            "report says, then re-run `daetalker preprocess`)")


def _source_splits(results: dict[str, SourceResult], cfg: PreprocessConfig) -> dict[str, str]:
    """Per-source split of every source that kept a clip (before any time split)."""
    return ds.assign_splits(sorted({r.sha256 for r in results.values() if r.rows}), cfg.val_fraction,
                            cfg.test_fraction, cfg.split_seed)


def _cut_but_per_source(sources: list[Source], results: dict[str, SourceResult],
                        cfg: PreprocessConfig) -> list[Source]:
    """Sources reused as time-split parts in a dataset that grew to per-source splits: they are
    processed again, whole (their parts are removed as stale)."""
    if ds.split_strategy(_source_splits(results, cfg)) != ds.PER_SOURCE:
        return []
    return [s for s in sources if s.rel in results and any("cut_from" in r for r in results[s.rel].rows)]


def _plan(sources: list[Source], cfg: PreprocessConfig, fingerprint: str,
          out_dir: Path) -> tuple[dict[str, SourceResult], list[Source]]:
    """Hash every source: refuse the too large and the duplicates, reuse the unchanged; the rest is to do."""
    old = _load_record(out_dir)
    results: dict[str, SourceResult] = {}
    todo: list[Source] = []
    seen: dict[str, str] = {}
    for src in sources:
        try:
            size = src.path.stat().st_size
            if size > cfg.max_file_gb * 1e9:
                results[src.rel] = SourceResult(src.rel, "", quarantine=[QuarantineRecord(
                    src.rel, "too_large", f"{size / 1e9:.1f} GB > max_file_gb={cfg.max_file_gb} "
                    "(fix: split the recording or raise preprocess.max_file_gb)")])
                continue
            src.sha256 = sha256_file(src.path)
        except OSError as exc:
            results[src.rel] = SourceResult(src.rel, "", quarantine=[QuarantineRecord(src.rel, "unreadable", str(exc))])
            continue
        if src.sha256 in seen:
            results[src.rel] = SourceResult(src.rel, src.sha256, quarantine=[QuarantineRecord(
                src.rel, "duplicate_source", f"same content as {seen[src.sha256]} (fix: remove the copy)")])
            continue
        seen[src.sha256] = src.rel
        reused = _reuse(old, fingerprint, src, out_dir, cfg)
        if reused is not None:
            results[src.rel] = reused
        else:
            todo.append(src)
    return results, todo


def _write_outputs(out_dir: Path, cfg: PreprocessConfig, fingerprint: str, results: dict[str, SourceResult],
                   refused: list[QuarantineRecord], ignored: list[str]):
    """Splits (cutting segments in time when too few sources), manifest.parquet, quarantine.parquet,
    preprocess.json; stale clip folders removed. Returns the manifest, the quarantine and the strategy."""
    import pandas as pd

    splits = _source_splits(results, cfg)
    strategy = ds.split_strategy(splits)
    for r in results.values():
        if strategy == ds.BY_TIME:
            r.rows = [part for row in r.rows for part in _cut_by_time(out_dir, row, cfg)]
        else:
            for row in r.rows:
                row["split"] = splits[r.sha256]
    shutil.rmtree(out_dir / ".tmp", ignore_errors=True)
    rows = sorted((row for r in results.values() for row in r.rows), key=lambda x: x["clip_id"])
    quarantine = refused + [q for r in results.values() for q in r.quarantine]
    manifest = pd.DataFrame(rows, columns=list(ds.MANIFEST_SCHEMA))
    ds.write_table(manifest, out_dir / ds.MANIFEST, ds.MANIFEST_SCHEMA)
    write_quarantine(quarantine, out_dir / ds.QUARANTINE)
    ds.write_text(_record(cfg, fingerprint, results, refused, ignored, strategy), out_dir / ds.RUN_RECORD)
    _remove_stale(out_dir, {r["clip_id"] for r in rows})
    return manifest, quarantine, strategy


# ------------------------------------------------------------------ time split
def _cut_by_time(out_dir: Path, row: dict[str, Any], cfg: PreprocessConfig) -> list[dict[str, Any]]:
    """Time split: a segment's clip folder becomes one folder per part, ``<clip_id>-<split>``, with
    frames in time order train, val, test (:func:`ds.time_split_ranges`); the whole one is removed."""
    if "cut_from" in row:
        return [row]  # cut by an earlier run and reused
    cid, seg = row["clip_id"], ds.clip_dir(out_dir, row["clip_id"])
    ranges = ds.time_split_ranges(int(row["n_frames"]), cfg.val_fraction, cfg.test_fraction,
                                  math.ceil(cfg.min_seconds * cfg.fps))  # every part passes validation's length
    parts = []
    (out_dir / ".tmp").mkdir(parents=True, exist_ok=True)
    for split, lo, hi in ranges:
        pid = f"{cid}-{split}"
        with tempfile.TemporaryDirectory(dir=out_dir / ".tmp") as tmp:
            part = Path(tmp) / pid
            part.mkdir()
            face_rate = _write_part(seg, part, lo, hi, cfg)
            ds.install_dir(part, ds.clip_dir(out_dir, pid))
        parts.append({**row, "clip_id": pid, "start_frame": int(row["start_frame"]) + lo, "n_frames": hi - lo,
                      "duration_s": (hi - lo) / cfg.fps, "detection_rate": round(face_rate, 6), "split": split,
                      "cut_from": cid})
    shutil.rmtree(seg)
    return parts


def _write_part(seg: Path, dst: Path, lo: int, hi: int, cfg: PreprocessConfig) -> float:
    """Frames [lo, hi) of a written segment folder as a clip folder of its own; returns its face rate.

    The audio is cut at the same 640-sample boundaries and its log-mel computed again, so
    ``mel.npy == log_mel(audio.wav)`` holds for the part as for any clip.
    """
    import pandas as pd
    import soundfile as sf

    from daetalker.data.audio_features import write_audio_and_mel

    for name in ("frames.npy", "landmarks.npy"):
        whole = np.load(seg / name, mmap_mode="r")
        with ds.NpyWriter(dst / name, (hi - lo, *whole.shape[1:]), whole.dtype) as out:
            for i in range(lo, hi, 256):  # bounded memory on long segments
                out.write(whole[i : min(i + 256, hi)])
        del whole
    for name in ("labels.parquet", ds.GROUND_TRUTH):
        if (seg / name).is_file():
            table = pd.read_parquet(seg / name).iloc[lo:hi].reset_index(drop=True)
            table["frame"] = np.arange(hi - lo, dtype=np.int64)  # renumbered from 0, like any clip
            ds.write_table(table, dst / name)
    spf = cfg.sample_rate // cfg.fps
    raw = dst.parent / "audio.f32"  # the float32 layout write_audio_and_mel reads; PCM16 round-trips exactly
    with sf.SoundFile(str(seg / "audio.wav")) as wav, open(raw, "wb") as f:
        wav.seek(spf * lo)
        left = spf * (hi - lo)
        while left:
            q = wav.read(min(left, 160_000), dtype="int16")
            if not len(q):
                raise ValueError(f"{seg / 'audio.wav'}: ends before sample {spf * hi}")
            f.write((q / 32768.0).astype(np.float32).tobytes())
            left -= len(q)
    write_audio_and_mel(raw, 0, spf * (hi - lo), 0.0, dst / "audio.wav", dst / "mel.npy", cfg)
    raw.unlink()
    return float(pd.read_parquet(dst / "labels.parquet", columns=["face_found"])["face_found"].mean())


def _run(todo: list[Source], out_dir: Path, cfg: PreprocessConfig, workers: int,
         done: Callable[[SourceResult], None]) -> None:
    """Process sources in this process or a spawn pool, calling ``done`` with each result."""
    if not todo:
        return
    workers = max(1, min(workers, len(todo)))
    if workers == 1:
        proc = ClipProcessor(cfg)
        for src in todo:
            done(proc.process(src, out_dir))
    else:
        import multiprocessing as mp

        # Workers fork from a clean server process that imported the heavy libraries once
        # (torch alone is ~1.5 s of CPU per interpreter); no LiteRT or thread state is forked.
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(WORKER_PRELOAD))
        with ctx.Pool(workers, initializer=_init_worker, initargs=(to_dict(cfg),)) as pool:
            # biggest first, so one long clip does not run alone at the end
            order = sorted(todo, key=lambda s: -s.path.stat().st_size)
            for r in pool.imap_unordered(_run_one, [(s, str(out_dir)) for s in order]):
                done(r)
    shutil.rmtree(out_dir / ".tmp", ignore_errors=True)


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Clip folders of sources that changed or left the input."""
    clips = out_dir / ds.CLIPS
    if clips.is_dir():
        for d in clips.iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d)
