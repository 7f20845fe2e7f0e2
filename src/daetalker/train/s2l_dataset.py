"""Training windows for speech2latent: speech features, normalised latents and head pose of the same frames.

Per clip (``daetalker preprocess`` + ``extract-latents`` layout):
``DATA/clips/<id>/mel.npy`` float32 (k N, F) (rows k i .. k i + k - 1 = frame i; or, for
other features, ``FEATURES/<id>.npy`` of the same layout, see ``train.feature_cache``),
``DATA/clips/<id>/labels.parquet`` (yaw, pitch, roll, mouth_open, face_found per frame) and
``LATENTS/latents/<id>.npy`` float32 (N, D). Arrays are memory-mapped.

A training item is a window of ``W`` frames at a random start: sample ``i`` of
rank ``r`` picks its clip from ``ResumableShardedSampler`` and its start from a
generator seeded with ``(seed, r, i)``, so the stream is a pure function of the
sample number and a resumed run sees exactly the windows it would have seen.
Clips shorter than ``W`` are zero-padded and masked (``length`` < W).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from daetalker.data.dataset import empty_split_error, read_header
from daetalker.errors import DaetalkerError
from daetalker.models.latent_stats import load_latent_stats
from daetalker.train.frames_dataset import read_manifest
from daetalker.train.sampler import ResumableShardedSampler

log = logging.getLogger(__name__)

POSE_COLUMNS = ("yaw", "pitch", "roll")


@dataclass
class Clip:
    clip_id: str
    mel: np.ndarray  # (k * n, F) memory-mapped speech features (log-mel or a cached encoder's)
    latent: np.ndarray  # (n, D) memory-mapped, raw (not normalised)
    pose: np.ndarray  # (n, 3) degrees; NaN where no face was found (left out of the pose loss)
    n: int
    mouth: np.ndarray | None = None  # (n,) mouth opening; NaN where no face (fits the mouth gain only)


def read_labels(labels: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) yaw/pitch/roll in degrees and (n,) mouth opening from labels.parquet; NaN where
    ``face_found`` is false (and the mouth NaN throughout in labels without it)."""
    import pandas as pd

    if not labels.is_file():
        log.warning("%s: missing; this clip trains without a pose target", labels)
        return np.full((n, 3), np.nan, np.float32), np.full(n, np.nan, np.float32)
    df = pd.read_parquet(labels)
    missing = [c for c in POSE_COLUMNS if c not in df.columns]
    if missing:
        raise DaetalkerError(f"{labels}: lacks column(s) {missing}; re-run `daetalker preprocess`")
    columns = [*POSE_COLUMNS, "mouth_open"] if "mouth_open" in df.columns else list(POSE_COLUMNS)
    values = np.array(df[columns].to_numpy(np.float32)[:n])
    if "face_found" in df.columns:
        values[~df["face_found"].to_numpy(bool)[:n]] = np.nan
    if len(values) < n:
        values = np.concatenate([values, np.full((n - len(values), len(columns)), np.nan, np.float32)])
    return values[:, :3], values[:, 3] if len(columns) > 3 else np.full(n, np.nan, np.float32)


def load_clips(data_dir: Path, latents_dir: Path, splits: tuple[str, ...], k: int,
               features_dir: Path | None = None) -> list[Clip]:
    """The clips of ``splits``; features from mel.npy, or from ``features_dir/<id>.npy`` when given."""
    data_dir, latents_dir = Path(data_dir), Path(latents_dir)
    manifest = read_manifest(data_dir)
    clips = []
    for row in manifest[manifest["split"].isin(splits)].itertuples(index=False):
        cid = str(row.clip_id)
        mel_path = data_dir / "clips" / cid / "mel.npy" if features_dir is None else Path(features_dir) / f"{cid}.npy"
        lat_path = latents_dir / "latents" / f"{cid}.npy"
        mel = read_header(mel_path)  # missing or torn: names the file and the fix
        latent = read_header(lat_path, fix="re-run `daetalker extract-latents`")
        n = min(int(row.n_frames), len(latent), len(mel) // k)
        if n < int(row.n_frames):
            raise DaetalkerError(
                f"clip {cid}: {len(mel)} feature rows ({mel_path}) and {len(latent)} latents for "
                f"{row.n_frames} frames (fix: re-run `daetalker preprocess` / `daetalker extract-latents` on the "
                "same dataset)"
            )
        pose, mouth = read_labels(data_dir / "clips" / cid / "labels.parquet", n)
        clips.append(Clip(cid, mel, latent, pose, n, mouth))
    if not clips:
        raise empty_split_error(data_dir / "manifest.parquet", list(splits), [str(s) for s in manifest["split"]])
    return clips


def feature_and_pose_stats(clips: list[Clip]) -> dict[str, torch.Tensor]:
    """Per-bin feature mean/std and per-axis pose mean/std (finite labels) of ``clips`` (float64 sums)."""
    f_sum = f_sq = 0.0
    count = 0
    poses = []
    for c in clips:
        m = np.asarray(c.mel, np.float64)
        f_sum, f_sq, count = f_sum + m.sum(0), f_sq + (m**2).sum(0), count + len(m)
        poses.append(c.pose[np.isfinite(c.pose).all(1)])
    mean = f_sum / count
    std = np.sqrt(np.maximum(f_sq / count - mean**2, 0.0))
    pose = np.concatenate(poses).astype(np.float64)
    p_mean = pose.mean(0) if len(pose) else np.zeros(3)
    p_std = pose.std(0) if len(pose) > 1 else np.ones(3)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return {"feature_mean": as_t(mean), "feature_std": as_t(std), "pose_mean": as_t(p_mean), "pose_std": as_t(p_std)}


class S2LWindows(Dataset):
    """Item ``(sample_no, clip_index)`` -> dict of one window (features, latent, pose, length)."""

    def __init__(
        self, data_dir: Path, latents_dir: Path, *, splits: tuple[str, ...], window_frames: int, k: int,
        seed: int = 0, rank: int = 0, features_dir: Path | None = None,
    ) -> None:
        self.clips = load_clips(data_dir, latents_dir, splits, k, features_dir)
        mean, std = load_latent_stats(latents_dir)
        self.latent_mean, self.latent_std = mean.astype(np.float32), std.astype(np.float32)
        self.w, self.k, self.seed, self.rank = window_frames, k, seed, rank
        self.feature_dim = int(self.clips[0].mel.shape[1])
        self.latent_dim = int(self.clips[0].latent.shape[1])

    def __len__(self) -> int:
        return len(self.clips)

    def window(self, clip: Clip, start: int, length: int) -> dict[str, torch.Tensor]:
        """Frames [start, start+length) of ``clip``, zero-padded (pose, mouth: NaN) to W frames."""
        w, k = self.w, self.k
        feat = np.zeros((k * w, self.feature_dim), np.float32)
        lat = np.zeros((w, self.latent_dim), np.float32)
        pose = np.full((w, 3), np.nan, np.float32)
        feat[: k * length] = clip.mel[k * start : k * (start + length)]
        lat[:length] = (clip.latent[start : start + length] - self.latent_mean) / self.latent_std
        pose[:length] = clip.pose[start : start + length]
        mouth = np.full(w, np.nan, np.float32)
        if clip.mouth is not None:
            mouth[:length] = clip.mouth[start : start + length]
        return {"features": torch.from_numpy(feat), "latent": torch.from_numpy(lat), "pose": torch.from_numpy(pose),
                "mouth": torch.from_numpy(mouth), "length": torch.tensor(length)}  # fmt: skip

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        sample_no, idx = item
        clip = self.clips[idx]
        length = min(clip.n, self.w)
        start = int(np.random.default_rng([self.seed, self.rank, sample_no]).integers(0, clip.n - length + 1))
        return self.window(clip, start, length)

    def tiles(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every frame once, in consecutive windows (validation)."""
        for clip in self.clips:
            for start in range(0, clip.n, self.w):
                yield self.window(clip, start, min(self.w, clip.n - start))


class WindowSampler(Sampler):
    """Yields ``(sample_no, clip_index)``: clip order from ResumableShardedSampler, numbered from ``start``."""

    def __init__(self, n_clips: int, *, rank: int, world_size: int, seed: int, start: int) -> None:
        self.clips = ResumableShardedSampler(n_clips, rank=rank, world_size=world_size, seed=seed, start=start)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i, idx in enumerate(self.clips, start=self.start):
            yield i, idx
