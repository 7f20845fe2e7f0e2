"""Acceptance figures of speech-driven generation (issue 5) on held-out clips of a processed speaker.

For each held-out clip with ground truth, renders its own audio with a trained
talker bundle and measures the frames with preprocessing's estimators (the
evaluation's ``FrameLabeller``):

* mouth: Pearson r between the measured mouth opening of the generated frames
  and the clip's ground-truth mouth opening (``--pose`` of this script: predicted, or predicted-motion);
* pose control: head-pose std with ``--pose constant:0,0,0`` over the std with
  the predicted pose; Pearson r on yaw between ``--pose reference:OTHER_CLIP``
  output and that reference's poses;
* flicker: mean absolute difference between consecutive frames with one shared
  x_T over the same with a fresh x_T per frame, on the frames read back at the
  crop size (as every other figure) and at the size the video was written;
* the mouth ceiling: the same Pearson r measured on the clip's real frames
  taken into the DAE's space and back (down to its size and up, or through
  the first-stage autoencoder of a latent DAE): what a perfect DAE would score;
* face found: the share of predicted-pose frames where the detector and Face
  Mesh find a face.

    python bench/generation_acceptance.py --bundle BUNDLE_DIR --data DATA [--clips 3] [--steps 10] [--pose predicted-motion] \
        [--guidance 2] [--no-steer-pose]

Prints per-clip rows and the means as JSON; exits 1 when a bar of the issue is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from daetalker.data import dataset as ds
from daetalker.evaluate.evaluate import FrameLabeller, decode_video
from daetalker.generate.model import load_talker
from daetalker.generate.video import VIDEO_SIZE, generate_video
from daetalker.models.images import to_model_range, to_uint8
from daetalker.train.frames_dataset import read_manifest

HELD_OUT = ("test", "val")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def flicker(frames: np.ndarray) -> float:
    """Mean absolute difference (0-255) between consecutive frames (N, R, R, 3)."""
    return float(np.abs(np.diff(frames.astype(np.float32), axis=0)).mean())


def render(bundle: Path, audio: Path, out: Path, size: int, **kw) -> np.ndarray:
    res = generate_video(bundle, audio, out, progress=False, **kw)
    return decode_video(out, size, res.n_frames)


@torch.no_grad()
def through_dae_space(frames: np.ndarray, dae, batch: int = 64) -> np.ndarray:
    """Real uint8 frames (N, R, R, 3) -> the DAE's space and back -> bicubic to R: a perfect DAE's output."""
    r = frames.shape[1]
    out = []
    for i in range(0, len(frames), batch):
        x = dae.to_pixels(dae.to_space(to_model_range(np.asarray(frames[i : i + batch]), dae.pixel_size)))
        out.append(to_uint8(F.interpolate(x, size=(r, r), mode="bicubic", align_corners=False)))
    return np.concatenate(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="a bundle folder written by `daetalker bundle`")
    ap.add_argument("--data", type=Path, required=True, help="the processed dataset the bundle was trained on")
    ap.add_argument("--clips", type=int, default=3, help="held-out clips to render")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the bundle's sample_steps)")
    ap.add_argument("--guidance", type=float, default=None, help="reference guidance (default: the bundle's)")
    ap.add_argument("--out", type=Path, default=None, help="keep the rendered videos here")
    ap.add_argument("--pose", default="predicted", choices=("predicted", "predicted-motion"),
                    help="the predicted pose: the regression alone, or with the sampled head motion")
    ap.add_argument("--no-steer-pose", dest="steer_pose", action="store_false",
                    help="leave the latents as speech2latent made them (default: the bundle's s2l.steer_pose)")
    args = ap.parse_args()

    man = read_manifest(args.data)
    held = man[man["split"].isin(HELD_OUT)].sort_values("clip_id")
    if "has_ground_truth" in held.columns:
        held = held[held["has_ground_truth"]]
    if len(held) < 2:
        print(f"{args.data}: need >= 2 held-out clips with ground truth (one is the pose reference)", file=sys.stderr)
        return 2
    talker = load_talker(args.bundle, torch.device("cpu"))
    size = talker.config.preprocess.resolution  # measured at the crop size, as evaluate does
    written = max(VIDEO_SIZE, talker.dae.pixel_size)
    labeller = FrameLabeller(talker.config.preprocess)
    out_root = args.out or Path(tempfile.mkdtemp(prefix="gen-acceptance-"))
    out_root.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, row in enumerate(held.head(args.clips).to_dict("records")):
        cid = row["clip_id"]
        ref = held.iloc[(k + 1) % len(held)].to_dict()  # another held-out clip drives the pose
        clip, ref_dir = ds.clip_dir(args.data, cid), ds.clip_dir(args.data, ref["clip_id"])
        audio = clip / "audio.wav"
        gt = pd.read_parquet(clip / "ground_truth.parquet").set_index("frame").sort_index()
        common = dict(steps=args.steps, guidance=args.guidance, seed=0, steer_pose=None if args.steer_pose else False)
        pred = render(args.bundle, audio, out_root / f"{cid}-predicted.mp4", size, pose=args.pose, **common)
        const = render(args.bundle, audio, out_root / f"{cid}-constant.mp4", size, pose="constant:0,0,0", **common)
        refd = render(args.bundle, audio, out_root / f"{cid}-reference.mp4", size,
                      pose=f"reference:{ref_dir}", **common)
        noisy = render(args.bundle, audio, out_root / f"{cid}-per-frame-noise.mp4", size,
                       pose=args.pose, per_frame_noise=True, **common)
        m_pred, m_const, m_ref = (labeller(f, row) for f in (pred, const, refd))
        m_ceil = labeller(through_dae_space(np.asarray(ds.open_frames(args.data, cid)), talker.dae), row)
        n = min(len(pred), len(gt))
        ref_yaw = pd.read_parquet(ref_dir / "labels.parquet")["yaw"].to_numpy(np.float64)
        ref_pose = np.concatenate([ref_yaw, ref_yaw[-2:0:-1]])  # the reference plays forward then back
        ref_pose = np.tile(ref_pose, -(-len(refd) // len(ref_pose)))[: len(refd)]
        std = lambda m: float(np.nanmean(np.nanstd(m.pose, axis=0)))  # noqa: E731
        rows.append({
            "clip": cid, "frames": n, "face_found": float(m_pred.found.mean()),
            "mouth_pearson": pearson(m_pred.mouth[:n], gt["mouth_open"].to_numpy(np.float64)[:n]),
            "mouth_pearson_ceiling": pearson(m_ceil.mouth[:n], gt["mouth_open"].to_numpy(np.float64)[:n]),
            "pose_std_predicted": std(m_pred), "pose_std_constant": std(m_const),
            "reference_yaw_pearson": pearson(m_ref.pose[:, 0], ref_pose),
            "flicker_shared": flicker(pred), "flicker_per_frame": flicker(noisy),
            "flicker_shared_written": flicker(decode_video(out_root / f"{cid}-predicted.mp4", written)),
            "flicker_per_frame_written": flicker(decode_video(out_root / f"{cid}-per-frame-noise.mp4", written)),
        })
        print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    summary = {
        "clips": len(df),
        "mouth_pearson": float(df["mouth_pearson"].mean()),
        "mouth_pearson_ceiling": float(df["mouth_pearson_ceiling"].mean()),
        "face_found": float(df["face_found"].mean()),
        "constant_over_predicted_pose_std": float(df["pose_std_constant"].mean() / df["pose_std_predicted"].mean()),
        "reference_yaw_pearson": float(df["reference_yaw_pearson"].mean()),
        "flicker_per_frame_over_shared": float(df["flicker_per_frame"].mean() / df["flicker_shared"].mean()),
        "flicker_per_frame_over_shared_as_written": float(df["flicker_per_frame_written"].mean()
                                                          / df["flicker_shared_written"].mean()),  # fmt: skip
        "videos": str(out_root),
    }
    summary["pass"] = bool(summary["face_found"] >= 0.95 and summary["mouth_pearson"] >= 0.6
                           and summary["constant_over_predicted_pose_std"] <= 0.25
                           and summary["reference_yaw_pearson"] >= 0.7
                           and summary["flicker_per_frame_over_shared"] >= 2.0)
    print(json.dumps(summary, indent=2))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
