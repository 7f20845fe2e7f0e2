"""Train speech2latent (method.md section 4): a plain loop, top to bottom, like ``dae_trainer``.

One step: a batch of random ``s2l.window_seconds`` windows (speech features:
log-mel from the dataset, or ``s2l.features``' encoder output cached under
``OUT/features/`` by ``feature_cache``; normalised DAE latents, ground-truth
pose; short clips padded and masked) -> Speech2Latent
with the ground-truth pose fed to the projector -> masked latent MSE +
``pose_loss_weight`` x pose loss -> Adam with warm-up and grad-norm clipping.
Feature and pose statistics of the training split are stored in the model's
buffers before step 0. Checkpoints carry weights, optimiser, RNG state and the
step (the data position: windows are a pure function of the sample number, see
``s2l_dataset``), so ``resume`` continues bit-exactly. Before the final
checkpoint, the head motion the pose predictor leaves out is fitted on the
training and validation clips (:mod:`daetalker.models.pose_residual`), and the
pose probe and steering matrix, and the mouth probe and direction of the mouth
gain, on the training clips' real latents (:mod:`daetalker.models.pose_steering`).

Output folder: ``checkpoints/`` (step_*.pt, latest.pt), ``config.yaml``,
``metrics.jsonl``, ``result.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from daetalker import checkpoint as ckpt_io
from daetalker.config import Config
from daetalker.config.s2l import S2LConfig
from daetalker.errors import CheckpointError, DaetalkerError
from daetalker.features import make_extractor
from daetalker.models import count_parameters
from daetalker.models.device import autocast
from daetalker.models.loading import build_s2l
from daetalker.models.pose_residual import ResidualMoments
from daetalker.models.pose_steering import PoseLatentMoments, probe_r2
from daetalker.models.speech2latent import POSE_DIM, Speech2Latent, s2l_loss
from daetalker.timebase import FPS
from daetalker.train.run_files import MetricsFile, TrainResult, finish_run
from daetalker.train.distributed import (
    DistInfo, all_mean, barrier, broadcast_object, init_distributed, teardown, wrap_ddp,
)
from daetalker.train.loop import (Every, NullLogger, StepLoop, TrainLogger, default_logger, rng_state, set_rng_state,
                                  warmup_lr)
from daetalker.train.feature_cache import cache_features
from daetalker.train.s2l_dataset import S2LWindows, WindowSampler, feature_and_pose_stats

log = logging.getLogger(__name__)

ARCH_FIELDS = (
    "features", "d_model", "heads", "ffn_dim", "conv_kernel", "blocks_before", "blocks_after", "frontend_kernel",
    "pose_predictor_dim", "pose_predictor_kernel", "pose_predictor_layers",
)


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


@torch.no_grad()
def fit_pose_residual(model: Speech2Latent, windows: list[S2LWindows], dev: torch.device) -> dict[str, float]:
    """Fit and store the AR(1) of the pose residual (true - predicted) over every frame of ``windows``."""
    was_training = model.training
    model.eval()
    moments = ResidualMoments(POSE_DIM)
    for clips in windows:
        for item in clips.tiles():
            n = int(item["length"])
            mask = (torch.arange(clips.w) < n)[None].to(dev)  # (1, W)
            pred = model(item["features"][None].to(dev), mask=mask).pose[0, :n].float()  # (n, 3) degrees
            true = item["pose"][:n].to(dev)  # (n, 3) degrees, NaN without a face
            residual = model.pose_to_unit(true) - model.pose_to_unit(pred)
            moments.add(residual.cpu(), torch.isfinite(true).all(-1).cpu())
    model.train(was_training)
    std, rho = moments.fit()
    model.set_pose_residual(std, rho)
    std_deg = std * model.pose_std.float().cpu()
    return {f"pose_residual_{kind}_{axis}": float(v[i]) for kind, v in (("std_deg", std_deg), ("rho", rho))
            for i, axis in enumerate(("yaw", "pitch", "roll"))}


def _pose_latent_moments(model: Speech2Latent, clips: S2LWindows) -> PoseLatentMoments:
    moments = PoseLatentMoments(model.latent_dim, POSE_DIM)
    for item in clips.tiles():
        n = int(item["length"])
        pose = item["pose"][:n]  # (n, 3) degrees, NaN without a face
        valid = torch.isfinite(pose).all(-1)
        moments.add(item["latent"][:n][valid], model.pose_to_unit(pose[valid].to(model.pose_std)).cpu())
    return moments


def _mouth_latent_moments(model: Speech2Latent, clips: S2LWindows, mean: float, std: float) -> PoseLatentMoments:
    moments = PoseLatentMoments(model.latent_dim, 1)
    for item in clips.tiles():
        n = int(item["length"])
        mouth = item["mouth"][:n]  # (n,) NaN without a face
        valid = torch.isfinite(mouth)
        moments.add(item["latent"][:n][valid], ((mouth[valid].double() - mean) / std)[:, None])
    return moments


def _mouth_stats(clips: S2LWindows) -> tuple[float, float]:
    """Mean and std of the training frames' mouth opening (nan, nan without labels), read from the clips'
    labels directly: building every window (features included) only to read the mouth would waste a pass."""
    values = np.concatenate([c.mouth[: c.n] for c in clips.clips if c.mouth is not None] or [np.zeros(0)])
    values = values[np.isfinite(values)].astype(np.float64)
    return (float(values.mean()), float(values.std(ddof=1))) if len(values) > 1 else (float("nan"), float("nan"))


@torch.no_grad()
def fit_pose_steering(model: Speech2Latent, train: S2LWindows, val: S2LWindows | None) -> dict[str, float]:
    """Fit and store the pose probe and steering matrix, and the mouth probe and direction, on the
    training clips' real latents and labels; report the probes' R^2 there and on the validation clips
    (how well z says the pose and the mouth)."""
    moments = _pose_latent_moments(model, train)
    w, b, g = moments.fit()
    model.set_pose_steering(w, b, g)
    out = {}
    for split, m in (("train", moments), ("val", None if val is None else _pose_latent_moments(model, val))):
        if m is not None and m.n:
            out |= {f"pose_probe_r2_{split}_{axis}": float(r)
                    for axis, r, on in zip(("yaw", "pitch", "roll"), probe_r2(m, w, b), moments.active()) if on}
    mean, std = _mouth_stats(train)
    if not std > 0:  # no mouth labels, or a mouth that never moves: no gain to apply
        return out
    mouth = _mouth_latent_moments(model, train, mean, std)
    w, b, g = mouth.fit()  # (1, D), (1,), (D, 1); all zeros with too few frames
    model.set_mouth_steering(w[0], b[0], g[:, 0])
    for split, m in (("train", mouth), ("val", None if val is None else _mouth_latent_moments(model, val, mean, std))):
        if m is not None and m.n and model.mouth_steering_fitted:
            out[f"mouth_probe_r2_{split}"] = float(probe_r2(m, w, b)[0])
    return out


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
    logger = (logger or default_logger()) if info.is_main else NullLogger()
    train, val, dims = _windows(data_dir, latents_dir, out_dir, cfg, info)  # data first: the model's sizes come from it

    # --- model and optimiser (same init on every rank: same seed) ---
    torch.manual_seed(scfg.seed)
    model = build_s2l(scfg, dims).to(dev)
    model.set_stats(**feature_and_pose_stats(train.clips))
    opt = torch.optim.Adam(model.parameters(), lr=scfg.lr, weight_decay=scfg.weight_decay)
    start = _restore(model, opt, ckpt_dir, resume, scfg, dims, info)
    ddp = wrap_ddp(model, info)
    forward = torch.compile(ddp) if scfg.compile else ddp
    batches = _batches(train, scfg, info, start)

    metrics_file = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        metrics_file = MetricsFile(out_dir / "metrics.jsonl", start)
        logger.log_metrics(start, {"params_total": count_parameters(model)})

    t_begin = time.perf_counter()
    last = _loop(model, forward, opt, batches, (train, val), start=start, cfg=cfg, dims=dims, info=info,
                 logger=logger, metrics_file=metrics_file, ckpt_dir=ckpt_dir)  # fmt: skip
    return finish_run(out_dir, ckpt_dir, max(start, scfg.max_steps), last, t_begin, info.is_main)


def _windows(data_dir: Path, latents_dir: Path, out_dir: Path, cfg: Config,
             info: DistInfo) -> tuple[S2LWindows, S2LWindows | None, dict[str, int]]:
    """Training windows (this rank's), validation windows (None without a val split) and the model's ``dims``."""
    scfg = cfg.s2l
    extractor = make_extractor(scfg, cfg.preprocess)
    k = extractor.frames_per_video_frame  # feature rows per video frame
    features_dir = None
    if scfg.features != "log_mel":  # mel.npy is in the dataset; other features are computed once per run folder
        features_dir = out_dir / "features" / extractor.name
        if info.is_main:
            cache_features(data_dir, ("train", "val"), extractor, features_dir)
        barrier(info)
    window = max(1, round(scfg.window_seconds * FPS))
    train = S2LWindows(data_dir, latents_dir, splits=("train",), window_frames=window, k=k, seed=scfg.seed,
                       rank=info.rank, features_dir=features_dir)
    try:
        val = S2LWindows(data_dir, latents_dir, splits=("val",), window_frames=window, k=k, features_dir=features_dir)
    except DaetalkerError:
        val = None  # no validation split (tiny datasets)
    return train, val, {"feature_dim": train.feature_dim, "frames_per_video_frame": k, "latent_dim": train.latent_dim}


def _restore(model: Speech2Latent, opt: torch.optim.Optimizer, ckpt_dir: Path, resume: bool, scfg: S2LConfig,
             dims: dict[str, int], info: DistInfo) -> int:
    """Rank 0 picks the newest intact checkpoint; every rank loads it. The step to start from."""
    chosen = None
    if info.is_main:
        if resume:
            found = ckpt_io.load_latest(ckpt_dir)
            chosen = str(found[0]) if found else None
        elif ckpt_io.checkpoint_candidates(ckpt_dir):
            raise CheckpointError(f"{ckpt_dir}: holds checkpoints; pass --resume or choose a new --out")
    chosen = broadcast_object(chosen, info)
    if chosen is None:
        return 0
    state = ckpt_io.load_checkpoint(Path(chosen))
    _check_resumable(state, scfg, dims, Path(chosen))
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], info.device)
    log.info("resumed from %s at step %d", chosen, int(state["step"]))
    return int(state["step"])


def _batches(train: S2LWindows, scfg: S2LConfig, info: DistInfo, start: int) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's endless stream of window batches, positioned at step ``start``."""
    per_rank = scfg.batch_size // info.world_size
    sampler = WindowSampler(len(train), rank=info.rank, world_size=info.world_size, seed=scfg.seed,
                            start=start * per_rank)
    loader = DataLoader(train, batch_size=per_rank, sampler=sampler, num_workers=scfg.num_workers,
                        pin_memory=info.device.type == "cuda", drop_last=True,
                        persistent_workers=scfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(scfg.seed))  # keep the global RNG untouched
    return iter(loader)


def _update(model: Speech2Latent, forward: Any, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
            scfg: S2LConfig, step: int, dev: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
    """One optimisation step (update ``step``, 0-based); returns (losses, grad norm, lr)."""
    lr = warmup_lr(step, scfg.lr, scfg.warmup_steps)
    for group in opt.param_groups:
        group["lr"] = lr
    losses = _loss(forward, batch, scfg, model, dev)
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), scfg.grad_clip)
    opt.step()
    return losses, grad_norm, lr


def _loop(model: Speech2Latent, forward: Any, opt: torch.optim.Optimizer, batches: Iterator[dict[str, torch.Tensor]],
          data: tuple[S2LWindows, S2LWindows | None], *, start: int, cfg: Config, dims: dict[str, int],
          info: DistInfo, logger: TrainLogger, metrics_file: MetricsFile | None, ckpt_dir: Path) -> dict[str, float]:
    """Steps ``start`` .. ``s2l.max_steps`` (:class:`StepLoop`): validate and checkpoint on their schedules;
    the pose residual is fitted (on ``data``: train, val) just before the final checkpoint."""
    scfg, dev = cfg.s2l, info.device
    train, val = data

    def update(step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        losses, grad_norm, lr = _update(model, forward, opt, _collate_to(next(batches), dev), scfg, step, dev)
        return {k: losses[k].detach() for k in ("loss", "latent_mse", "pose")}, {"lr": lr, "grad_norm": grad_norm}

    def validation(done: int, final: bool) -> dict[str, float] | None:
        if not info.is_main or val is None:
            return None
        metrics = validate(model, val, scfg, dev)
        logger.log_metrics(done, metrics)
        metrics_file.write(done, metrics)
        return metrics

    def save(done: int, final: bool) -> dict[str, float] | None:
        fitted = None
        if info.is_main and final:
            fitted = fit_pose_residual(model, [w for w in (train, val) if w is not None], dev)
            fitted |= fit_pose_steering(model, train, val)
            logger.log_metrics(done, fitted)
            metrics_file.write(done, fitted)
        if info.is_main:
            ckpt_io.save_checkpoint(_checkpoint(done, model, opt, cfg, dims, info), ckpt_dir, done,
                                    keep=scfg.keep_checkpoints)
        barrier(info)
        return fitted

    loop = StepLoop("train-s2l", start, scfg.max_steps, scfg.log_every, scfg.batch_size, "windows_per_s", dev,
                    info.is_main, logger, metrics_file.write if info.is_main else None, lambda t: all_mean(t, info))
    model.train()
    return loop.run(update, [(Every(scfg.val_every), validation), (Every(scfg.ckpt_every), save)])


def _checkpoint(done: int, model: Speech2Latent, opt: torch.optim.Optimizer, cfg: Config, dims: dict[str, int],
                info: DistInfo) -> dict[str, Any]:
    return {
        "step": done,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rng_state(info.device),
        "data_position": {"global_samples": done * cfg.s2l.batch_size, "seed": cfg.s2l.seed},
        "s2l_config": cfg.to_dict()["s2l"],
        "dims": dims,
        "config": cfg.to_dict(),
        "world_size": info.world_size,
    }


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
