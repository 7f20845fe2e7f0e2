"""Calibrating a SyncNet expert on videos it was not trained on (issue 6's acceptance).

For each held-out video, LSE is scored with:

- ``own``: its own audio (should be in sync: AV offset 0 +- 1);
- ``shift+K`` / ``shift-K``: its own audio advanced / delayed by K frames. The track
  is *rolled*, not cut: it stays the same length and all real speech, only out of
  sync, so nothing but the timing differs from ``own``;
- ``other``: another held-out clip's audio, tiled or cut to this video's length.

``offset_recovery`` rolls the audio by k = -5..5 frames and reads the AV offset back
(sign as in ``lse.py``: audio advanced by k frames -> offset +k).

Real clips are too few to hold whole speakers out and still train on several, so
``time_split`` writes a dataset whose train split is the first part of every clip
and whose test split is the rest: the expert never sees the frames it scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daetalker.errors import DaetalkerError
from daetalker.evaluate.lse import LseResult, lip_embeddings, lse, protocol_length
from daetalker.evaluate.mfcc import SAMPLES_PER_FRAME
from daetalker.evaluate.syncnet import LIP_FRAMES, SyncNetLike

SHIFT = 10  # frames (0.4 s): the out-of-sync control
RECOVERY_SHIFTS = tuple(range(-5, 6))


@dataclass
class HeldOutClip:
    clip_id: str
    frames: np.ndarray  # uint8 (N, R, R, 3)
    audio: np.ndarray  # int16 (S,) 16 kHz mono


@dataclass
class CalibrationRow:
    clip_id: str
    other_clip: str  # whose audio the ``other`` row used
    scores: dict[str, LseResult]  # "own", "shift+K", "shift-K", "other"


def shift_audio(audio: np.ndarray, k: int) -> np.ndarray:
    """Audio advanced by k frames (k < 0: delayed), rolled so the length and the speech stay the same."""
    return np.roll(np.asarray(audio), -SAMPLES_PER_FRAME * int(k))


def fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Another clip's audio tiled or cut to ``n_samples``, so both tracks are scored over the same windows."""
    return np.resize(np.asarray(audio), n_samples)


def load_heldout(data_dir: Path, splits: tuple[str, ...]) -> list[HeldOutClip]:
    """Clips of ``splits`` in clip_id order, frames memory-mapped."""
    from daetalker.evaluate.syncnet_train import read_clip_audio
    from daetalker.train.frames_dataset import frames_path, read_manifest

    df = read_manifest(data_dir)
    ids = sorted(str(c) for c in df[df["split"].isin(list(splits))]["clip_id"])
    if not ids:
        raise DaetalkerError(f"{Path(data_dir) / 'manifest.parquet'}: no clips in split(s) {list(splits)} to score")
    return [HeldOutClip(cid, np.load(frames_path(data_dir, cid), mmap_mode="r"),
                        read_clip_audio(Path(data_dir) / "clips" / cid / "audio.wav")) for cid in ids]


def _windows(clip: HeldOutClip, shift: int) -> int:
    """Protocol windows of the clip; more than ``shift`` of them, or a shift would leave nothing in sync."""
    n = protocol_length(len(clip.frames), len(clip.audio)) - LIP_FRAMES
    if n <= shift:
        raise DaetalkerError(f"clip {clip.clip_id}: {len(clip.frames)} frames is too short to shift by {shift}; "
                             "hold out a longer part of it")
    return n


def calibrate(model: SyncNetLike, clips: list[HeldOutClip], shift: int = SHIFT,
              other_step: int = 1) -> list[CalibrationRow]:
    """LSE of every clip with its own, shifted and another clip's audio: the clip ``other_step`` places on,
    cyclically (the next one by default). A corpus of templated sentences sorts near-duplicates next to
    each other (GRID's "bin blue by s five soon" beside "bin blue by z nine soon"): there a step of half
    the clips pairs each video with a sentence of other words."""
    if len(clips) < 2:
        raise DaetalkerError("calibration needs >= 2 held-out clips (one's audio is the other's mismatch)")
    if not 1 <= other_step < len(clips):
        raise ValueError(f"other_step must be in [1, {len(clips) - 1}] for {len(clips)} clips, got {other_step}")
    rows = []
    for n, clip in enumerate(clips):
        lip = lip_embeddings(model, clip.frames, _windows(clip, shift))  # once per video, reused for every track
        other = clips[(n + other_step) % len(clips)]
        tracks = {"own": clip.audio, f"shift+{shift}": shift_audio(clip.audio, shift),
                  f"shift-{shift}": shift_audio(clip.audio, -shift), "other": fit_length(other.audio, len(clip.audio))}
        rows.append(CalibrationRow(clip.clip_id, other.clip_id, {k: lse(lip, a, model) for k, a in tracks.items()}))
    return rows


def offset_recovery(model: SyncNetLike, clip: HeldOutClip, shifts: tuple[int, ...] = RECOVERY_SHIFTS) -> dict[int, int]:
    """Audio rolled by k frames -> the AV offset LSE reports, for each k."""
    lip = lip_embeddings(model, clip.frames, _windows(clip, max(abs(k) for k in shifts)))
    return {k: lse(lip, shift_audio(clip.audio, k), model).offset for k in shifts}


def failures(rows: list[CalibrationRow], recovery: dict[str, dict[int, int]] | None = None,
             tolerance: int = 1, anchors: dict[str, int] | None = None) -> list[str]:
    """The calibration properties that do not hold, one line each (empty: calibrated).

    Every video: own audio found at its anchor (0, or ``anchors[clip_id]``: the recording's
    own AV offset) +- tolerance; another clip's audio worse than its own on LSE-D and LSE-C,
    and on D and C read at the offset where the own audio syncs; its audio shifted by K
    frames found at anchor + K +- tolerance and worse there too. The protocol's LSE-D /
    LSE-C of a shifted track are reported, not required: they take the best offset, so a
    shift the search range covers barely moves them (see ``lse.py``). Every recovery clip:
    a shift of k frames reported as anchor + k +- tolerance. At the own audio's offset, not
    at 0: within the tolerance the expert may put a video's sync a frame off, and the
    comparison belongs where it put it (for an own offset of 0 that is D(0) and C(0)).
    """
    anchors = anchors or {}
    out = []
    for r in rows:
        own, anchor = r.scores["own"], anchors.get(r.clip_id, 0)
        if abs(own.offset - anchor) > tolerance:
            out.append(f"{r.clip_id}: own audio at AV offset {own.offset}, not {anchor} +- {tolerance}")
        for name, s in r.scores.items():
            if name == "own":
                continue
            pairs = {"lse_d0": (s.dist_at(own.offset), own.dist_at(own.offset)),
                     "lse_c0": (s.conf_at(own.offset), own.conf_at(own.offset))}
            if name == "other":
                pairs.update(lse_d=(s.lse_d, own.lse_d), lse_c=(s.lse_c, own.lse_c))
            for key, (theirs, mine) in pairs.items():
                if (theirs <= mine) if key.startswith("lse_d") else (theirs >= mine):
                    at = "" if key in ("lse_d", "lse_c") else f" at offset {own.offset}"
                    out.append(f"{r.clip_id}: {name} audio is not worse than own on {key}{at} "
                               f"({theirs:.4f} vs {mine:.4f})")  # fmt: skip
            if name.startswith("shift") and abs(s.offset - anchor - int(name[len("shift"):])) > tolerance:
                out.append(f"{r.clip_id}: {name} audio found at AV offset {s.offset}")
    for cid, found in (recovery or {}).items():
        anchor = anchors.get(cid, 0)
        out += [f"{cid}: shift {k} reported as AV offset {o}" for k, o in found.items()
                if abs(o - anchor - k) > tolerance]  # fmt: skip
    return out


def margins(rows: list[CalibrationRow], recovery: dict[str, dict[int, int]] | None = None) -> dict[str, dict[str, float]]:
    """How far each clip is from failing each property: clip_id -> figures (the worst over its tracks).

    ``failures`` says whether a property holds; these say by how much, so a test can
    require room rather than a sign, and a stability check can compare seeds and
    threads. Distances are in the expert's units (L2-normalised embeddings: 0..sqrt 2).

    - ``own_offset``: AV offset of the own audio;
    - ``peak_gap``: min over k != 0 of D(k) - D(0) for the own audio: > 0 iff the own
      audio is found at offset 0 exactly, and how much noise that verdict survives;
    - ``peak_gap_rel``: ``peak_gap`` / own LSE-C (the share of the sync dip that is
      the margin of the argmin);
    - ``lse_c_own`` / ``lse_c_other``: LSE-C of the own and the other audio;
    - ``lse_c_ratio``: own LSE-C / other LSE-C (> 1: the other audio is less confident);
    - ``lse_d_gap``: other LSE-D - own LSE-D (> 0: the other audio is worse);
    - ``d0_gap_other`` / ``c0_gap_other``: other D(0) - own D(0), own C(0) - other C(0);
    - ``d0_gap_shift``: min over the shifted tracks of their D(0) - own D(0);
    - ``c0_shift_share``: max over the shifted tracks of their C(0) / own LSE-C (< 1: worse);
    - ``shift_offset_err``: max over the shifted tracks of |reported offset - shift|;
    - ``recovery_err``: max over the rolled tracks of |reported offset - k| (NaN without ``recovery``).
    """
    out = {}
    for r in rows:
        own, other = r.scores["own"], r.scores["other"]
        shifted = {name: s for name, s in r.scores.items() if name.startswith("shift")}
        others = np.delete(own.dists, (len(own.dists) - 1) // 2)
        found = (recovery or {}).get(r.clip_id)
        out[r.clip_id] = {
            "own_offset": float(own.offset),
            "peak_gap": float(others.min() - own.lse_d0),
            "peak_gap_rel": float((others.min() - own.lse_d0) / max(own.lse_c, 1e-9)),
            "lse_c_own": own.lse_c,
            "lse_c_other": other.lse_c,
            "lse_c_ratio": own.lse_c / max(other.lse_c, 1e-9),
            "lse_d_gap": other.lse_d - own.lse_d,
            "d0_gap_other": other.lse_d0 - own.lse_d0,
            "c0_gap_other": own.lse_c0 - other.lse_c0,
            "d0_gap_shift": min(s.lse_d0 - own.lse_d0 for s in shifted.values()),
            "c0_shift_share": max(s.lse_c0 for s in shifted.values()) / max(own.lse_c, 1e-9),
            "shift_offset_err": float(max(abs(s.offset - int(n[len("shift"):])) for n, s in shifted.items())),
            "recovery_err": float(max(abs(o - k) for k, o in found.items())) if found else float("nan"),
        }
    return out


# figure -> True where larger is better: the worst clip is the min of those, the max of the others
MARGIN_HIGHER_IS_BETTER = {"own_offset": False, "peak_gap": True, "peak_gap_rel": True, "lse_c_own": True,
                           "lse_c_other": False, "lse_c_ratio": True, "lse_d_gap": True, "d0_gap_other": True,
                           "c0_gap_other": True, "d0_gap_shift": True, "c0_shift_share": False,
                           "shift_offset_err": False, "recovery_err": False}


def worst_margins(per_clip: dict[str, dict[str, float]]) -> dict[str, float]:
    """The worst value of each ``margins`` figure over the clips (``own_offset``: the largest |offset|)."""
    worst = {}
    for key, higher in MARGIN_HIGHER_IS_BETTER.items():
        values = [m[key] for m in per_clip.values()]
        if key == "own_offset":
            worst[key] = max(values, key=abs)
        else:
            worst[key] = min(values) if higher else max(values)
    return worst


def time_split(data_dir: Path, out_dir: Path, train_fraction: float = 0.5) -> Path:
    """A dataset of every clip's first ``train_fraction`` (split train) and the rest (split test).

    Writes ``out_dir/manifest.parquet`` and ``out_dir/clips/<id>-{head,tail}/{frames.npy, audio.wav}``,
    the layout ``train_syncnet`` and ``load_heldout`` read.
    """
    import pandas as pd
    import soundfile as sf

    from daetalker.evaluate.syncnet_train import read_clip_audio
    from daetalker.train.frames_dataset import frames_path, read_manifest

    if not 0.0 < train_fraction < 1.0:
        raise DaetalkerError(f"train_fraction must be in (0, 1), got {train_fraction}")
    out_dir = Path(out_dir)
    rows = []
    for row in read_manifest(data_dir).sort_values("clip_id").to_dict("records"):
        cid = str(row["clip_id"])
        frames = np.load(frames_path(data_dir, cid), mmap_mode="r")
        audio = read_clip_audio(Path(data_dir) / "clips" / cid / "audio.wav")
        n = protocol_length(len(frames), len(audio))
        cut = int(round(n * train_fraction))
        if min(cut, n - cut) <= LIP_FRAMES:
            raise DaetalkerError(f"{frames_path(data_dir, cid)}: {n} frames cannot be split at {train_fraction} "
                                 f"into two parts of > {LIP_FRAMES} frames; leave the clip out or change the fraction")
        for part, split, lo, hi in (("head", "train", 0, cut), ("tail", "test", cut, n)):
            d = out_dir / "clips" / f"{cid}-{part}"
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / "frames.npy", np.ascontiguousarray(frames[lo:hi]))
            sf.write(d / "audio.wav", audio[lo * SAMPLES_PER_FRAME:hi * SAMPLES_PER_FRAME], 16000, subtype="PCM_16")
            rows.append({"clip_id": f"{cid}-{part}", "source_clip": cid, "n_frames": hi - lo, "split": split,
                         "resolution": int(frames.shape[1])})
    pd.DataFrame(rows).to_parquet(out_dir / "manifest.parquet")
    return out_dir


# ------------------------------------------------------------------ tables
HEADS = ("LSE-D", "LSE-C", "offset", "D(0)", "C(0)")


def format_rows(rows: list[CalibrationRow]) -> str:
    """One line per (video, audio track): the protocol's LSE-D / LSE-C / offset and the offset-0 pair."""
    w = max([len("held-out video")] + [len(r.clip_id) for r in rows])
    lines = [f"{'held-out video':{w}s} {'audio':>8s} " + " ".join(f"{h:>6s}" for h in HEADS)]
    for r in rows:
        for name, s in r.scores.items():
            lines.append(f"{r.clip_id:{w}s} {name:>8s} {s.lse_d:6.3f} {s.lse_c:6.3f} {s.offset:6d} {s.lse_d0:6.3f} "
                         f"{s.lse_c0:6.3f}" + (f"  ({r.other_clip})" if name == "other" else ""))
    return "\n".join(lines)


def format_recovery(recovery: dict[str, dict[int, int]]) -> str:
    """Rows: clip; columns: the applied shift k; cells: the AV offset reported."""
    head = "held-out video / shift k"
    w = max([len(head)] + [len(c) for c in recovery])
    shifts = sorted({k for found in recovery.values() for k in found})
    lines = [f"{head:{w}s} " + " ".join(f"{k:>3d}" for k in shifts)]
    lines += [f"{cid:{w}s} " + " ".join(f"{found[k]:>3d}" for k in shifts) for cid, found in recovery.items()]
    return "\n".join(lines)
