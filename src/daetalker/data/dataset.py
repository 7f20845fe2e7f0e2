"""The processed dataset's layout (docs/dataset.md): names, manifest schema, splits, writers.

Readers use :func:`load_manifest`, :func:`clip_dir` and :func:`open_frames`;
writers go through :class:`NpyWriter` (streamed .npy) and the atomic helpers,
so a crash never leaves a half-written file under a final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from daetalker.errors import DaetalkerError

MANIFEST = "manifest.parquet"
QUARANTINE = "quarantine.parquet"
RUN_RECORD = "preprocess.json"
CLIPS = "clips"
FILES = ("frames.npy", "labels.parquet", "landmarks.npy", "mel.npy", "audio.wav")
GROUND_TRUTH = "ground_truth.parquet"
LABEL_COLUMNS = ("frame", "yaw", "pitch", "roll", "mouth_open", "det_score", "face_found")

# Column -> dtype of manifest.parquet, in order. Other stages code against these names.
MANIFEST_SCHEMA: dict[str, str] = {
    "clip_id": "string",
    "source": "string",
    "source_sha256": "string",
    "segment": "int64",
    "start_frame": "int64",
    "n_frames": "int64",
    "fps": "float64",
    "duration_s": "float64",
    "src_width": "int64",
    "src_height": "int64",
    "crop_x0": "int64",
    "crop_y0": "int64",
    "crop_size": "int64",
    "resolution": "int64",
    "detection_rate": "float64",
    "n_faces_max": "int64",
    "audio_dbfs": "float64",
    "silent": "bool",
    "split": "string",
    "has_ground_truth": "bool",
}
QUARANTINE_SCHEMA: dict[str, str] = {"source": "string", "reason": "string", "detail": "string"}

# How a dataset's rows got their split (preprocess.json ``split_strategy``, docs/dataset.md "Splits").
PER_SOURCE = "per_source"
BY_TIME = "within_source_by_time"
MIN_SOURCES_PER_SOURCE = 3  # fewer recordings cannot fill train, val and test by source
SPLITS = ("train", "val", "test")
# Preprocess reuses a clip only when all its files read back whole, so a rerun repairs torn ones.
REDO_FIX = ("re-run `daetalker preprocess` with the same --in and --out: it redoes the source of a clip whose "
            "files are torn")


class DatasetError(DaetalkerError):
    """The processed dataset cannot be used as it is: the message names the file and the fix."""


class EmptySplitError(DatasetError):
    """A split a stage needs has no clip in the manifest."""


# ------------------------------------------------------------------ names
def slug(text: str, limit: int = 40) -> str:
    """ASCII, lower-case, dash-separated: 'Vidéo 1 (final)' -> 'video-1-final'."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")
    return s[:limit].strip("-") or "clip"


def clip_id(source_rel: str, sha256: str, segment: int) -> str:
    return f"{slug(Path(source_rel).stem)}-{sha256[:8]}-s{segment}"


def split_draw(source_sha256: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, content)."""
    return int(hashlib.sha256(f"{seed}:{source_sha256}".encode()).hexdigest()[:12], 16) / 16**12


def assign_split(source_sha256: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """Split of every segment of one source: a hash of (seed, content), so it never changes
    when other sources are added and segments of one recording never straddle splits."""
    u = split_draw(source_sha256, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_splits(shas: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """:func:`assign_split` for every source, except that with 3 or more sources an empty
    val or test split takes the train source with the lowest draw (small datasets, the demo)."""
    split = {s: assign_split(s, val_fraction, test_fraction, seed) for s in shas}
    if len(split) >= 3:
        for name, fraction in (("test", test_fraction), ("val", val_fraction)):
            train = sorted((split_draw(s, seed), s) for s, v in split.items() if v == "train")
            if fraction > 0 and name not in split.values() and len(train) > 1:
                split[train[0][1]] = name
    return split


def split_strategy(splits: dict[str, str]) -> str:
    """Per source (``splits`` from :func:`assign_splits`) when there are enough recordings and one of
    them trains, or nothing to split; else by time within each recording."""
    if not splits or (len(splits) >= MIN_SOURCES_PER_SOURCE and "train" in splits.values()):
        return PER_SOURCE
    return BY_TIME


def time_split_ranges(n: int, val_fraction: float, test_fraction: float, min_frames: int) -> list[tuple[str, int, int]]:
    """(split, first, end) frame ranges of one segment of ``n`` frames, in time order: train first,
    then val, then test at the end, each of at least ``min_frames``. A segment too short for three
    parts gives up val, then test; train always stays (``n >= min_frames``: shorter ones are quarantined)."""
    held = {s: max(round(f * n), min_frames) for s, f in (("val", val_fraction), ("test", test_fraction)) if f > 0}
    for drop in ("val", "test"):
        if n - sum(held.values()) >= min_frames:
            break
        held.pop(drop, None)
    parts, end = [], n
    for s in ("test", "val"):
        if s in held:
            parts.insert(0, (s, end - held[s], end))
            end -= held[s]
    return [("train", 0, end), *parts]


def empty_split_error(manifest_path: Path, splits: list[str], present: list[str]) -> EmptySplitError:
    """No clip in ``splits``; when they include train, the fix (a rerun splits few recordings by time)."""
    counts = ", ".join(f"{s} {present.count(s)}" for s in sorted(set(present))) or "none"
    msg = f"{manifest_path}: no frames in split(s) {list(splits)} (clips per split: {counts})"
    if "train" in splits:
        msg += (f"; nothing to train on (fix: re-run `daetalker preprocess` into this folder: with fewer than "
                f"{MIN_SOURCES_PER_SOURCE} recordings it splits each one by time, so train is never empty "
                "(docs/dataset.md, Splits); or add recordings of the speaker)")
    return EmptySplitError(msg)


# ------------------------------------------------------------------ readers
def clip_dir(data_dir: Path, cid: str) -> Path:
    return Path(data_dir) / CLIPS / cid


def load_manifest(data_dir: Path):
    import pandas as pd

    return pd.read_parquet(Path(data_dir) / MANIFEST)


def open_frames(data_dir: Path, cid: str) -> np.ndarray:
    """uint8 (N, R, R, 3) RGB, memory-mapped read-only; :class:`DatasetError` names a torn file."""
    return read_header(clip_dir(data_dir, cid) / "frames.npy")


def read_header(path: Path, where: str | None = None, fix: str = REDO_FIX) -> Any:
    """The cheap view of one clip file: a .npy memory-mapped, a .parquet's metadata, a .wav's info.

    A missing, truncated or corrupt file raises :class:`DatasetError` with the file (``where``,
    default the path), the real cause and ``fix``, instead of numpy's bare
    "mmap length is greater than file size" somewhere later.
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_metadata(path)
        import soundfile as sf

        return sf.info(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{where or path}: missing (fix: {fix})") from None
    except (OSError, ValueError, RuntimeError, EOFError) as exc:  # pyarrow, soundfile and numpy raise these
        raise DatasetError(f"{where or path}: cannot be read: {exc} (truncated or corrupt? fix: {fix})") from exc


def clip_problem(data_dir: Path, row: dict[str, Any], mel_per_frame: int, samples_per_frame: int) -> str | None:
    """Why clip ``row`` (a manifest row) is not whole on disk: the first file missing, torn or of the
    wrong length; None when every file reads back with the manifest's frame count."""
    n = int(row["n_frames"])
    want = {"frames.npy": n, "landmarks.npy": n, "labels.parquet": n, "mel.npy": mel_per_frame * n,
            "audio.wav": samples_per_frame * n}
    for name in FILES:
        try:
            h = read_header(clip_dir(data_dir, row["clip_id"]) / name)
        except DatasetError as exc:
            return str(exc)
        rows = h.shape[0] if name.endswith(".npy") else h.num_rows if name.endswith(".parquet") else h.frames
        if rows != want[name]:
            return f"{name}: {rows} rows, expected {want[name]}"
    return None


# ------------------------------------------------------------------ writers
class NpyWriter:
    """Stream rows into a .npy whose full shape is known up front; np.load reads it back.

    Writing the header first and then raw rows keeps memory flat (no memmap of
    the whole array); ``close`` checks that exactly ``shape[0]`` rows came.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        self.rows = 0
        self._f = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._f, header)

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] and rows.shape != self.shape[1:]:
            raise ValueError(f"{self.path.name}: row shape {rows.shape} != {self.shape[1:]}")
        n = 1 if rows.shape == self.shape[1:] else rows.shape[0]
        if self.rows + n > self.shape[0]:
            raise ValueError(f"{self.path.name}: more than {self.shape[0]} rows")
        self._f.write(rows.tobytes())
        self.rows += n

    def close(self) -> None:
        self._f.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: wrote {self.rows} rows, header says {self.shape[0]}")

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()


def write_table(df, path: Path, schema: dict[str, str] | None = None) -> None:
    """Parquet with a fixed column order and dtypes; deterministic bytes for equal content."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if schema is not None:
        df = pd.DataFrame({c: pd.Series(df[c] if c in df else [], dtype=t) for c, t in schema.items()})
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata(None)  # no pandas metadata: byte-stable across pandas versions
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    replace_if_changed(tmp, Path(path))


def write_text(text: str, path: Path) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    tmp.write_text(text)
    replace_if_changed(tmp, Path(path))


def replace_if_changed(tmp: Path, dst: Path) -> None:
    """Atomically move ``tmp`` to ``dst``; leave ``dst`` untouched (mtime too) when identical."""
    if dst.is_file() and dst.stat().st_size == tmp.stat().st_size and _same_bytes(tmp, dst):
        tmp.unlink()
        return
    os.replace(tmp, dst)


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def install_dir(tmp: Path, dst: Path) -> None:
    """Move a finished clip folder into place; an older copy is replaced whole."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old{os.getpid()}")
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
