"""Does a generated face survive H.264? Face Mesh's hit rate by written video size and crf.

Decodes every ``--every``-th frame of ``--clips`` held-out clips from the
clip's own latents (EMA encoder) with the bundle's reference x_T, as
``generate`` does, then writes them the way ``generate`` does (bicubic resize to
SIZE, H.264 4:2:0 at CRF, AAC) for each SIZE x CRF, reads the mp4 back at the
dataset's crop size (as ``evaluate`` does) and prints, per setting, the share
of frames where preprocessing's detector and Face Mesh find a face, the PSNR of
the round trip and the bytes per frame. The clip's real frames through the
same round trip are the baseline.

    python bench/video_size.py --bundle BUNDLE --data DATA [--clips 2] [--every 6] [--steps 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from daetalker.data import dataset as ds
from daetalker.diffusion import linear_schedule
from daetalker.evaluate.evaluate import FrameLabeller, decode_video
from daetalker.generate.model import load_talker
from daetalker.generate.video import _Mp4Writer, decode_latents, reference_noise
from daetalker.models.images import to_model_range, to_uint8
from daetalker.train.frames_dataset import read_manifest

SIZES = (64, 128, 256)
CRFS = (10, 18, 23)


def round_trip(frames: torch.Tensor, size: int, crf: int, audio: Path, crop: int, work: Path) -> tuple[np.ndarray, int]:
    """frames (N, 3, R, R) in [-1, 1] -> mp4 at size x size, crf -> uint8 (N, crop, crop, 3), mp4 bytes."""
    up = to_uint8(F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False,
                                antialias=size < frames.shape[-1]))  # fmt: skip
    path = work / f"v{size}_{crf}.mp4"
    writer = _Mp4Writer(path, size, audio, len(up), crf=crf)
    writer.write(up)
    writer.close()
    return decode_video(path, crop, len(up)), path.stat().st_size


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--every", type=int, default=6, help="decode every N-th frame")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    t = load_talker(args.bundle, torch.device("cpu"))
    d = t.dae_cfg
    if t.reference_frame is None:
        raise SystemExit(f"{args.bundle}: no reference frame (re-run extract-latents and bundle)")
    sched = linear_schedule(d.timesteps, d.beta_start, d.beta_end)
    x_T = reference_noise(t.dae, t.reference_frame, steps=args.steps, schedule=sched)
    labeller = FrameLabeller(t.config.preprocess)
    man = read_manifest(args.data)
    held = man[man["split"].isin(("test", "val"))].sort_values("clip_id").head(args.clips)
    found: dict[tuple, list] = {}
    with tempfile.TemporaryDirectory() as work:
        for row in held.to_dict("records"):
            clip = ds.clip_dir(args.data, row["clip_id"])
            frames = np.load(clip / "frames.npy", mmap_mode="r")
            real = np.array(frames[np.arange(0, len(frames), args.every)])
            crop = real.shape[1]
            with torch.no_grad():
                z = t.dae.encode_frames(to_model_range(real, t.dae.pixel_size))
            gen = torch.cat(list(decode_latents(t.dae, z, x_T, steps=args.steps, schedule=sched, batch_size=64,
                                                clip_x0=False)))  # fmt: skip
            sources = {"generated": gen, "real": to_model_range(real, crop)}
            for (name, x), size, crf in itertools.product(sources.items(), SIZES, CRFS):
                before = to_uint8(F.interpolate(x, size=(crop, crop), mode="bicubic", align_corners=False))
                after, nbytes = round_trip(x, size, crf, clip / "audio.wav", crop, Path(work))
                r = {"clip": row["clip_id"], "frames": name, "size": size, "crf": crf,
                     "found_before": round(float(labeller(before, row).found.mean()), 3),
                     "found_after": round(float(labeller(after, row).found.mean()), 3),
                     "psnr_round_trip": round(psnr(before, after), 2), "bytes_per_frame": nbytes // len(after)}
                found.setdefault((name, size, crf), []).append(r["found_after"])
                print(json.dumps(r), flush=True)
    print("\nface found after H.264 (mean over clips):")
    for (name, size, crf), v in found.items():
        print(f"  {name:9s} {size:4d} px crf {crf:2d}: {np.mean(v):.3f}")


if __name__ == "__main__":
    main()
