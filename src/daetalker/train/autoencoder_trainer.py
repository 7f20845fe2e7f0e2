"""Train the first-stage autoencoder of a latent-space DAE (issue 16): a plain loop, top to bottom.

One step: frames x (B, 3, P, P) and their mouth boxes -> x_hat = FirstStage(x) ->
loss = L1(x_hat, x) + grad_weight * L1 of their horizontal and vertical pixel
differences, each a per-pixel weighted mean (1, plus ``mouth_weight`` inside the
mouth box, as the DAE weights its loss) -> Adam (warm-up, cosine decay) with
grad-norm clipping. The gradient term keeps edges (eyelids, lip lines) that a
plain L1 blurs.

Before every checkpoint and at the end the per-channel latent shift and scale
are set from ``stats_frames`` evenly spaced training frames, so every saved
checkpoint is one ``load_first_stage`` can hand to the DAE. Checkpoints carry
what a bit-exact resume needs: weights, optimiser, RNG state, step (the data
position is the step, see ``ResumableShardedSampler``). One process; the
network is small.

Output folder: ``checkpoints/`` (step_*.pt, latest.pt, sidecars), ``config.yaml``,
``metrics.jsonl``, ``samples/step_*.png`` (one row per held-out frame: frame |
reconstruction | absolute error x4), ``result.json``. The held-out report
(PSNR, SSIM, mouth r) is ``daetalker.evaluate.first_stage``'s.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from daetalker import checkpoint as ckpt_io
from daetalker.config import Config
from daetalker.config.autoencoder import AutoencoderConfig
from daetalker.diffusion import box_weights
from daetalker.errors import CheckpointError, ConfigError
from daetalker.models import count_parameters
from daetalker.models.device import autocast, pick_device
from daetalker.models.first_stage import FirstStage
from daetalker.models.loading import autoencoder_config
from daetalker.models.images import to_uint8
from daetalker.train.run_files import MetricsFile, TrainResult, check_resumable, finish_run, write_png
from daetalker.train.frames_dataset import FramesDataset, evenly_spaced, held_out_frames
from daetalker.train.loop import Every, StepLoop, TrainLogger, default_logger, rng_state, scheduled_lr, set_rng_state
from daetalker.train.reconstruction import psnr
from daetalker.train.sampler import ResumableShardedSampler

log = logging.getLogger(__name__)

STEP = "train-autoencoder"
# Fields that fix the network's shape: a checkpoint only resumes into the same ones.
ARCH_FIELDS = ("image_size", "channels", "res_blocks", "latent_channels")
ENCODE_BATCH = 64  # frames per encoder call for the latent statistics and reconstructions


# ------------------------------------------------------------------ the loss
def _weighted_mean(err: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch of each sample's mean of err (B, C, H, W), weighted per pixel by weights (B, 1, H, W)."""
    if weights is None:
        return err.mean()
    w = weights.expand_as(err).flatten(1)
    return ((w * err.flatten(1)).sum(1) / w.sum(1)).mean()


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, weights: torch.Tensor | None,
                        grad_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(loss, L1, gradient L1) of reconstructions vs frames (B, 3, P, P); ``weights`` (B, 1, P, P) or None.

    The gradient term compares horizontal and vertical neighbour differences; a difference
    takes the weight of its right / lower pixel.
    """
    recon, x = recon.float(), x.float()
    l1 = _weighted_mean((recon - x).abs(), weights)
    dx = (recon.diff(dim=-1) - x.diff(dim=-1)).abs()  # (B, 3, P, P-1)
    dy = (recon.diff(dim=-2) - x.diff(dim=-2)).abs()  # (B, 3, P-1, P)
    wx, wy = (None, None) if weights is None else (weights[..., :, 1:], weights[..., 1:, :])
    grad_l1 = _weighted_mean(dx, wx) + _weighted_mean(dy, wy)
    return l1 + grad_weight * grad_l1, l1, grad_l1


# ------------------------------------------------------------------ state, checkpoints, resume
@dataclass
class _State:
    """Everything that a step changes and a checkpoint must restore."""

    model: FirstStage
    opt: torch.optim.Optimizer
    step: int = 0


def _build(acfg: AutoencoderConfig, dev: torch.device) -> _State:
    torch.manual_seed(acfg.seed)
    model = FirstStage.from_config(acfg).to(dev)  # channels_last, as FirstStage always runs
    opt = torch.optim.Adam(model.parameters(), lr=acfg.lr, fused=dev.type == "cuda")
    return _State(model, opt)


def _checkpoint(st: _State, cfg: Config, dev: torch.device) -> dict[str, Any]:
    """What ``load_first_stage`` reads (``autoencoder_config``, ``model`` with shift/scale) and what resume needs."""
    full = cfg.to_dict()
    return {
        "step": st.step,
        "model": st.model.state_dict(),
        "optimizer": st.opt.state_dict(),
        "rng": rng_state(dev),
        "data_position": {"global_samples": st.step * cfg.autoencoder.batch_size, "seed": cfg.autoencoder.seed},
        "autoencoder_config": full["autoencoder"],
        "config": full,
    }


def _restore(st: _State, ckpt_dir: Path, resume: bool, acfg: AutoencoderConfig, dev: torch.device) -> None:
    """Load the newest intact checkpoint (torn ones are skipped) when resuming; refuse to overwrite one otherwise."""
    if not resume:
        if ckpt_io.checkpoint_candidates(ckpt_dir):
            raise CheckpointError(f"{ckpt_dir}: holds checkpoints; pass --resume or choose a new --out")
        return
    found = ckpt_io.load_latest(ckpt_dir)  # to CPU: RNG states must stay CPU tensors
    if found is None:
        log.info("no intact checkpoint in %s: starting from step 0", ckpt_dir)
        return
    path, state = found
    check_resumable(autoencoder_config(state["autoencoder_config"]), acfg, ARCH_FIELDS, path)
    st.model.load_state_dict(state["model"])
    st.opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], dev)
    st.step = int(state["step"])
    log.info("resumed from %s at step %d", path, st.step)


# ------------------------------------------------------------------ data
def _batches(data_dir: Path, acfg: AutoencoderConfig, dev: torch.device,
             start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
    """An endless stream of (frames (B, 3, P, P), mouth boxes (B, 4) or None), positioned at ``start_step``."""
    mouth = acfg.mouth_weight > 0
    dataset = FramesDataset(data_dir, splits=("train",), image_size=acfg.image_size, mouth_boxes=mouth)
    sampler = ResumableShardedSampler(len(dataset), seed=acfg.seed, start=start_step * acfg.batch_size)
    loader = DataLoader(dataset, batch_size=acfg.batch_size, sampler=sampler, num_workers=acfg.num_workers,
                        pin_memory=dev.type == "cuda", drop_last=True, persistent_workers=acfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(acfg.seed))  # fmt: skip
    # a generator expression: the dataset is opened now, so a bad one fails before anything is written
    return ((b[0], b[1]) if mouth else (b, None) for b in loader)


@torch.no_grad()
def reconstruct(model: FirstStage, frames: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Reconstructions (N, 3, P, P) in [-1, 1] on the CPU of frames (N, 3, P, P), in batches."""
    dev = next(model.parameters()).device
    out = []
    for chunk in frames.split(ENCODE_BATCH):
        with autocast(dev, bf16):
            out.append(model(chunk.to(dev)).float().clamp(-1, 1).cpu())
    return torch.cat(out)


@torch.no_grad()
def set_latent_statistics(model: FirstStage, data_dir: Path, acfg: AutoencoderConfig) -> dict[str, float]:
    """Shift and scale of the latents of ``stats_frames`` evenly spaced training frames (fp32), set on the
    model; returned as metrics ``latent_shift_<c>`` / ``latent_scale_<c>``."""
    dev = next(model.parameters()).device
    ds = FramesDataset(data_dir, splits=("train",), image_size=acfg.image_size)
    idx = evenly_spaced(len(ds), acfg.stats_frames)
    raw = [model.encode_raw(ds.stack(chunk).to(dev)).float()
           for chunk in np.array_split(idx, max(1, -(-len(idx) // ENCODE_BATCH)))]  # fmt: skip
    model.set_latent_statistics(torch.cat(raw))
    return {**{f"latent_shift_{c}": float(v) for c, v in enumerate(model.shift)},
            **{f"latent_scale_{c}": float(v) for c, v in enumerate(model.scale)}}


def sample_grid(frames: torch.Tensor, recon: torch.Tensor) -> np.ndarray:
    """uint8 (N*P, 3*P, 3): one row per frame, columns frame | reconstruction | absolute error x4."""
    real, fake = to_uint8(frames), to_uint8(recon)  # (N, P, P, 3)
    err = np.clip(np.abs(real.astype(np.int16) - fake.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
    rows = np.concatenate([real, fake, err], axis=2)  # (N, P, 3P, 3)
    return rows.reshape(-1, *rows.shape[2:])


# ------------------------------------------------------------------ the loop
def train_autoencoder(
    data_dir: Path,
    out_dir: Path,
    cfg: Config,
    resume: bool = False,
    *,
    logger: TrainLogger | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train (or, with ``resume``, continue) the first stage on ``data_dir``'s training frames (``cfg.autoencoder``).

    ``logger`` defaults to the active MLflow run if there is one, else nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("train-autoencoder runs in one process (the network is small): launch it without torchrun")
    run = _Run(Path(data_dir), Path(out_dir), cfg, pick_device(0, device), logger or default_logger())
    if run.dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels

    st = _build(cfg.autoencoder, run.dev)
    _restore(st, run.ckpt_dir, resume, cfg.autoencoder, run.dev)
    batches = _batches(run.data_dir, cfg.autoencoder, run.dev, st.step)
    run.held_out = held_out_frames(run.data_dir, cfg.autoencoder.sample_count, cfg.autoencoder.image_size)[0]

    run.out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run.out_dir / "config.yaml")
    run.metrics_file = MetricsFile(run.out_dir / "metrics.jsonl", st.step)
    run.logger.log_metrics(st.step, {"params_total": count_parameters(st.model)})

    t_begin = time.perf_counter()
    last = _loop(st, batches, run)
    return finish_run(run.out_dir, run.ckpt_dir, max(st.step, cfg.autoencoder.max_steps), last, t_begin, True)


@dataclass
class _Run:
    """Where a run reads and reports: data, folder, device, logger, metrics.jsonl and the sample frames."""

    data_dir: Path
    out_dir: Path
    cfg: Config
    dev: torch.device
    logger: TrainLogger
    metrics_file: MetricsFile | None = None
    held_out: torch.Tensor | None = None  # (N, 3, P, P) frames of the sample grids

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def log(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        self.logger.log_metrics(step, metrics)
        self.metrics_file.write(step, metrics)
        return metrics


def _step(st: _State, x: torch.Tensor, boxes: torch.Tensor | None, acfg: AutoencoderConfig,
          dev: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:  # fmt: skip
    """One optimisation step on frames x (B, 3, P, P) with their mouth boxes (B, 4) or None:
    (detached losses, scalars) for :class:`StepLoop`."""
    x = x.to(dev, non_blocking=True)
    weights = box_weights(boxes.to(dev), acfg.image_size, acfg.mouth_weight) if boxes is not None else None
    lr = scheduled_lr(st.step, acfg.lr, acfg.warmup_steps, acfg.lr_decay_steps or acfg.max_steps)
    for group in st.opt.param_groups:
        group["lr"] = lr
    with autocast(dev, acfg.bf16):
        recon = st.model(x)
    loss, l1, grad_l1 = reconstruction_loss(recon, x, weights, acfg.grad_weight)
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(st.model.parameters(), acfg.grad_clip)
    st.opt.step()
    st.step += 1
    return {"loss": loss.detach(), "l1": l1.detach(), "grad_l1": grad_l1.detach()}, {"lr": lr, "grad_norm": grad_norm}


def _loop(st: _State, batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]], run: _Run) -> dict[str, float]:
    """Step to ``max_steps`` (:class:`StepLoop`): latent statistics before each checkpoint, sample grids and
    checkpoints on their schedules; the last metrics."""
    acfg = run.cfg.autoencoder

    def statistics(done: int, final: bool) -> dict[str, float]:  # before a checkpoint: every one is usable
        return run.log(done, set_latent_statistics(st.model, run.data_dir, acfg))

    def samples(done: int, final: bool) -> dict[str, float]:
        recon = reconstruct(st.model, run.held_out, acfg.bf16)
        grid = sample_grid(run.held_out, recon)
        write_png(run.out_dir / "samples" / f"step_{done:08d}.png", grid)
        run.logger.log_image(done, "reconstructions", grid)
        return run.log(done, {"psnr_samples": float(psnr(recon, run.held_out).mean())})

    def save(done: int, final: bool) -> None:
        ckpt_io.save_checkpoint(_checkpoint(st, run.cfg, run.dev), run.ckpt_dir, done, keep=acfg.keep_checkpoints)

    saving = Every(acfg.ckpt_every)
    loop = StepLoop(STEP, st.step, acfg.max_steps, acfg.log_every, acfg.batch_size, "images_per_s", run.dev,
                    logger=run.logger, write=run.metrics_file.write)  # fmt: skip
    st.model.train()
    return loop.run(lambda step: _step(st, *next(batches), acfg, run.dev),
                    [(saving, statistics), (Every(acfg.sample_every), samples), (saving, save)])
