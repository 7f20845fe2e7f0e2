"""The constant-pose bar under a pose estimator that can see it: one learned from the synthetic speaker's true poses.

PnP on Face Mesh reads the synthetic speaker's head with about a degree of
error that follows the mouth (docs/latent-dae.md, "What the constant-pose
figure measures"), the size of the whole wobble the constant-pose bar allows.
The demo corpus holds the pose every frame was drawn with
(``ground_truth.parquet``), so a small CNN fitted on its training clips'
frames -> true pose is an instrument whose error is measured on the held-out
clips, beside PnP's on the same frames, before it reads generated videos.
It knows one synthetic face: a measuring device for this corpus, not a
replacement for PnP on real speakers.

    python bench/generation_acceptance.py --bundle BUNDLE --data DATA --clips 3 --out VIDEOS
    python bench/pose_regressor.py --data DATA --videos VIDEOS [--steps 1500] [--seed 0]

Prints, as JSON: the held-out error of both estimators (per axis: MAE, the
std of what a linear fit to the true pose leaves, and that residual's Pearson r
with the true mouth opening), then per clip the pose std of the
``CLIP-predicted.mp4`` and ``CLIP-constant.mp4`` renders and the ratio of the
means (issue 16's bar: <= 0.25).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from daetalker.data import dataset as ds
from daetalker.evaluate.evaluate import HELD_OUT_SPLITS, decode_video
from daetalker.evaluate.pose_metrics import AXES
from daetalker.train.frames_dataset import read_manifest


class PoseNet(nn.Module):
    """uint8-range frames (B, 3, 128, 128) in [-1, 1] -> (B, 3) pose in the training frames' unit scale.

    Strided convolutions down to 4x4, then a linear layer over the flattened map (not a pooled one):
    where the eyes and the nose sit in the crop is what the pose is."""

    def __init__(self, size: int = 128, channels: tuple[int, ...] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU()]  # fmt: skip
            c_in = c
        self.features = nn.Sequential(*layers)
        side = size // 2 ** len(channels)
        self.head = nn.Linear(c_in * side * side, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def to_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, R, R, 3) -> float (N, 3, R, R) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise and a brightness shift of random size per image: generated frames are softer than real ones."""
    b = x.shape[0]
    sigma = torch.rand(b, generator=gen) * 1.2  # px
    k = torch.arange(-3, 4, dtype=torch.float32)
    kern = torch.exp(-(k[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # (B, 7)
    c = x.shape[1]
    xs = x.reshape(1, b * c, *x.shape[2:])
    kh = kern.repeat_interleave(c, 0)[:, None, None, :]  # (B*C, 1, 1, 7)
    xs = F.conv2d(F.pad(xs, (3, 3, 0, 0), mode="replicate"), kh, groups=b * c)
    xs = F.conv2d(F.pad(xs, (0, 0, 3, 3), mode="replicate"), kh.transpose(2, 3), groups=b * c)
    x = xs.reshape_as(x)
    x = x + 0.03 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return (x + 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)).clamp(-1, 1)


def load_split(data: Path, splits: tuple[str, ...]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(clip ids, frames (N, R, R, 3), true pose (N, 3), PnP's pose (N, 3), true mouth opening (N,))."""
    manifest = read_manifest(data)
    cids = sorted(manifest[manifest["split"].isin(splits)]["clip_id"])
    frames, truth, pnp, mouth = [], [], [], []
    for cid in cids:
        d = ds.clip_dir(data, cid)
        f = np.asarray(ds.open_frames(data, cid))
        gt = pd.read_parquet(d / "ground_truth.parquet")
        lab = pd.read_parquet(d / "labels.parquet")
        n = min(len(f), len(gt), len(lab))
        frames.append(f[:n])
        truth.append(gt[list(AXES)].to_numpy(np.float64)[:n])
        pnp.append(lab[list(AXES)].to_numpy(np.float64)[:n])
        mouth.append(gt["mouth_open"].to_numpy(np.float64)[:n])
    return cids, np.concatenate(frames), np.concatenate(truth), np.concatenate(pnp), np.concatenate(mouth)


def train(frames: np.ndarray, pose: np.ndarray, steps: int, batch: int, seed: int) -> tuple[PoseNet, np.ndarray, np.ndarray]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mean, std = pose.mean(0), pose.std(0)
    target = torch.from_numpy((pose - mean) / std).float()
    net = PoseNet(frames.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    net.train()
    for step in range(steps):
        idx = torch.randint(len(frames), (batch,), generator=gen)
        x = degrade(to_input(frames[idx.numpy()]), gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        loss = F.smooth_l1_loss(out.float(), target[idx], beta=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            print(json.dumps({"step": step, "loss": round(loss.item(), 5)}), flush=True)
    return net.eval(), mean, std


@torch.no_grad()
def predict(net: PoseNet, frames: np.ndarray, mean: np.ndarray, std: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 (N, R, R, 3) -> (N, 3) degrees."""
    out = []
    for i in range(0, len(frames), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out.append(net(to_input(frames[i : i + batch])).float().numpy())
    return np.concatenate(out) * std + mean


def error_figures(est: np.ndarray, truth: np.ndarray, mouth: np.ndarray) -> dict[str, dict[str, float]]:
    """Per axis: MAE, the std a linear fit to the true pose leaves (what a pose std reads of a still head),
    and that residual's Pearson r with the mouth opening."""
    out = {}
    for j, a in enumerate(AXES):
        x = np.c_[truth[:, j], np.ones(len(truth))]
        resid = est[:, j] - x @ np.linalg.lstsq(x, est[:, j], rcond=None)[0]
        out[a] = {"mae": float(np.abs(est[:, j] - truth[:, j]).mean()), "residual_std": float(resid.std()),
                  "residual_r_mouth": float(np.corrcoef(resid, mouth)[0, 1])}  # fmt: skip
    out["mean_residual_std"] = float(np.mean([out[a]["residual_std"] for a in AXES]))  # type: ignore[assignment]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the demo corpus, preprocessed (with ground_truth.parquet)")
    ap.add_argument("--videos", type=Path, required=True, help="bench/generation_acceptance.py --out folder")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    _, frames, truth, _, _ = load_split(args.data, ("train",))
    t0 = time.perf_counter()
    net, mean, std = train(frames, truth, args.steps, args.batch, args.seed)
    train_s = time.perf_counter() - t0
    held_ids, h_frames, h_truth, h_pnp, h_mouth = load_split(args.data, HELD_OUT_SPLITS)
    learned = error_figures(predict(net, h_frames, mean, std), h_truth, h_mouth)
    pnp = error_figures(h_pnp, h_truth, h_mouth)

    def std_of(video: Path) -> float:  # mean over the axes of the learned pose's std, at the crop size
        return float(predict(net, decode_video(video, h_frames.shape[1]), mean, std).std(0).mean())

    rows = []
    for cid in held_ids:
        pred_mp4, const_mp4 = args.videos / f"{cid}-predicted.mp4", args.videos / f"{cid}-constant.mp4"
        if not (pred_mp4.is_file() and const_mp4.is_file()):
            continue
        rows.append({"clip": cid, "pose_std_predicted": std_of(pred_mp4), "pose_std_constant": std_of(const_mp4)})
    for r in rows:
        print(json.dumps(r))
    df = pd.DataFrame(rows)
    print(json.dumps({
        "seed": args.seed, "train_frames": len(frames), "train_s": round(train_s, 1),
        "heldout_frames": len(h_frames), "learned_error": learned, "pnp_error": pnp,
        "constant_over_predicted_pose_std": float(df["pose_std_constant"].mean() / df["pose_std_predicted"].mean())
        if len(df) else None,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
