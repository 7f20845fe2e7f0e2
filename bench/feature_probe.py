"""How linearly the mouth can be read from each kind of speech feature, before any model is trained.

For every clip of a preprocessed dataset: its features (``log_mel``: mel.npy;
``whisper-tiny``: the extractor on audio.wav), the k rows of each video frame
concatenated, +-``--context`` frames stacked, standardised over all clips -> a
ridge regression to the labelled mouth opening, fit on the train split; prints
the Pearson r on the val and test clips (mean over clips) per penalty, and the
best. A cheap proxy for the issue's comparison (speech2latent's mouth r and
LSE-C need a DAE and trained models).

    python bench/feature_probe.py --data DATA [--features log_mel whisper-tiny] [--context 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import daetalker  # noqa: F401  (sets GOMP_SPINCOUNT before torch loads libgomp)

import numpy as np
import pandas as pd
import soundfile as sf

from daetalker.config import load_config
from daetalker.data import dataset as ds
from daetalker.features import make_extractor
from daetalker.train.frames_dataset import read_manifest

ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def clip_rows(kind: str, data: Path, cid: str, n: int, extractor) -> np.ndarray:
    """(n, k * F): each video frame's feature rows side by side."""
    if kind == "log_mel":
        feats = np.load(ds.clip_dir(data, cid) / "mel.npy")
    else:
        wav, _ = sf.read(ds.clip_dir(data, cid) / "audio.wav", dtype="float32")
        feats = extractor(wav)
    k = len(feats) // n
    return feats[: k * n].reshape(n, -1)


def stack(x: np.ndarray, context: int) -> np.ndarray:
    """(n, D) -> (n, (2 context + 1) D), edges repeated."""
    pad = np.pad(x, ((context, context), (0, 0)), mode="edge")
    return np.concatenate([pad[i : i + len(x)] for i in range(2 * context + 1)], axis=1)


def held_out_r(xs: list[np.ndarray], ys: list[np.ndarray], held: list[bool]) -> dict[float, float]:
    """Mean Pearson r over the held-out clips per penalty, fit on the others, in the dual (kernel) form."""
    x = np.concatenate(xs)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # standardised once over all clips (no label enters)
    clip_of = np.concatenate([np.full(len(v), i) for i, v in enumerate(xs)])
    train = np.flatnonzero(~np.asarray(held)[clip_of])
    y_tr = np.concatenate([y for y, h in zip(ys, held) if not h])
    evals, evecs = np.linalg.eigh(x[train] @ x[train].T)  # (Ntr,), (Ntr, Ntr)
    proj = evecs.T @ (y_tr - y_tr.mean())
    rs: dict[float, float] = {}
    for a in ALPHAS:
        dual = evecs @ (proj / (evals + a))  # (Ntr,)
        r = [float(np.corrcoef(x[clip_of == i] @ (x[train].T @ dual), ys[i])[0, 1])
             for i in range(len(xs)) if held[i]]  # fmt: skip
        rs[a] = round(float(np.mean(r)), 3)
    return rs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--features", nargs="+", default=["log_mel", "whisper-tiny"])
    ap.add_argument("--context", type=int, default=2)
    args = ap.parse_args()
    man = read_manifest(args.data)
    mouth = {c: pd.read_parquet(ds.clip_dir(args.data, c) / "labels.parquet")["mouth_open"].to_numpy()
             for c in man["clip_id"]}  # fmt: skip
    for kind in args.features:
        cfg = load_config("tiny", None, [f"s2l.features={kind}"])
        extractor = make_extractor(cfg.s2l, cfg.preprocess)
        t0 = time.perf_counter()
        xs, ys, held = [], [], []
        for cid, n, split in zip(man["clip_id"], man["n_frames"], man["split"]):
            held.append(split != "train")
            xs.append(stack(clip_rows(kind, args.data, str(cid), int(n), extractor), args.context))
            ys.append(mouth[cid][: int(n)].astype(np.float64))
        took = time.perf_counter() - t0
        per_alpha = held_out_r(xs, ys, held)
        best = max(per_alpha, key=per_alpha.get)
        print(json.dumps({"features": kind, "held_out_clips": int(sum(held)), "frames": int(sum(map(len, ys))),
                          "dim": xs[0].shape[1], "features_s": round(took, 1), "mouth_r_by_alpha": per_alpha,
                          "best_alpha": best, "best_mouth_r": per_alpha[best]}))  # fmt: skip


if __name__ == "__main__":
    main()
