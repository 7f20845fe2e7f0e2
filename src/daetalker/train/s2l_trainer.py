"""Train speech2latent (method.md section 4): a plain loop, top to bottom, like ``dae_trainer``.

One step: a batch of random ``s2l.window_seconds`` windows (log-mel, normalised
DAE latents, ground-truth pose; short clips padded and masked) -> Speech2Latent
with the ground-truth pose fed to the projector -> masked latent MSE +
``pose_loss_weight`` x pose loss -> Adam with warm-up and grad-norm clipping.
Feature and pose statistics of the training split are stored in the model's
buffers before step 0. Checkpoints carry weights, optimiser, RNG state and the
step (the data position: windows are a pure function of the sample number, see
``s2l_dataset``), so ``resume`` continues bit-exactly.

Output folder: ``checkpoints/`` (step_*.pt, latest.pt), ``config.yaml``,
``metrics.jsonl``, ``result.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from daetalker.config import Config
from daetalker.config.base import from_dict
from daetalker.config.s2l import S2LConfig
from daetalker.errors import CheckpointError, ConfigError, DaetalkerError
from daetalker.features import LogMelExtractor
from daetalker.models import count_parameters
from daetalker.models.speech2latent import Speech2Latent, s2l_loss
from daetalker.train import checkpoint as ckpt_io
from daetalker.train.dae_trainer import TrainResult, _MetricsFile
from daetalker.train.distributed import DistInfo, all_mean, barrier, broadcast_object, init_distributed, teardown
from daetalker.train.loop import NullLogger, Throughput, TrainLogger, autocast, default_logger, rng_state, set_rng_state, warmup_lr
from daetalker.train.s2l_dataset import S2LWindows, WindowSampler, feature_and_pose_stats

log = logging.getLogger(__name__)

ARCH_FIELDS = (
    "d_model", "heads", "ffn_dim", "conv_kernel", "blocks_before", "blocks_after", "frontend_kernel",
    "pose_predictor_dim", "pose_predictor_kernel", "pose_predictor_layers",
)
FPS = 25


def build_s2l(cfg: S2LConfig, dims: dict[str, int]) -> Speech2Latent:
    """``dims``: feature_dim, frames_per_video_frame, latent_dim (stored in every checkpoint)."""
    return Speech2Latent.from_config(cfg, **dims)


def load_s2l(path: Path, device: str | torch.device = "cpu") -> tuple[Speech2Latent, S2LConfig, dict[str, Any]]:
    """A verified s2l checkpoint in eval mode, its config and its ``dims``."""
    state = ckpt_io.load_checkpoint(Path(path))
    if "s2l_config" not in state:
        raise CheckpointError(f"{path}: not a speech2latent checkpoint (no s2l_config); pass one from `train-s2l`")
    cfg = from_dict(S2LConfig, state["s2l_config"])
    model = build_s2l(cfg, state["dims"])
    model.load_state_dict(state["model"])
    return model.to(device).eval().requires_grad_(False), cfg, dict(state["dims"])


def _collate_to(batch: dict[str, torch.Tensor], dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: S2LConfig, raw: Speech2Latent,
          dev: torch.device) -> dict[str, torch.Tensor]:
    t = batch["latent"].shape[1]
    mask = torch.arange(t, device=dev)[None] < batch["length"][:, None]  # (B, T)
    with autocast(dev, cfg.bf16):
        out = model(batch["features"], mask=mask, pose=batch["pose"])
    return s2l_loss(out.latent.float(), batch["latent"], out.pose.float(), batch["pose"], mask,
                    pose_std=raw.pose_std, pose_loss=cfg.pose_loss, pose_weight=cfg.pose_loss_weight)


@torch.no_grad()
def validate(model: Speech2Latent, val: S2LWindows, cfg: S2LConfig, dev: torch.device) -> dict[str, float]:
    """Frame-weighted mean losses over every frame of the validation clips (eval mode, ground-truth pose)."""
    was_training = model.training
    model.eval()
    sums = {"val_loss": 0.0, "val_latent_mse": 0.0, "val_pose": 0.0}
    frames = 0
    for item in val.tiles():
        batch = _collate_to({k: v[None] for k, v in item.items()}, dev)
        losses = _loss(model, batch, cfg, model, dev)
        n = int(item["length"])
        for key in sums:
            sums[key] += float(losses[key.removeprefix("val_")]) * n
        frames += n
    model.train(was_training)
    return {k: v / max(frames, 1) for k, v in sums.items()}


def train_s2l(
    data_dir: Path,
    latents_dir: Path,
    out_dir: Path,
    cfg: Config,
    resume: bool = False,
    *,
    logger: TrainLogger | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train (or, with ``resume``, continue) speech2latent on the training split's windows."""
    if cfg.s2l.features != "log_mel":
        raise ConfigError(
            f"s2l.features={cfg.s2l.features!r}: training reads the dataset's mel.npy, so only log_mel "
            "is supported here (fix: --set s2l.features=log_mel)"
        )
    info = init_distributed(device)
    try:
        return _train(Path(data_dir), Path(latents_dir), Path(out_dir), cfg, resume, info, logger)
    finally:
        teardown(info)


def _train(data_dir: Path, latents_dir: Path, out_dir: Path, cfg: Config, resume: bool, info: DistInfo,
           logger: TrainLogger | None) -> TrainResult:
    scfg, dev, ckpt_dir = cfg.s2l, info.device, out_dir / "checkpoints"
    if scfg.batch_size % info.world_size:
        raise CheckpointError(f"s2l.batch_size {scfg.batch_size} must divide by the {info.world_size} ranks")
    per_rank = scfg.batch_size // info.world_size
    logger = (logger or default_logger()) if info.is_main else NullLogger()
    k = LogMelExtractor.from_config(cfg.preprocess).frames_per_video_frame  # mel rows per video frame
    window = max(1, round(scfg.window_seconds * FPS))

    # --- data first: the model's sizes come from it ---
    train = S2LWindows(data_dir, latents_dir, splits=("train",), window_frames=window, k=k, seed=scfg.seed,
                       rank=info.rank)
    try:
        val = S2LWindows(data_dir, latents_dir, splits=("val",), window_frames=window, k=k)
    except DaetalkerError:
        val = None  # no validation split (tiny datasets)
    dims = {"feature_dim": train.feature_dim, "frames_per_video_frame": k, "latent_dim": train.latent_dim}

    # --- model and optimiser (same init on every rank: same seed) ---
    torch.manual_seed(scfg.seed)
    model = build_s2l(scfg, dims).to(dev)
    model.set_stats(**feature_and_pose_stats(train.clips))
    opt = torch.optim.Adam(model.parameters(), lr=scfg.lr, weight_decay=scfg.weight_decay)

    start, chosen = 0, None
    if info.is_main:
        if resume:
            found = ckpt_io.load_latest(ckpt_dir)
            chosen = str(found[0]) if found else None
        elif ckpt_io.checkpoint_candidates(ckpt_dir):
            raise CheckpointError(f"{ckpt_dir}: holds checkpoints; pass --resume or choose a new --out")
    chosen = broadcast_object(chosen, info)
    if chosen is not None:
        state = ckpt_io.load_checkpoint(Path(chosen))
        _check_resumable(state, scfg, dims, Path(chosen))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], dev)
        start = int(state["step"])
        log.info("resumed from %s at step %d", chosen, start)

    ddp = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    forward = torch.compile(ddp) if scfg.compile else ddp

    sampler = WindowSampler(len(train), rank=info.rank, world_size=info.world_size, seed=scfg.seed,
                            start=start * per_rank)
    loader = DataLoader(train, batch_size=per_rank, sampler=sampler, num_workers=scfg.num_workers,
                        pin_memory=dev.type == "cuda", drop_last=True, persistent_workers=scfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(scfg.seed))  # keep the global RNG untouched
    batches = iter(loader)

    metrics_file = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        metrics_file = _MetricsFile(out_dir / "metrics.jsonl", start)
        logger.log_metrics(start, {"params_total": count_parameters(model)})

    from tqdm.auto import tqdm

    bar = tqdm(total=scfg.max_steps, initial=start, disable=not info.is_main, desc="train-s2l", mininterval=2.0,
               dynamic_ncols=True)
    meter = Throughput(dev)
    sums = {"loss": torch.zeros((), device=dev), "latent_mse": torch.zeros((), device=dev),
            "pose": torch.zeros((), device=dev)}  # fmt: skip
    n_window, last, t_begin = 0, {}, time.perf_counter()
    model.train()

    for step in range(start, scfg.max_steps):
        batch = _collate_to(next(batches), dev)
        lr = warmup_lr(step, scfg.lr, scfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        losses = _loss(forward, batch, scfg, model, dev)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), scfg.grad_clip)
        opt.step()

        done = step + 1
        for key in sums:
            sums[key] += losses[key].detach()
        n_window += 1
        meter.add(scfg.batch_size)
        bar.update(1)

        if done % scfg.log_every == 0 or done == scfg.max_steps:
            last = {key: float(all_mean(v / n_window, info)) for key, v in sums.items()}
            last.update(lr=lr, grad_norm=float(grad_norm), windows_per_s=meter.rate())
            for v in sums.values():
                v.zero_()
            n_window = 0
            if info.is_main:
                logger.log_metrics(done, last)
                metrics_file.write(done, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")

        if info.is_main and val is not None and (done % scfg.val_every == 0 or done == scfg.max_steps):
            val_metrics = validate(model, val, scfg, dev)
            last.update(val_metrics)
            logger.log_metrics(done, val_metrics)
            metrics_file.write(done, val_metrics)

        if done % scfg.ckpt_every == 0 or done == scfg.max_steps:
            if info.is_main:
                state = {
                    "step": done,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": rng_state(dev),
                    "data_position": {"global_samples": done * scfg.batch_size, "seed": scfg.seed},
                    "s2l_config": cfg.to_dict()["s2l"],
                    "dims": dims,
                    "config": cfg.to_dict(),
                    "world_size": info.world_size,
                }
                ckpt_io.save_checkpoint(state, ckpt_dir, done, keep=scfg.keep_checkpoints)
            barrier(info)
    bar.close()

    final_step = max(start, scfg.max_steps)
    last["train_seconds"] = time.perf_counter() - t_begin
    result = TrainResult(checkpoint=ckpt_dir / ckpt_io.LATEST, final_step=final_step, metrics=last)
    if info.is_main:
        (out_dir / "result.json").write_text(
            json.dumps({"checkpoint": str(result.checkpoint), "final_step": final_step, "metrics": last}, indent=2)
        )
    return result


def _check_resumable(state: dict[str, Any], cfg: S2LConfig, dims: dict[str, int], path: Path) -> None:
    saved = state["s2l_config"]
    diff = [key for key in ARCH_FIELDS if saved[key] != getattr(cfg, key)]
    diff += [key for key in dims if state["dims"][key] != dims[key]]
    if diff:
        raise CheckpointError(
            f"{path}: model shape differs from the config/data in {diff}; resume with the config it was "
            "trained with or start a new --out folder"
        )
    if saved["batch_size"] != cfg.batch_size or saved["window_seconds"] != cfg.window_seconds:
        raise CheckpointError(f"{path}: batch_size/window_seconds changed; that breaks the data position")
