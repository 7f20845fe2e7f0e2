"""Train the diffusion autoencoder (method.md section 2): a plain loop, top to bottom.

One step: frames x0 (pixels, or the first stage's latent grid when ``dae.space`` is
latent: see ``encoded_frames``) -> uniform t and Gaussian noise -> x_t = q_sample(x0) ->
eps = UNet(x_t, t, Encoder(x0)) -> MSE(eps, noise) -> Adam with grad-norm
clipping -> EMA of every weight. The t and noise of the whole global batch are
drawn from one seeded generator on every rank and sliced per rank, so a
torchrun run sees the same batches as one process. Checkpoints carry
everything a bit-exact resume needs (weights, EMA, optimiser, RNG states; the
data position is the step, see ``ResumableShardedSampler``).

Output folder: ``checkpoints/`` (step_*.pt, latest.pt), ``config.yaml``,
``metrics.jsonl`` (one line per log step), ``samples/step_*.png`` (input |
random-noise decode | inverted decode), ``result.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from daetalker import checkpoint as ckpt_io
from daetalker.config import Config
from daetalker.config.base import to_dict
from daetalker.config.dae import DAEConfig
from daetalker.diffusion import (
    NoiseSchedule, box_weights, eps_loss, linear_schedule, min_snr_weights, q_sample, v_target,
)
from daetalker.errors import CheckpointError, ConfigError
from daetalker.models import DiffusionAutoencoder, count_parameters
from daetalker.models.device import autocast
from daetalker.models.first_stage import FirstStage
from daetalker.models.loading import dae_config_from_checkpoint, load_first_stage
from daetalker.train.distributed import (
    DistInfo, all_mean, barrier, broadcast_object, init_distributed, teardown, wrap_ddp,
)
from daetalker.train.ema import EMA
from daetalker.train.encoded_frames import EncodedFrames
from daetalker.train.frames_dataset import FramesDataset, evenly_spaced, held_out_frames
from daetalker.train.loop import (
    Every,
    NullLogger,
    StepLoop,
    TrainLogger,
    default_logger,
    rng_state,
    set_rng_state,
    scheduled_lr,
)
from daetalker.train.reconstruction import psnr, recon_grid, reconstruct
from daetalker.train.run_files import MetricsFile, TrainResult, check_resumable, finish_run, write_png
from daetalker.train.sampler import ResumableShardedSampler

log = logging.getLogger(__name__)

# Fields that fix the network's shape: a checkpoint only resumes into the same ones.
ARCH_FIELDS = (
    "image_size", "base_channels", "channel_mult", "enc_channel_mult", "num_res_blocks",
    "enc_num_res_blocks", "attn_resolutions", "attn_heads", "embed_dim", "latent_dim", "latent_norm", "prediction",
    "space",
)


@dataclass
class _State:
    """Everything that a step changes and a checkpoint must restore."""

    model: DiffusionAutoencoder
    ema: EMA
    opt: torch.optim.Optimizer
    noise_gen: torch.Generator  # t and noise of every step
    first_stage: dict[str, Any] | None = None  # latent space: the autoencoder's config, sha256 and path
    step: int = 0


@dataclass
class FirstStageInput:
    """The trained autoencoder a latent-space DAE diffuses the grid of, as ``load_first_stage`` reads it."""

    model: FirstStage
    record: dict[str, Any]  # autoencoder_config, sha256, path: kept in every DAE checkpoint

    @classmethod
    def load(cls, path: Path | None, dcfg: DAEConfig, dev: torch.device) -> "FirstStageInput | None":
        if dcfg.space == "pixel":
            if path is not None:
                raise ConfigError(f"--autoencoder {path}: dae.space is 'pixel', which uses no autoencoder "
                                  "(fix: drop --autoencoder, or use a latent profile such as tiny)")
            return None
        if path is None:
            raise ConfigError("dae.space is 'latent': pass the first-stage autoencoder (fix: "
                              "`daetalker train-autoencoder`, then train-dae --autoencoder OUT/checkpoints/latest.pt)")
        model, ae_cfg, sha = load_first_stage(Path(path), dev)
        if ae_cfg.image_size != dcfg.image_size:
            raise ConfigError(f"--autoencoder {path}: encodes {ae_cfg.image_size} px frames, dae.image_size is "
                              f"{dcfg.image_size} (fix: set dae.image_size={ae_cfg.image_size} or retrain it)")
        return cls(model, {"autoencoder_config": to_dict(ae_cfg), "sha256": sha, "path": str(Path(path).resolve())})


def _build(dcfg: DAEConfig, dev: torch.device, first: FirstStageInput | None = None) -> _State:
    torch.manual_seed(dcfg.seed)  # the same initial weights on every rank
    model = DiffusionAutoencoder.from_config(dcfg, first.model if first else None).to(dev)
    if dcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # buffers are the EMA encoder's own latent statistics (see _calibrate), not the live model's
    ema = EMA(model, decay=dcfg.ema_decay, warmup=dcfg.ema_warmup, copy_buffers=False)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=dcfg.lr, weight_decay=0.0, fused=dev.type == "cuda")
    return _State(model, ema, opt, torch.Generator(device=dev).manual_seed(dcfg.seed + 1),
                  first.record if first else None)


def _checkpoint(st: _State, cfg: Config, dev: torch.device, world_size: int) -> dict[str, Any]:
    return {
        "step": st.step,
        "model": st.model.state_dict(),
        "ema": st.ema.state_dict(),
        "optimizer": st.opt.state_dict(),
        "rng": rng_state(dev),
        "noise_rng": st.noise_gen.get_state(),
        "data_position": {"global_samples": st.step * cfg.dae.batch_size, "seed": cfg.dae.seed},
        "dae_config": cfg.to_dict()["dae"],
        "config": cfg.to_dict(),
        "world_size": world_size,
        **({"first_stage": st.first_stage} if st.first_stage else {}),
    }


def _check_resumable(state: dict[str, Any], cfg: DAEConfig, path: Path, first_stage: dict[str, Any] | None) -> None:
    check_resumable(dae_config_from_checkpoint(state), cfg, ARCH_FIELDS, path)
    was, now_sha = state.get("first_stage", {}).get("sha256"), (first_stage or {}).get("sha256")
    if was != now_sha:
        raise CheckpointError(f"{path}: trained on autoencoder {was}, resumed with {now_sha}; pass the "
                              f"--autoencoder it was trained with ({state.get('first_stage', {}).get('path')})")


def _restore(st: _State, ckpt_dir: Path, resume: bool, dcfg: DAEConfig, info: DistInfo) -> None:
    """Rank 0 picks the newest intact checkpoint (torn ones are skipped); every rank loads that one."""
    chosen = None
    if info.is_main:
        if resume:
            found = ckpt_io.load_latest(ckpt_dir)
            chosen = str(found[0]) if found else None
            if chosen is None:
                log.info("no intact checkpoint in %s: starting from step 0", ckpt_dir)
        elif ckpt_io.checkpoint_candidates(ckpt_dir):
            raise CheckpointError(f"{ckpt_dir}: holds checkpoints; pass --resume or choose a new --out")
    chosen = broadcast_object(chosen, info)
    if chosen is None:
        return
    state = ckpt_io.load_checkpoint(Path(chosen))  # to CPU: RNG states must stay CPU tensors
    _check_resumable(state, dcfg, Path(chosen), st.first_stage)
    st.model.load_state_dict(state["model"])
    st.ema.load_state_dict(state["ema"])
    st.opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"], info.device)
    st.noise_gen.set_state(state["noise_rng"])
    st.step = int(state["step"])
    log.info("resumed from %s at step %d", chosen, st.step)


def _batches(
    data_dir: Path, dcfg: DAEConfig, info: DistInfo, start_step: int, first_stage: FirstStage | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """This rank's endless stream of (diffusion-space x0 (B/W, C, R, R), mouth boxes (B/W, 4) or None),
    positioned at ``start_step``."""
    per_rank = dcfg.batch_size // info.world_size
    dataset: Any = FramesDataset(data_dir, splits=("train",), image_size=dcfg.image_size,
                                 mouth_boxes=dcfg.mouth_weight > 0)
    if first_stage is not None:
        dataset = EncodedFrames(dataset, first_stage, bf16=dcfg.bf16, progress=info.is_main)
    sampler = ResumableShardedSampler(
        len(dataset), rank=info.rank, world_size=info.world_size, seed=dcfg.seed, start=start_step * per_rank
    )
    loader = DataLoader(
        dataset, batch_size=per_rank, sampler=sampler, num_workers=dcfg.num_workers,
        pin_memory=info.device.type == "cuda", drop_last=True, persistent_workers=dcfg.num_workers > 0,
        # its own generator: creating the iterator must not draw from the global RNG (dropout),
        # or a resumed run's dropout masks would shift by one draw
        generator=torch.Generator().manual_seed(dcfg.seed),
    )
    # A generator expression, so the dataset above is opened now: a bad dataset fails before
    # anything is written to the run folder. The sampler never ends.
    return ((b[0], b[1]) if dcfg.mouth_weight > 0 else (b, None) for b in loader)


def _calibrate(st: _State, data_dir: Path, dcfg: DAEConfig, dev: torch.device) -> None:
    """Set the EMA encoder's latent statistics from a fixed, evenly spaced set of training frames."""
    if not dcfg.latent_norm:
        return
    ds = FramesDataset(data_dir, splits=("train",), image_size=dcfg.image_size)
    with autocast(dev, dcfg.bf16):
        frames = st.ema.model.to_space(ds.stack(evenly_spaced(len(ds), dcfg.latent_calib_frames)).to(dev))
        if dcfg.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        st.ema.model.encoder.calibrate(frames)


def _step(
    st: _State, forward: Any, x0: torch.Tensor, boxes: torch.Tensor | None, sched: NoiseSchedule,
    dcfg: DAEConfig, info: DistInfo,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimisation step on this rank's x0 (B/W, C, R, R) with its mouth boxes (B/W, 4) when the
    loss weights the mouth; returns (loss, grad norm, lr)."""
    dev = info.device
    # The whole global batch's t and noise, identical on every rank. The sampler deals the global
    # batch's frames to ranks in turn (rank r holds rows r, r + W, ...), so this rank takes the same
    # rows: each frame meets the t and noise it would meet in one process (v targets depend on it).
    t_all = torch.randint(0, dcfg.timesteps, (dcfg.batch_size,), generator=st.noise_gen, device=dev)
    noise_all = torch.randn((dcfg.batch_size, *x0.shape[1:]), generator=st.noise_gen, device=dev)
    rows = slice(info.rank, None, info.world_size)
    t, noise = t_all[rows], noise_all[rows]
    x_t = q_sample(sched, x0, t, noise)
    if dcfg.channels_last:
        x0, x_t = (v.contiguous(memory_format=torch.channels_last) for v in (x0, x_t))

    lr = scheduled_lr(st.step, dcfg.lr, dcfg.warmup_steps, dcfg.lr_decay_steps)
    for group in st.opt.param_groups:
        group["lr"] = lr
    with autocast(dev, dcfg.bf16):
        pred = forward(x0, x_t, t)
    target = noise if dcfg.prediction == "eps" else v_target(x0.float(), noise, sched.alpha_bar(t, noise))
    weights = min_snr_weights(sched, t, dcfg.min_snr_gamma, dcfg.prediction) if dcfg.min_snr_gamma > 0 else None
    pixels = box_weights(boxes, x0.shape[-1], dcfg.mouth_weight) if boxes is not None else None  # on the grid
    loss = eps_loss(pred, target, weights, pixels)
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(st.model.parameters(), dcfg.grad_clip)
    st.opt.step()
    st.ema.update(st.model)
    st.step += 1
    return loss.detach(), grad_norm, lr


def train_dae(
    data_dir: Path,
    out_dir: Path,
    cfg: Config,
    resume: bool = False,
    *,
    logger: TrainLogger | None = None,
    device: str | None = None,
    first_stage: Path | None = None,
) -> TrainResult:
    """Train (or, with ``resume``, continue) the DAE on ``data_dir``'s training frames.

    Under torchrun every rank calls this; rank 0 alone writes files and logs.
    ``logger`` defaults to the active MLflow run if there is one, else nothing.
    ``first_stage``: the ``train-autoencoder`` checkpoint a ``dae.space: latent`` DAE diffuses in.
    """
    info = init_distributed(device)
    try:
        return _train(Path(data_dir), Path(out_dir), cfg, resume, info, logger, first_stage)
    finally:
        teardown(info)


def _train(
    data_dir: Path, out_dir: Path, cfg: Config, resume: bool, info: DistInfo, logger: TrainLogger | None,
    first_stage: Path | None,
) -> TrainResult:
    dcfg, dev = cfg.dae, info.device
    if dcfg.batch_size % info.world_size:
        raise ConfigError(f"dae.batch_size {dcfg.batch_size} must divide by the {info.world_size} ranks")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    run = _Run(data_dir, out_dir, cfg, info, (logger or default_logger()) if info.is_main else NullLogger())

    FramesDataset(data_dir, splits=("train",))  # a missing, empty or torn dataset says so before anything else
    st = _build(dcfg, dev, FirstStageInput.load(first_stage, dcfg, dev))
    _restore(st, run.ckpt_dir, resume, dcfg, info)
    forward: Any = wrap_ddp(st.model, info)
    if dcfg.compile:
        forward = torch.compile(forward)
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    batches = _batches(data_dir, dcfg, info, st.step, st.model.first_stage)

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        run.metrics_file = MetricsFile(out_dir / "metrics.jsonl", st.step)
        run.held_out = held_out_frames(data_dir, dcfg.sample_count, dcfg.image_size)[0]
        run.logger.log_metrics(st.step, {"params_total": count_parameters(st.model),
                                         "params_trained": sum(p.numel() for p in st.model.trainable_parameters())})

    t_begin = time.perf_counter()
    last = _loop(st, forward, batches, sched, run)
    return finish_run(out_dir, run.ckpt_dir, st.step, last, t_begin, info.is_main)


@dataclass
class _Run:
    """Where a DAE run reads and reports: data, folder, logger; on rank 0 metrics.jsonl and the held-out frames."""

    data_dir: Path
    out_dir: Path
    cfg: Config
    info: DistInfo
    logger: TrainLogger
    metrics_file: MetricsFile | None = None
    held_out: torch.Tensor | None = None

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"


def _loop(st: _State, forward: Any, batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]],
          sched: NoiseSchedule, run: _Run) -> dict[str, float]:
    """Step to ``dae.max_steps`` (:class:`StepLoop`): sample and checkpoint on their schedules; the last metrics."""
    dcfg, info, dev = run.cfg.dae, run.info, run.info.device

    def update(step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        x0, boxes = next(batches)
        x0 = x0.to(dev, non_blocking=True)
        boxes = boxes.to(dev) if boxes is not None else None
        loss, grad_norm, lr = _step(st, forward, x0, boxes, sched, dcfg, info)
        return {"loss": loss}, {"lr": lr, "grad_norm": grad_norm}

    def calibrate(done: int, final: bool) -> None:
        if info.is_main:  # the EMA encoder's latent statistics, before it is sampled or saved
            _calibrate(st, run.data_dir, dcfg, dev)

    def reconstruct(done: int, final: bool) -> dict[str, float] | None:
        if not info.is_main:
            return None
        recon = _log_reconstructions(st.ema.model, run.held_out, dcfg, done, run.out_dir, run.logger)
        run.metrics_file.write(done, recon)
        return recon

    def save(done: int, final: bool) -> None:
        if info.is_main:
            ckpt_io.save_checkpoint(_checkpoint(st, run.cfg, dev, info.world_size), run.ckpt_dir, done,
                                    keep=dcfg.keep_checkpoints)
        barrier(info)

    sampling, saving = Every(dcfg.sample_every), Every(dcfg.ckpt_every)
    loop = StepLoop("train-dae", st.step, dcfg.max_steps, dcfg.log_every, dcfg.batch_size, "images_per_s", dev,
                    info.is_main, run.logger, run.metrics_file.write if info.is_main else None,
                    lambda t: all_mean(t, info))  # fmt: skip
    st.model.train()
    return loop.run(update, [(lambda d, f: sampling(d, f) or saving(d, f), calibrate), (sampling, reconstruct),
                             (saving, save)])


def _log_reconstructions(
    ema_model: DiffusionAutoencoder, x0: torch.Tensor, dcfg: DAEConfig, step: int, out_dir: Path,
    logger: TrainLogger,
) -> dict[str, float]:
    sched = linear_schedule(dcfg.timesteps, dcfg.beta_start, dcfg.beta_end)
    noise_dec, inv_dec = reconstruct(ema_model, x0, dcfg.sample_steps, sched, seed=dcfg.seed, bf16=dcfg.bf16,
                                    invert_steps=dcfg.invert_steps)
    metrics = {
        "psnr_noise_decode": float(psnr(noise_dec.cpu(), x0).mean()),
        "psnr_inverted_decode": float(psnr(inv_dec.cpu(), x0).mean()),
    }
    grid = recon_grid(x0, noise_dec, inv_dec)
    write_png(out_dir / "samples" / f"step_{step:08d}.png", grid)
    logger.log_image(step, "reconstructions", grid)
    logger.log_metrics(step, metrics)
    return metrics


