"""Seconds of compute per minute of video for each evaluation metric (issue 6).

Scores a synthetic clip of ``--seconds`` of 25 fps video (random face crops at
``--resolution``, 16 kHz audio) and prints, per metric, the measured seconds and
the extrapolation to one minute of video (all costs are linear in length):

* protocol MFCC; LSE-D/LSE-C (one video against its audio) with the light SyncNet
  at the ``--profile``'s size and with the official SyncNet architecture
  (random weights: the cost does not depend on them);
* Inception-v3 features for FID (the generated side; the real side's statistics
  are computed once per speaker);
* pose std / MAE / Beat Align, M-LMD, PSNR / SSIM.

    python bench/evaluate.py [--seconds 10] [--resolution 64] [--profile tiny] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from daetalker.config.base import from_dict
from daetalker.config.syncnet import SyncNetConfig
from daetalker.evaluate.fid import InceptionFeatures
from daetalker.evaluate.image_metrics import psnr, ssim
from daetalker.evaluate.landmark_metrics import mouth_lmd
from daetalker.evaluate.lse import lse
from daetalker.evaluate.mfcc import protocol_mfcc
from daetalker.evaluate.pose_metrics import beat_align_score, pose_mae, pose_std
from daetalker.evaluate.syncnet import LightSyncNet, OfficialSyncNet


def timed(fn: Callable[[], object], device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def syncnet_config(profile: str) -> SyncNetConfig:
    from daetalker.config import profile_dict

    return from_dict(SyncNetConfig, profile_dict(profile).get("syncnet", {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the scored clip")
    ap.add_argument("--resolution", type=int, default=64, help="side of the square face crops")
    ap.add_argument("--profile", default="tiny", help="profile whose syncnet section sizes the light SyncNet")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--skip-official", action="store_true", help="skip the official SyncNet (slow on CPUs)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    n = int(round(args.seconds * 25))
    frames = rng.integers(0, 256, (n, args.resolution, args.resolution, 3), dtype=np.uint8)
    other = rng.integers(0, 256, frames.shape, dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(640 * n)).astype(np.float32)
    pose, pose_gt = rng.normal(0, 5, (n, 3)), rng.normal(0, 5, (n, 3))
    lm, lm_gt = rng.normal(100, 20, (n, 468, 3)), rng.normal(100, 20, (n, 468, 3))

    scfg = syncnet_config(args.profile)
    light = LightSyncNet.from_config(scfg).to(device).eval()
    light_name = f"LSE, light SyncNet {scfg.lip_height}x{scfg.lip_width} ({args.profile})"
    rows: list[tuple[str, float]] = [("protocol MFCC", timed(lambda: protocol_mfcc(audio), device))]
    lse(frames[:32], audio[: 640 * 32], light)  # warm-up (allocations, cuDNN choice)
    rows.append((light_name, timed(lambda: lse(frames, audio, light), device)))
    if not args.skip_official:
        official = OfficialSyncNet().to(device).eval()
        rows.append(("LSE, official SyncNet", timed(lambda: lse(frames, audio, official, batch=32), device)))

    inception = InceptionFeatures(device=device, batch_size=32)
    inception(frames[:8])  # warm-up
    rows.append(("FID features (generated side)", timed(lambda: inception(frames), device)))
    rows.append(("pose std + MAE + Beat Align", timed(
        lambda: (pose_std(pose), pose_mae(pose, pose_gt), beat_align_score(audio, pose)), device)))
    rows.append(("M-LMD", timed(lambda: mouth_lmd(lm, lm_gt), device)))
    rows.append(("PSNR + SSIM", timed(lambda: (psnr(frames, other), ssim(frames, other)), device)))

    print(f"# {args.seconds:g} s of video ({n} frames) at {args.resolution}px on {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'metric':40s} {'seconds':>9s} {'s per min of video':>19s}")
    for name, sec in rows:
        print(f"{name:40s} {sec:9.2f} {sec * 60.0 / args.seconds:19.1f}")
    total = sum(sec for _, sec in rows)
    print(f"{'total':40s} {total:9.2f} {total * 60.0 / args.seconds:19.1f}")


if __name__ == "__main__":
    main()
