"""How much of the mouth speech2latent's latents carry, before any decoding.

A ridge probe from the normalised DAE latent to the ground-truth mouth opening is
fit on the training clips' own latents (extract-latents), then applied to each
held-out clip's own latents (the ceiling) and to speech2latent's predictions from
the clip's audio (the features its s2l was trained on) with the predicted pose (what generation decodes). Prints the
Pearson r of each with the ground truth, and the std of the predicted mouth
read-out over the own-latent one (below 1: predictions shrink toward the mean),
a line per clip and then each bundle's means over the held-out clips.

    python bench/s2l_mouth_probe.py --data DATA --latents LATENTS --bundle BUNDLE [--bundle BUNDLE2 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from daetalker.data import dataset as ds
from daetalker.features import make_extractor
from daetalker.generate.model import load_talker
from daetalker.generate.video import predict_latents
from daetalker.train.frames_dataset import read_manifest


def clip_features(talker, data: Path, cid: str) -> np.ndarray:
    """The clip's features as the bundle's s2l takes them: mel.npy, or its extractor on audio.wav."""
    if talker.config.s2l.features == "log_mel":
        return np.load(ds.clip_dir(data, cid) / "mel.npy", mmap_mode="r")
    import soundfile as sf

    wav, _ = sf.read(ds.clip_dir(data, cid) / "audio.wav", dtype="float32")
    return make_extractor(talker.config.s2l, talker.config.preprocess)(wav)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--latents", type=Path, required=True, help="extract-latents folder the bundles were trained on")
    ap.add_argument("--bundle", type=Path, action="append", required=True)
    ap.add_argument("--ridge", type=float, default=1.0)
    args = ap.parse_args()

    man = read_manifest(args.data)
    own, mouth = {}, {}
    for cid in man["clip_id"]:
        z = np.load(args.latents / "latents" / f"{cid}.npy")
        own[cid] = z
        mouth[cid] = pd.read_parquet(ds.clip_dir(args.data, cid) / "labels.parquet")["mouth_open"].to_numpy()[: len(z)]
    train = man[man["split"] == "train"]["clip_id"].tolist()
    held = man[man["split"].isin(("val", "test"))]["clip_id"].tolist()
    for bundle in args.bundle:
        t = load_talker(bundle, torch.device("cpu"))
        mean, std = t.latent_mean.numpy(), t.latent_std.numpy()
        norm = {c: (z - mean) / std for c, z in own.items()}
        x = np.concatenate([norm[c] for c in train])
        a = np.c_[x, np.ones(len(x))]  # (N, D + 1)
        w = np.linalg.solve(a.T @ a + args.ridge * np.eye(a.shape[1]), a.T @ np.concatenate([mouth[c] for c in train]))
        read = lambda zn: np.c_[zn, np.ones(len(zn))] @ w  # noqa: E731
        rows = []
        for cid in held:
            n = len(own[cid])
            mel = clip_features(t, args.data, cid)
            pred = torch.cat([z for _, z in predict_latents(t.s2l, mel, n, None, chunk_frames=250, context_frames=50)])
            r_own, r_pred = read(norm[cid]), read(pred.numpy())
            rows.append({"bundle": str(bundle), "clip": cid,
                         "mouth_r_own_latents": round(float(np.corrcoef(r_own, mouth[cid])[0, 1]), 3),
                         "mouth_r_speech2latent": round(float(np.corrcoef(r_pred, mouth[cid])[0, 1]), 3),
                         "readout_std_ratio": round(float(r_pred.std() / r_own.std()), 2)})  # fmt: skip
            print(json.dumps(rows[-1]))
        summary = {k: round(float(np.nanmean([r[k] for r in rows])), 3)
                   for k in ("mouth_r_own_latents", "mouth_r_speech2latent", "readout_std_ratio")}  # fmt: skip
        print(json.dumps({"bundle": str(bundle), "features": t.config.s2l.features, "clips": len(rows),
                          "mean": summary}))  # fmt: skip


if __name__ == "__main__":
    main()
