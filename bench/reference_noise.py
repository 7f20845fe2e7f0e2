"""Which shared x_T a video starts from: random noise or the reference frame's subcode.

For held-out clips of a processed speaker, decodes every ``--every``-th frame's
latent two ways, from the clip's own frames (the EMA encoder: what the DAE can
do) and from its audio (speech2latent, predicted pose: what generation does), and
from three x_T: the bundle's reference frame inverted with its own z, another
training frame inverted likewise, and seeded random noise. For each it prints
the share of frames where preprocessing's Face Mesh finds a face (detection and
mesh presence, as the evaluation labels frames), on the decoded frames and after
the H.264 round trip ``generate`` applies (read back at the crop size), and the
Pearson r of the measured mouth opening with the ground truth on the decoded
frames.

    python bench/reference_noise.py --bundle BUNDLE --data DATA [--clips 2] [--steps 20] [--every 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from daetalker.data import dataset as ds
from daetalker.diffusion import linear_schedule
from daetalker.evaluate.evaluate import FrameLabeller, decode_video
from daetalker.generate.model import load_talker
from daetalker.generate.video import (VIDEO_SIZE, _Mp4Writer, decode_latents, predict_latents, reference_noise,
                                      shared_noise)
from daetalker.models.images import to_model_range, to_uint8
from daetalker.train.frames_dataset import read_manifest


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() >= 3 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--every", type=int, default=3, help="decode every N-th frame")
    args = ap.parse_args()

    t = load_talker(args.bundle, torch.device("cpu"))
    d = t.dae_cfg
    if t.reference_frame is None:
        raise SystemExit(f"{args.bundle}: no reference frame (re-run extract-latents and bundle)")
    sched = linear_schedule(d.timesteps, d.beta_start, d.beta_end)
    man = read_manifest(args.data)
    held = man[man["split"].isin(("test", "val"))].sort_values("clip_id").head(args.clips)
    other = man[man["split"] == "train"].iloc[0]
    other_frame = np.load(ds.clip_dir(args.data, other["clip_id"]) / "frames.npy", mmap_mode="r")[0]
    labeller = FrameLabeller(t.config.preprocess)
    noises = {
        "reference": (reference_noise(t.dae, t.reference_frame, steps=args.steps, schedule=sched), False),
        "other_train_frame": (reference_noise(t.dae, np.array(other_frame), steps=args.steps, schedule=sched), False),
        "random": (shared_noise(t.dae.image_size, 0, channels=t.dae.channels), True),
    }
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for row in held.to_dict("records"):
            clip = ds.clip_dir(args.data, row["clip_id"])
            frames = np.load(clip / "frames.npy", mmap_mode="r")
            n = len(frames)
            sel = np.arange(0, n, args.every)
            size = frames.shape[1]
            gt_mouth = pd.read_parquet(clip / "labels.parquet")["mouth_open"].to_numpy(np.float64)[sel]
            with torch.no_grad():
                z_own = t.dae.encode_frames(to_model_range(np.array(frames[sel]), t.dae.pixel_size))
            mel = np.load(clip / "mel.npy", mmap_mode="r")
            z_s2l = torch.cat([z for _, z in predict_latents(t.s2l, mel, n, None, chunk_frames=250, context_frames=50)])
            z_s2l = (z_s2l * t.latent_std + t.latent_mean)[sel]
            for source, z in (("own_frames", z_own), ("speech2latent", z_s2l)):
                for name, (x_T, clip_x0) in noises.items():
                    out = torch.cat(list(decode_latents(t.dae, z, x_T, steps=args.steps, schedule=sched,
                                                        batch_size=64, clip_x0=clip_x0)))  # fmt: skip
                    up = to_uint8(F.interpolate(out, size=(size, size), mode="bicubic", align_corners=False))
                    mp4, vsize = Path(work) / "v.mp4", max(VIDEO_SIZE, t.dae.pixel_size)  # as generate writes it
                    writer = _Mp4Writer(mp4, vsize, clip / "audio.wav", len(up))
                    writer.write(to_uint8(F.interpolate(out, size=(vsize, vsize), mode="bicubic", align_corners=False)))
                    writer.close()
                    m_dec, m_mp4 = labeller(up, row), labeller(decode_video(mp4, size, len(up)), row)
                    r = {"clip": row["clip_id"], "latents": source, "x_T": name, "frames": len(sel),
                         "face_found_decoded": round(float(m_dec.found.mean()), 3),
                         "face_found_after_h264": round(float(m_mp4.found.mean()), 3),
                         "mouth_r_decoded": round(pearson(m_dec.mouth, gt_mouth), 3)}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    df = pd.DataFrame(rows)
    print(df.groupby(["latents", "x_T"])[["face_found_decoded", "face_found_after_h264", "mouth_r_decoded"]]
          .mean().round(3).to_string())  # fmt: skip


if __name__ == "__main__":
    main()
