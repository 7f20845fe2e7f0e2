"""Encode every frame of a dataset with the EMA semantic encoder (the input of speech2latent).

Output layout::

    OUT/latents/<clip_id>.npy   float32 (n_frames, latent_dim), row i = frame i of the clip
    OUT/latent_stats.npz        mean, std: (latent_dim,) over the training split (normalisation);
                                reference_frame: uint8 (R, R, 3), the training frame whose latent is
                                nearest the mean, with reference_clip and reference_index
    OUT/latents.json            checkpoint path + sha256, latent_dim, clips with splits and frame counts

``daetalker.models.latent_stats`` reads ``latent_stats.npz`` back (speech2latent's dataset, the bundle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from daetalker import checkpoint as ckpt_io
from daetalker.errors import DaetalkerError
from daetalker.models.device import autocast, pick_device
from daetalker.models.images import to_model_range
from daetalker.models.loading import load_dae
from daetalker.train.frames_dataset import frames_path, read_manifest

STD_FLOOR = 1e-6  # a dimension the encoder never varies must not blow up on normalisation


@torch.no_grad()
def encode_frames(
    model, frames: np.ndarray, *, batch_size: int = 64, bf16: bool = False
) -> np.ndarray:
    """uint8 (N, R, R, 3) frames -> float32 (N, latent_dim) latents with ``model``'s encoder."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(frames), batch_size):
        x = to_model_range(np.array(frames[i : i + batch_size]), model.pixel_size).to(device)
        with autocast(device, bf16):
            x0 = model.to_space(x)  # (B, C, R, R): the frames or the first stage's grid
            out.append(model.encode(x0).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.latent_dim), np.float32)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def extract_latents(
    data_dir: Path, ckpt: Path, out_dir: Path, *, batch_size: int = 64, device: str | None = None
) -> Path:
    """Write one latent array per clip, the training-split statistics and an index; return ``out_dir``."""
    data_dir, ckpt, out_dir = Path(data_dir), Path(ckpt), Path(out_dir)
    meta = ckpt_io.verify(ckpt)
    dev = pick_device(0, device)
    model, cfg = load_dae(ckpt, dev)
    manifest = read_manifest(data_dir)
    (out_dir / "latents").mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    clips, train_latents, train_ids = [], [], []
    for row in tqdm(list(manifest.itertuples(index=False)), desc="extract-latents", mininterval=2.0):
        cid = str(row.clip_id)
        frames = np.load(frames_path(data_dir, cid), mmap_mode="r")
        if len(frames) != int(row.n_frames):
            raise DaetalkerError(
                f"{frames_path(data_dir, cid)}: {len(frames)} frames but the manifest says {row.n_frames}; "
                "re-run `daetalker preprocess`"
            )
        z = encode_frames(model, frames, batch_size=batch_size, bf16=cfg.bf16)
        assert z.shape == (len(frames), cfg.latent_dim), z.shape
        _save_npy(out_dir / "latents" / f"{cid}.npy", z.astype(np.float32))
        clips.append({"clip_id": cid, "split": str(row.split), "n_frames": int(len(frames))})
        if row.split == "train":
            train_latents.append(z)
            train_ids.append(cid)

    stats_split = "train"
    if not train_latents:  # no training split (e.g. a held-out-only dataset): use every clip
        stats_split = "all"
        train_latents = [np.load(out_dir / "latents" / f"{c['clip_id']}.npy") for c in clips]
        train_ids = [c["clip_id"] for c in clips]
    allz = np.concatenate(train_latents).astype(np.float64)
    mean = allz.mean(0).astype(np.float32)
    std = np.maximum(allz.std(0), STD_FLOOR).astype(np.float32)
    ref_clip, ref_index = reference_frame_index(train_latents, train_ids, mean, std)
    ref_frame = np.array(np.load(frames_path(data_dir, ref_clip), mmap_mode="r")[ref_index])
    tmp = out_dir / ".latent_stats.tmp.npz"
    np.savez(tmp, mean=mean, std=std, count=np.int64(len(allz)), reference_frame=ref_frame,
             reference_clip=np.array(ref_clip), reference_index=np.int64(ref_index))
    os.replace(tmp, out_dir / "latent_stats.npz")

    index = {
        "checkpoint": str(ckpt.resolve()),
        "checkpoint_sha256": meta["sha256"],
        "checkpoint_step": meta["step"],
        "latent_dim": cfg.latent_dim,
        "image_size": cfg.image_size,
        "space": cfg.space,
        "stats_split": stats_split,
        "reference_frame": {"clip_id": ref_clip, "index": ref_index},
        "clips": clips,
    }
    (out_dir / "latents.json").write_text(json.dumps(index, indent=2))
    return out_dir


def reference_frame_index(
    latents: list[np.ndarray], clip_ids: list[str], mean: np.ndarray, std: np.ndarray
) -> tuple[str, int]:
    """(clip_id, frame) of the most typical frame: its normalised latent is nearest the mean.

    Generation starts every frame of a video from this frame's stochastic subcode (DDIM-inverted
    x_T), which carries the fine detail z leaves out (eyes, hair) that a random x_T misses on an
    under-trained decoder; a typical frame keeps that detail neutral.
    """
    best = (np.inf, "", 0)
    for cid, z in zip(clip_ids, latents):
        d = (((z - mean) / std) ** 2).sum(1)  # (n,)
        i = int(d.argmin())
        best = min(best, (float(d[i]), cid, i))
    return best[1], best[2]
