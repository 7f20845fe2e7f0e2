"""Does the DAE draw the mouth that z asks for? Decode held-out clips from their own z and from speech2latent's.

For each held-out clip (the first ``--clips``, spread over val + test): the clip's own
latents (extract-latents: the best speech2latent could ever give) and speech2latent's
prediction from its audio, each DDIM-decoded from one shared x_T (the bundle's reference
frame inverted, or ``--noise random``), then Face Mesh's mouth opening on the decoded
frames against the clip's labels. Prints a line per clip and the means.

    python bench/dae_mouth_probe.py --bundle BUNDLE --data DATA --latents LATENTS [--clips 8] [--steps 10] \
        [--strip FIRST_CLIP.jpg]

``--strip`` writes a picture of the first clip: the real frames on top, then one row per
decode (every 6th frame, 12 columns), to look at the mouth rather than read its r.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from daetalker.data import dataset as ds
from daetalker.evaluate.evaluate import FrameLabeller, _split_rows
from daetalker.generate.model import load_talker
from daetalker.diffusion import linear_schedule
from daetalker.generate.video import _start_noise, decode_latents, predict_latents
from daetalker.models.images import to_uint8


def write_strip(path: Path, rows: list[np.ndarray], every: int = 6, columns: int = 12) -> None:
    """One row per frame sequence (N, R, R, 3) RGB: every ``every``-th frame, ``columns`` of them, as a JPEG."""
    import cv2

    pick = np.arange(0, min(len(f) for f in rows), every)[:columns]
    grid = np.concatenate([np.concatenate(list(f[pick]), axis=1) for f in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--latents", type=Path, required=True, help="extract-latents folder of the bundle's DAE")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--noise", choices=("reference", "random"), default="reference")
    ap.add_argument("--guidance", default="1", help="comma-separated reference-guidance scales")
    ap.add_argument("--strip", type=Path, default=None, help="write the first clip's frames here (.jpg)")
    args = ap.parse_args()
    scales = [float(v) for v in args.guidance.split(",")]

    from s2l_mouth_probe import clip_features  # this folder is on sys.path when run as a script

    t = load_talker(args.bundle, torch.device("cpu"))
    dcfg, labeller = t.dae_cfg, FrameLabeller(t.config.preprocess)
    schedule = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    x_T, inverted, z_ref = _start_noise(t, args.noise, False, 0, args.steps, schedule)  # as generate chooses them
    r: dict[str, list[float]] = {}
    amp: dict[str, list[float]] = {}
    rows: dict[str, np.ndarray] = {}  # the first clip's frames (N, R, R, 3) per row of --strip
    for row in _split_rows(args.data, "heldout", args.clips):
        cid = row["clip_id"]
        z_own = torch.from_numpy(np.load(args.latents / "latents" / f"{cid}.npy")).float()  # (N, D)
        n = len(z_own)
        truth = pd.read_parquet(ds.clip_dir(args.data, cid) / "labels.parquet")["mouth_open"].to_numpy()[:n]
        feats = clip_features(t, args.data, cid)
        z_s2l = torch.cat([z for _, z in predict_latents(t.s2l, feats, n, None, chunk_frames=250, context_frames=50)])
        line = {"clip": cid}
        for source, z in (("own_z", z_own), ("speech2latent", z_s2l * t.latent_std + t.latent_mean)):
            for w in scales:
                name = f"{source}@{w:g}"
                frames = np.concatenate([to_uint8(f) for f in decode_latents(
                    t.dae, z, x_T, steps=args.steps, schedule=schedule, batch_size=16, bf16=dcfg.bf16,
                    clip_x0=not inverted, guide=(z_ref, w))])  # fmt: skip
                mouth = labeller(frames, row).mouth
                ok = ~np.isnan(mouth)
                good = ok.sum() > 2
                r.setdefault(name, []).append(float(np.corrcoef(mouth[ok], truth[ok])[0, 1]) if good else float("nan"))
                amp.setdefault(name, []).append(float(mouth[ok].std() / truth[ok].std()) if good else float("nan"))
                line[name] = round(r[name][-1], 3)
                if args.strip is not None and len(r[name]) == 1:
                    rows.setdefault("real", np.asarray(ds.open_frames(args.data, cid))[:n])
                    rows[name] = frames
        print(json.dumps(line), flush=True)
    if args.strip is not None:
        write_strip(args.strip, list(rows.values()))
    mean = lambda d: {k: round(float(np.nanmean(v)), 3) for k, v in d.items()}  # noqa: E731
    print(json.dumps({"bundle": str(args.bundle), "noise": args.noise, "clips": len(next(iter(r.values()))),
                      "mean_mouth_r": mean(r), "mouth_std_share": mean(amp)}))  # fmt: skip


if __name__ == "__main__":
    main()
