"""Acceptance figures of the diffusion autoencoder on a preprocessed speaker (issue 4).

Trains the DAE with a profile (or reuses the run folder's checkpoint), then on
held-out (val + test) frames prints:

* PSNR of the mean training frame (the baseline), of DDIM decodes from random
  noise (``--ddim-steps``) and of decodes from the inverted noise (inversion and
  decode with ``--invert-steps``, default ``dae.invert_steps``), both conditioned
  on z(x0);
* R^2 of a ridge probe from the EMA latent to ground-truth mouth opening and
  yaw, fitted on training clips and scored on held-out clips.

    python bench/dae_acceptance.py --data /tmp/data --out /tmp/dae-acc [--profile tiny] [--set dae.max_steps=...]

Exit status 0 when every acceptance bar is met (noise decode >= baseline + 3 dB,
inverted decode > noise decode, R^2 >= 0.8 for both targets), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from daetalker import checkpoint as ckpt_io
from daetalker.config import load_config
from daetalker.diffusion import linear_schedule
from daetalker.models.images import to_model_range
from daetalker.models.loading import load_dae
from daetalker.train.dae_trainer import train_dae
from daetalker.train.reconstruction import psnr, reconstruct
from daetalker.train.frames_dataset import FramesDataset, frames_path, read_manifest
from daetalker.train.latents import encode_frames

HELD_OUT = ("val", "test")
TARGETS = ("mouth_open", "yaw")


def mean_train_frame(data: Path, image_size: int) -> torch.Tensor:
    ds = FramesDataset(data, splits=("train",), image_size=image_size)
    total, n = torch.zeros(3, image_size, image_size, dtype=torch.float64), 0
    for cid in ds.clip_ids:
        frames = np.load(frames_path(data, cid), mmap_mode="r")
        for i in range(0, len(frames), 256):
            x = to_model_range(np.array(frames[i : i + 256]), image_size)
            total += x.double().sum(0)
            n += len(x)
    return (total / n).float()


def ridge_r2(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> float:
    """R^2 on the test set of a ridge fit whose penalty is picked by 5-fold CV on the training set."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd
    ym = y_tr.mean()

    def fit(xa: np.ndarray, ya: np.ndarray, lam: float) -> np.ndarray:
        return np.linalg.solve(xa.T @ xa + lam * np.eye(xa.shape[1]), xa.T @ (ya - ya.mean()))

    folds = np.arange(len(a)) % 5
    best, best_err = 1.0, np.inf
    for lam in 10.0 ** np.arange(-2, 5):
        err = 0.0
        for k in range(5):
            tr, va = folds != k, folds == k
            w = fit(a[tr], y_tr[tr], lam)
            err += np.sum((a[va] @ w + y_tr[tr].mean() - y_tr[va]) ** 2)
        if err < best_err:
            best, best_err = lam, err
    w = fit(a, y_tr, best)
    pred = b @ w + ym
    return float(1.0 - np.sum((pred - y_te) ** 2) / np.sum((y_te - y_te.mean()) ** 2))


def probe(data: Path, model, targets=TARGETS) -> dict[str, float]:
    man = read_manifest(data)
    if "has_ground_truth" in man.columns:
        man = man[man["has_ground_truth"]]
    xs: dict[bool, list] = {True: [], False: []}
    ys: dict[bool, list] = {True: [], False: []}
    for row in man.itertuples(index=False):
        gt_path = frames_path(data, row.clip_id).parent / "ground_truth.parquet"
        if not gt_path.is_file():
            continue
        gt = pd.read_parquet(gt_path).set_index("frame").sort_index()
        z = encode_frames(model, np.load(frames_path(data, row.clip_id), mmap_mode="r"))
        held = row.split in HELD_OUT
        idx = gt.index.to_numpy()
        idx = idx[idx < len(z)]
        xs[held].append(z[idx])
        ys[held].append(gt.loc[idx, list(targets)].to_numpy(np.float64))
    if not xs[True] or not xs[False]:
        return {}
    x_tr, y_tr = np.concatenate(xs[False]), np.concatenate(ys[False])
    x_te, y_te = np.concatenate(xs[True]), np.concatenate(ys[True])
    return {f"r2_{t}": ridge_r2(x_tr, y_tr[:, i], x_te, y_te[:, i]) for i, t in enumerate(targets)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="run folder (reused if it holds a checkpoint)")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--frames", type=int, default=64, help="held-out frames for the PSNR figures")
    ap.add_argument("--ddim-steps", type=int, default=None, help="default: dae.sample_steps")
    ap.add_argument("--invert-steps", type=int, default=None, help="default: dae.invert_steps")
    args = ap.parse_args()

    cfg = load_config(args.profile, None, args.overrides)
    t0 = time.perf_counter()
    have = ckpt_io.load_latest(args.out / "checkpoints") is not None
    result = train_dae(args.data, args.out, cfg, resume=have)
    train_s = time.perf_counter() - t0

    model, dcfg = load_dae(result.checkpoint)
    steps = args.ddim_steps or dcfg.sample_steps
    invert_steps = args.invert_steps or dcfg.invert_steps
    held = FramesDataset(args.data, splits=HELD_OUT, image_size=dcfg.image_size)
    idx = np.linspace(0, len(held) - 1, min(args.frames, len(held))).round().astype(int)
    x0 = torch.stack([held[int(i)] for i in idx])
    mean = mean_train_frame(args.data, dcfg.image_size)
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    noise_dec, inv_dec = reconstruct(model, x0, steps, sched, seed=123, invert_steps=invert_steps)
    figures = {
        "train_seconds": round(train_s, 1),
        "steps": result.final_step,
        "held_out_frames": len(x0),
        "ddim_steps": steps,
        "invert_steps": invert_steps,
        "psnr_mean_frame": float(psnr(mean.expand_as(x0), x0).mean()),
        "psnr_noise_decode": float(psnr(noise_dec, x0).mean()),
        "psnr_inverted_decode": float(psnr(inv_dec, x0).mean()),
        **probe(args.data, model),
    }
    ok = (
        figures["psnr_noise_decode"] >= figures["psnr_mean_frame"] + 3.0
        and figures["psnr_inverted_decode"] > figures["psnr_noise_decode"]
        and all(figures.get(f"r2_{t}", -1.0) >= 0.8 for t in TARGETS)
    )
    figures["pass"] = ok
    print(json.dumps(figures, indent=2))
    (args.out / "acceptance.json").write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
