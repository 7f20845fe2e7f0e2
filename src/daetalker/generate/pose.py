"""Where the head pose of a generated video comes from (method.md section 4, pose adaptor).

``--pose`` takes one of:

- ``predicted`` (default): speech2latent's own pose predictor (a near-still
  head: regression keeps only the motion the speech explains);
- ``predicted-motion``: the same plus a seeded draw of the head motion speech
  does not explain (:func:`sampled_motion`), so the head moves as much as the
  speaker's. Not the default: on the demo speaker it lowers LSE-C from 56% to
  46% of the real video's and mouth r from 0.76 to 0.72 (docs/latent-dae.md);
- ``constant:Y,P,R``: a fixed yaw, pitch, roll in degrees for every frame;
- ``reference:PATH``: the poses of a preprocessed clip (its folder, or its
  ``labels.parquet``); frames without a face are interpolated, and the sequence
  is played forward and backward as often as needed to cover the audio;
- ``FILE.csv``: a scripted curve with columns yaw, pitch, roll and exactly one
  row per output frame (25 fps).

:func:`resolve_pose` returns None for the predicted sources, else a float32
(n_frames, 3) array in degrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daetalker.errors import DaetalkerError, InputMediaError
from daetalker.models.speech2latent import Speech2Latent

COLUMNS = ("yaw", "pitch", "roll")
# A head turned or tilted past 90 degrees shows no face to render: the widest pose any talker can take.
LIMIT_DEG = 90.0
PREDICTED = ("predicted", "predicted-motion")
FIX = ("use predicted, predicted-motion, constant:YAW,PITCH,ROLL, reference:CLIP_DIR_OR_LABELS.parquet or a .csv "
       "with yaw,pitch,roll")


def resolve_pose(spec: str | None, n_frames: int) -> np.ndarray | None:
    spec = (spec or "predicted").strip()
    if spec in PREDICTED:
        return None
    if spec.startswith("constant:"):
        try:
            values = [float(v) for v in spec.removeprefix("constant:").split(",")]
        except ValueError:
            values = []
        if len(values) != 3 or not np.all(np.isfinite(values)):
            raise DaetalkerError(f"--pose {spec!r}: constant needs three finite numbers, e.g. constant:0,5,0")
        if max(abs(v) for v in values) > LIMIT_DEG:
            raise DaetalkerError(f"--pose {spec!r}: yaw, pitch and roll must be in [-{LIMIT_DEG:g}, {LIMIT_DEG:g}] "
                                 "degrees (fix: e.g. constant:10,-5,0; a face turned further away has nothing to show)")
        return np.tile(np.asarray(values, np.float32), (n_frames, 1))
    if spec.startswith("reference:"):
        return _reference(Path(spec.removeprefix("reference:")), n_frames)
    if spec.endswith(".csv"):
        return _csv(Path(spec), n_frames)
    raise DaetalkerError(f"--pose {spec!r}: unknown pose source (fix: {FIX})")


def sampled_motion(spec: str | None, s2l: Speech2Latent, n_frames: int, seed: int) -> np.ndarray | None:
    """(n_frames, 3) degrees added to the predicted pose for ``predicted-motion``; None for every other source."""
    if (spec or "predicted").strip() != "predicted-motion":
        return None
    return s2l.sample_pose_residual(n_frames, seed).numpy()


def _columns(df, path: Path) -> np.ndarray:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputMediaError(path, "bad_pose_file", f"lacks column(s) {missing}", "give columns yaw,pitch,roll")
    return df[list(COLUMNS)].to_numpy(np.float64)


def _csv(path: Path, n_frames: int) -> np.ndarray:
    import pandas as pd

    if not path.is_file():
        raise InputMediaError(path, "not_found", "no such pose file", FIX)
    try:
        pose = _columns(pd.read_csv(path), path)
    except (ValueError, pd.errors.ParserError) as e:
        raise InputMediaError(path, "bad_pose_file", f"not a readable CSV ({e})", "write yaw,pitch,roll columns") from e
    if len(pose) != n_frames:
        raise InputMediaError(path, "pose_length", f"{len(pose)} rows for {n_frames} frames of audio",
                              f"give exactly one row per 25 fps frame ({n_frames} rows)")  # fmt: skip
    bad = np.flatnonzero(~np.isfinite(pose).all(1))
    if len(bad):
        raise InputMediaError(path, "pose_not_finite", f"NaN/inf in {len(bad)} row(s), first at row {bad[0]}",
                              "fill every row with finite degrees")  # fmt: skip
    far = np.flatnonzero(np.abs(pose).max(1) > LIMIT_DEG)
    if len(far):
        raise InputMediaError(path, "pose_out_of_range", f"{len(far)} row(s) beyond +-{LIMIT_DEG:g} degrees, first at "
                              f"row {far[0]}", f"keep yaw, pitch and roll in [-{LIMIT_DEG:g}, {LIMIT_DEG:g}] degrees")
    return pose.astype(np.float32)


def _reference(path: Path, n_frames: int) -> np.ndarray:
    import pandas as pd

    labels = path / "labels.parquet" if path.is_dir() else path
    if not labels.is_file():
        raise InputMediaError(labels, "not_found", "no labels.parquet for the reference pose",
                              "point reference: at a preprocessed clip folder DATA/clips/<id>")  # fmt: skip
    df = pd.read_parquet(labels)
    pose = _columns(df, labels)
    found = np.isfinite(pose).all(1)
    if "face_found" in df.columns:
        found &= df["face_found"].to_numpy(bool)
    if not found.any():
        raise InputMediaError(labels, "no_pose", "no frame with a face pose", "pick a clip that shows the face")
    idx = np.arange(len(pose))
    pose = np.stack([np.interp(idx, idx[found], pose[found, j]) for j in range(3)], 1)
    cycle = np.concatenate([pose, pose[-2:0:-1]]) if len(pose) > 2 else pose  # forward, then backward
    reps = -(-n_frames // len(cycle))
    return np.tile(cycle, (reps, 1))[:n_frames].astype(np.float32)
