"""Frames of a preprocessed dataset as training images, read from memory-mapped arrays.

Layout (written by ``daetalker preprocess``): ``DATA/manifest.parquet`` with
one row per clip (clip_id, n_frames, split, ...) and
``DATA/clips/<clip_id>/frames.npy`` uint8 (N, R, R, 3) RGB. Arrays are opened
lazily with ``mmap_mode='r'`` in whichever process reads them (DataLoader
workers included), so nothing is copied until a frame is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from daetalker.data.dataset import DatasetError, empty_split_error, read_header
from daetalker.errors import DaetalkerError
from daetalker.models.images import to_model_range


def read_manifest(data_dir: Path):
    import pandas as pd

    path = Path(data_dir) / "manifest.parquet"
    if not path.is_file():
        raise DaetalkerError(f"{path}: no manifest; point --data at the output of `daetalker preprocess`")
    df = pd.read_parquet(path)
    missing = {"clip_id", "n_frames", "split"} - set(df.columns)
    if missing:
        raise DaetalkerError(f"{path}: manifest lacks column(s) {sorted(missing)}; re-run `daetalker preprocess`")
    return df


def frames_path(data_dir: Path, clip_id: str) -> Path:
    return Path(data_dir) / "clips" / str(clip_id) / "frames.npy"


def landmarks_path(data_dir: Path, clip_id: str) -> Path:
    return Path(data_dir) / "clips" / str(clip_id) / "landmarks.npy"


def mouth_box(landmarks: np.ndarray, crop_size: int, pad: float = 0.25) -> np.ndarray:
    """float32 (4,) = (x0, y0, x1, y1) in [0, 1] of the crop: the lips' box from Face Mesh
    landmarks (468, 3) in crop pixels, grown by ``pad`` of its size on each side (lip motion)."""
    from daetalker.face.mesh import MOUTH

    lips = np.asarray(landmarks, dtype=np.float64)[MOUTH, :2] / crop_size
    lo, hi = lips.min(0), lips.max(0)
    grow = pad * (hi - lo)
    return np.clip(np.concatenate([lo - grow, hi + grow]), 0.0, 1.0).astype(np.float32)


def evenly_spaced(n: int, count: int) -> np.ndarray:
    """``min(count, n)`` indices spread evenly over ``range(n)``."""
    return np.linspace(0, n - 1, min(count, n)).round().astype(int)


class FramesDataset(Dataset):
    """Every frame of the clips in ``splits``; item i -> float32 (3, S, S) in [-1, 1], or with
    ``mouth_boxes`` the pair (frame, its mouth box (4,) in [0, 1], see :func:`mouth_box`)."""

    def __init__(
        self, data_dir: Path, *, splits: Iterable[str] | None = ("train",), image_size: int | None = None,
        mouth_boxes: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        manifest = read_manifest(self.data_dir)
        df = manifest if splits is None else manifest[manifest["split"].isin(list(splits))]
        self.clip_ids = [str(c) for c in df["clip_id"]]
        self.n_frames = [int(n) for n in df["n_frames"]]
        if not self.clip_ids or sum(self.n_frames) == 0:
            raise empty_split_error(self.data_dir / "manifest.parquet", list(splits or []),
                                    [str(s) for s in manifest["split"]])
        self._arrays: dict[int, np.ndarray] = {}
        for clip in range(len(self.clip_ids)):  # a torn file fails here, named, not mid-training
            self.clip_frames(clip)
        self._arrays.clear()  # checked; each DataLoader worker maps its own (a pickled memmap is copied whole)
        self.offsets = np.cumsum([0] + self.n_frames)  # frame i of the dataset lives in clip searchsorted(i)
        self.image_size = image_size
        self.mouth_boxes = mouth_boxes
        if mouth_boxes:
            for cid in self.clip_ids:
                if not landmarks_path(self.data_dir, cid).is_file():
                    raise DaetalkerError(
                        f"{landmarks_path(self.data_dir, cid)}: missing; the mouth-weighted loss needs the "
                        "landmarks `daetalker preprocess` writes (re-run it, or set dae.mouth_weight=0 or autoencoder.mouth_weight=0)"
                    )
        self._landmarks: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Dataset index -> (clip position, frame within clip)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        clip = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return clip, index - int(self.offsets[clip])

    def clip_frames(self, clip: int) -> np.ndarray:
        arr = self._arrays.get(clip)
        if arr is None:
            path = frames_path(self.data_dir, self.clip_ids[clip])
            arr = read_header(path)
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2]:
                raise DatasetError(f"{path}: expected uint8 (N, R, R, 3), got {arr.dtype} {arr.shape} "
                                   "(fix: re-run `daetalker preprocess`)")
            if len(arr) < self.n_frames[clip]:
                raise DatasetError(f"{path}: {len(arr)} frames, the manifest says {self.n_frames[clip]} "
                                   "(fix: re-run `daetalker preprocess` with the same --in and --out)")
            self._arrays[clip] = arr
        return arr

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        clip, frame = self.locate(index)
        x = self._frame(clip, frame)
        if not self.mouth_boxes:
            return x
        marks = self._landmarks.get(clip)
        if marks is None:
            marks = self._landmarks[clip] = np.load(landmarks_path(self.data_dir, self.clip_ids[clip]), mmap_mode="r")
        return x, torch.from_numpy(mouth_box(marks[frame], self.clip_frames(clip).shape[1]))

    def stack(self, indices: Iterable[int]) -> torch.Tensor:
        """Frames (N, 3, S, S) at dataset ``indices`` (without their mouth boxes)."""
        return torch.stack([self._frame(*self.locate(int(i))) for i in indices])

    def _frame(self, clip: int, frame: int) -> torch.Tensor:
        return to_model_range(np.array(self.clip_frames(clip)[frame]), self.image_size)

    def __getstate__(self) -> dict:
        # DataLoader workers re-open the memory maps themselves.
        state = dict(self.__dict__)
        state["_arrays"], state["_landmarks"] = {}, {}
        return state


def held_out_frames(data_dir: Path, count: int, image_size: int) -> tuple[torch.Tensor, str]:
    """Up to ``count`` evenly spaced val/test frames (N, 3, S, S) and "held_out"; without a held-out
    split (tiny fake datasets), training frames and "train"."""
    try:
        ds, split = FramesDataset(data_dir, splits=("val", "test"), image_size=image_size), "held_out"
    except DaetalkerError:
        ds, split = FramesDataset(data_dir, splits=("train",), image_size=image_size), "train"
    return ds.stack(evenly_spaced(len(ds), count)), split
