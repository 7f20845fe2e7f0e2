"""Train the light SyncNet lip-sync expert from scratch on one speaker's preprocessed data.

The recipe is Wav2Lip's expert discriminator (Prajwal et al. 2020, section 3.2):
pairs of a 5-frame lip window and a 0.2 s audio window, half in sync and half
off sync, scored by the cosine of the two ReLU'd, L2-normalised embeddings and
trained with binary cross-entropy on that cosine. Off-sync audio is taken from
the same clip shifted by ``neg_min_offset..vshift`` frames, or (a share
``neg_other_clip``) from another clip. Audio is the LSE protocol's MFCC, so the
expert scores LSE through exactly the code that scores generated videos.

Reads ``DATA/manifest.parquet`` and ``DATA/clips/<id>/{frames.npy, audio.wav}``
(16 kHz mono, 640 samples per frame). The lip stream sees the lower half of the
fixed face crop (no landmarks needed, so generated videos are scored the same way).
Writes ``OUT/step_<n>.pt`` + ``OUT/latest.pt`` (atomic, sha256 sidecar) and
``OUT/syncnet_report.json``: held-out pair accuracy and LSE per split, with the
sha256 of the weights.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from daetalker.config.base import to_dict
from daetalker.config.syncnet import SyncNetConfig
from daetalker.errors import DaetalkerError, InputMediaError
from daetalker.evaluate.lse import lse_from_embeddings
from daetalker.evaluate.mfcc import SAMPLE_RATE, SAMPLES_PER_FRAME, protocol_mfcc
from daetalker.evaluate.syncnet import LIP_FRAMES, LightSyncNet, light_checkpoint, lip_windows, mfcc_windows
from daetalker.checkpoint import save_checkpoint, verify
from daetalker.models.device import autocast
from daetalker.train.loop import NullLogger, StepLoop, TrainLogger, default_logger

HELD_OUT = ("val", "test")
REPORT = "syncnet_report.json"


@dataclass
class SyncClip:
    clip_id: str
    lips: torch.Tensor  # (N, 3, h, w) float16, the model's prepared view of every frame
    mfcc: torch.Tensor  # (13, T) float32 protocol MFCC
    n_windows: int  # protocol windows: min(N, samples // 640) - 5


def read_clip_audio(path: Path) -> np.ndarray:
    import soundfile as sf

    if not path.is_file():
        raise InputMediaError(path, "missing audio", "the manifest lists this clip but audio.wav is absent",
                              "re-run `daetalker preprocess`")
    audio, sr = sf.read(str(path), dtype="int16", always_2d=False)
    if sr != SAMPLE_RATE or audio.ndim != 1:
        raise InputMediaError(path, "wrong audio format", f"{sr} Hz, shape {audio.shape}",
                              "preprocess writes 16 kHz mono; re-run `daetalker preprocess`")
    return audio


def load_split(data_dir: Path, splits: tuple[str, ...], model: LightSyncNet) -> list[SyncClip]:
    """Clips of ``splits`` with their prepared lip frames and MFCC held in memory."""
    from daetalker.train.frames_dataset import frames_path, read_manifest

    df = read_manifest(data_dir)
    clips = []
    for cid in df[df["split"].isin(list(splits))]["clip_id"]:
        frames = np.load(frames_path(data_dir, str(cid)), mmap_mode="r")
        audio = read_clip_audio(Path(data_dir) / "clips" / str(cid) / "audio.wav")
        n_windows = min(len(frames), len(audio) // SAMPLES_PER_FRAME) - LIP_FRAMES
        if n_windows < 1:
            continue  # shorter than 6 frames: nothing to learn from
        lips = torch.cat([model.prepare_frames(frames[s:s + 256]).half() for s in range(0, len(frames), 256)])
        clips.append(SyncClip(str(cid), lips, torch.from_numpy(protocol_mfcc(audio)).float(), n_windows))
    return clips


def _negative(rng: np.random.Generator, clips: list[SyncClip], c: int, i: int, cfg: SyncNetConfig) -> tuple[int, int]:
    """(clip, audio window) out of sync with lip window i of clip c."""
    n = clips[c].n_windows
    shifts = [s for s in range(-cfg.vshift, cfg.vshift + 1) if abs(s) >= cfg.neg_min_offset and 0 <= i + s < n]
    if len(clips) > 1 and (not shifts or rng.random() < cfg.neg_other_clip):
        other = int(rng.choice([k for k in range(len(clips)) if k != c]))
        return other, int(rng.integers(clips[other].n_windows))
    if not shifts:
        raise DaetalkerError(f"clip {clips[c].clip_id}: too short for an off-sync window; add clips or lower vshift")
    return c, i + int(rng.choice(shifts))


def set_input_statistics(model: LightSyncNet, clips: list[SyncClip]) -> None:
    """Standardise both views by the training clips: MFCC per coefficient, lips as below."""
    mfcc = torch.cat([c.mfcc for c in clips], dim=1)  # (13, steps)
    model.mfcc_mean.copy_(mfcc.mean(dim=1))
    model.mfcc_std.copy_(mfcc.std(dim=1).clamp_min(1e-3))
    set_lip_statistics(model, clips)


def set_lip_statistics(model: LightSyncNet, clips: list[SyncClip]) -> None:
    """The lip view's mean face (per pixel) and spread around it (per channel) over the training frames."""
    n = sum(len(c.lips) for c in clips)
    mean = sum(c.lips.float().sum(dim=0) for c in clips) / n  # (3, h, w)
    var = sum(((c.lips.float() - mean) ** 2).sum(dim=(0, 2, 3)) for c in clips) / (n * mean[0].numel())  # (3,)
    model.lip_mean.copy_(mean)
    model.lip_std.copy_(var.sqrt().clamp_min(1e-3))


def make_pairs(rng: np.random.Generator, clips: list[SyncClip], starts: list[tuple[int, int]],
               labels: np.ndarray, cfg: SyncNetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clip, window) starts and 0/1 labels -> lip (B, 3, 5, h, w), MFCC (B, 1, 13, 20), labels (B,)."""
    lips, auds = [], []
    for (c, i), y in zip(starts, labels):
        ca, a = (c, i) if y else _negative(rng, clips, c, i, cfg)
        lips.append(lip_windows(clips[c].lips, i, 1)[0])
        auds.append(mfcc_windows(clips[ca].mfcc, a, 1)[0])
    return torch.stack(lips).float(), torch.stack(auds), torch.as_tensor(labels, dtype=torch.float32)


def sync_probability(model: LightSyncNet, lip: torch.Tensor, aud: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Cosine of the two embeddings, in [0, 1] since both are ReLU'd: Wav2Lip's P(in sync). ``bf16``: the
    two streams under autocast; the cosine in fp32 (bf16 would round 1 - 1e-6 to 1 and the BCE to inf)."""
    with autocast(torch.device("cpu"), bf16):
        lip_e, aud_e = model.forward_lip(lip), model.forward_aud(aud)  # (B, E) each
    return (lip_e.float() * aud_e.float()).sum(dim=1).clamp(1e-6, 1 - 1e-6)


def heldout_pairs(clips: list[SyncClip], cfg: SyncNetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed set: eval_pairs_per_clip evenly spaced windows per clip, each in sync and off sync."""
    rng = np.random.default_rng(cfg.seed + 1)
    starts = [(c, int(i)) for c, clip in enumerate(clips)
              for i in np.unique(np.linspace(0, clip.n_windows - 1, cfg.eval_pairs_per_clip).round().astype(int))]
    starts = starts + starts
    labels = np.array([1] * (len(starts) // 2) + [0] * (len(starts) // 2))
    return make_pairs(rng, clips, starts, labels, cfg)


@torch.no_grad()
def evaluate_expert(model: LightSyncNet, clips: list[SyncClip], cfg: SyncNetConfig) -> dict[str, float]:
    """Held-out pair accuracy, and LSE of each clip against its own audio (offset within +-1 counts as right)."""
    model.eval()
    lip, aud, y = heldout_pairs(clips, cfg)
    p = torch.cat([sync_probability(model, lip[s:s + 256], aud[s:s + 256]) for s in range(0, len(y), 256)])
    lse = []
    for clip in clips:
        lip_e = torch.cat([model.forward_lip(lip_windows(clip.lips, s, min(256, clip.n_windows - s)).float())
                           for s in range(0, clip.n_windows, 256)])
        aud_e = model.forward_aud(mfcc_windows(clip.mfcc, 0, clip.n_windows))
        lse.append(lse_from_embeddings(lip_e, aud_e, cfg.vshift))
    return {
        "accuracy": float(((p > 0.5).float() == y).float().mean()),
        "p_sync_in_sync": float(p[y == 1].mean()),
        "p_sync_off_sync": float(p[y == 0].mean()),
        "lse_d": float(np.mean([r.lse_d for r in lse])),
        "lse_c": float(np.mean([r.lse_c for r in lse])),
        "offset_within_1": float(np.mean([abs(r.offset) <= 1 for r in lse])),
        "clips": float(len(clips)),
    }


@dataclass
class SyncNetTrainResult:
    checkpoint: Path
    sha256: str
    steps: int
    heldout: dict[str, dict[str, float]]  # split -> metrics of evaluate_expert
    report: Path


def train_syncnet(data_dir: Path, out_dir: Path, cfg: SyncNetConfig, logger: TrainLogger | None = None,
                  progress: bool | None = None) -> SyncNetTrainResult:
    """Train from scratch for ``cfg.max_steps`` steps, evaluate on val/test, write checkpoint and report."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    logger = logger or (default_logger() if cfg.mlflow else NullLogger())
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = LightSyncNet.from_config(cfg)
    train = load_split(data_dir, ("train",), model)
    heldout = {s: c for s in HELD_OUT if (c := load_split(data_dir, (s,), model))}
    if not train or not heldout:
        raise DaetalkerError(f"{data_dir / 'manifest.parquet'}: need clips of >= 6 frames in the train split and in "
                             "val or test (preprocess with val_fraction/test_fraction > 0)")
    set_input_statistics(model, train)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    weights = np.array([c.n_windows for c in train], dtype=np.float64)

    def update(step: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        model.train()
        cs = rng.choice(len(train), size=cfg.batch_size, p=weights / weights.sum())
        starts = [(int(c), int(rng.integers(train[c].n_windows))) for c in cs]
        lip, aud, y = make_pairs(rng, train, starts, (rng.random(cfg.batch_size) < 0.5).astype(int), cfg)
        p = sync_probability(model, lip, aud, bf16=cfg.bf16)
        loss = F.binary_cross_entropy(p, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"syncnet/loss": loss.detach(), "syncnet/train_acc": ((p > 0.5) == y).float().mean()}, {}

    def validate(done: int, final: bool) -> dict[str, float]:
        split = next(iter(heldout))  # the first held-out split, while training; all of them at the end
        metrics = {f"syncnet/{split}_{k}": v for k, v in evaluate_expert(model, heldout[split], cfg).items()}
        logger.log_metrics(done, metrics)
        return metrics

    t0 = time.perf_counter()
    loop = StepLoop("train-syncnet", 0, cfg.max_steps, cfg.log_every, cfg.batch_size, "pairs_per_s",
                    torch.device("cpu"), logger=logger, progress=sys.stderr.isatty() if progress is None else progress)
    loop.run(update, [(lambda done, final: bool(cfg.eval_every) and done % cfg.eval_every == 0 and not final,
                       validate)])

    results = {s: evaluate_expert(model, c, cfg) for s, c in heldout.items()}
    for s, m in results.items():
        logger.log_metrics(cfg.max_steps, {f"syncnet/{s}_{k}": v for k, v in m.items()})
    extra = {"config": json.dumps(to_dict(cfg)), "heldout": json.dumps(results)}
    path = save_checkpoint(light_checkpoint(model.eval(), extra), out_dir, cfg.max_steps, keep=1)
    sha = verify(out_dir / "latest.pt")["sha256"]
    report = {"checkpoint": str(out_dir / "latest.pt"), "numbered": path.name, "sha256": sha,
              "steps": cfg.max_steps, "seconds": round(time.perf_counter() - t0, 2),
              "train_clips": len(train), "train_windows": int(weights.sum()), "heldout": results,
              "config": to_dict(cfg), "data": str(data_dir)}
    return SyncNetTrainResult(out_dir / "latest.pt", sha, cfg.max_steps, results, _write_report(out_dir, report))


def _write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    """JSON beside the checkpoint, renamed into place so a reader never sees half of it."""
    tmp = out_dir / f".{REPORT}.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    return tmp.replace(out_dir / REPORT)


def result_dict(result: SyncNetTrainResult) -> dict[str, Any]:
    d = asdict(result)
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}
