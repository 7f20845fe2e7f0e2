"""Training throughput of the diffusion autoencoder (images/s, median over timed steps).

CPU (always): the tiny and base128 profiles, as the trainer runs them here (the profile's bf16
and channels_last settings), the bare step: forward + backward + Adam on a fixed batch in the
DAE's space (the 32x32x4 grid of the tiny profile's latent DAE).

CPU loop (``--data DIR``): the trainer itself (``train_dae``: data, EMA, mouth weighting,
Min-SNR, logging) for ``--loop-steps`` steps on a processed dataset; its images/s (StepLoop's
windows, the median after the first) over the bare step's, measured in the same run: the
issue-16 bar is >= 0.8. ``--autoencoder`` names a ``train-autoencoder`` checkpoint (default: a
random first stage, the same cost).
GPU (when torch.cuda.is_available()): base128 and paper256, each as

* ``baseline``  - plain fp32 eager, contiguous tensors, for-each Adam;
* ``optimised`` - bf16 autocast + channels_last + torch.compile + fused Adam
                  (the trainer's path with dae.bf16/channels_last/compile on);

with model FLOP utilisation: FLOPs of one training step counted with
``torch.utils.flop_counter.FlopCounterMode`` (eager, fp32, forward + backward),
times steps/s, over the H200's dense bf16 peak (~989 TFLOP/s). The goal is
optimised >= 2x baseline.

    python bench/train_dae.py [--steps 5] [--cpu-batch-base128 2] [--skip-cpu] [--skip-gpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from daetalker.bundle.build import random_dae
from daetalker.config import load_config
from daetalker.diffusion import eps_loss, linear_schedule, q_sample
from daetalker.models import count_parameters

H200_BF16_DENSE_FLOPS = 989e12


def make_step(model, opt, batch: int, device, *, bf16: bool, channels_last: bool, compiled: bool):
    """One training step on a fixed synthetic batch (B, C, R, R) in the model's space, the trainer's maths."""
    sched = linear_schedule()
    g = torch.Generator(device=device).manual_seed(0)
    shape = (batch, model.channels, model.image_size, model.image_size)
    x0 = torch.rand(shape, generator=g, device=device) * 2 - 1
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    forward = torch.compile(model) if compiled else model

    def step() -> torch.Tensor:
        t = torch.randint(0, 1000, (batch,), generator=g, device=device)
        noise = torch.randn(x0.shape, generator=g, device=device)
        x_t = q_sample(sched, x0, t, noise)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = forward(x0.contiguous(memory_format=fmt), x_t.contiguous(memory_format=fmt), t)
        loss = eps_loss(eps, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        opt.step()
        return loss

    return step


def flops_per_step(profile: str, batch: int, device) -> float:
    """FLOPs of one eager fp32 forward + backward (what the model costs, whatever the kernels)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = random_dae(load_config(profile)).to(device)
    x = torch.rand(batch, model.channels, model.image_size, model.image_size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        model(x, x, t).float().pow(2).mean().backward()
    return float(counter.get_total_flops())


def measure(profile: str, device: torch.device, *, batch: int, optimised: bool, steps: int, warmup: int,
            bf16: bool | None = None, channels_last: bool | None = None) -> dict:
    """``optimised`` on the GPU: bf16 + channels_last + compile + fused Adam; on the CPU ``bf16`` and
    ``channels_last`` (default: the profile's) are what the trainer would use."""
    cfg = load_config(profile).dae
    torch.manual_seed(0)
    model = random_dae(load_config(profile)).to(device)
    gpu = device.type == "cuda"
    bf16 = (optimised and gpu) if bf16 is None else bf16
    channels_last = optimised if channels_last is None else channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr, fused=(optimised and gpu) or None)
    step = make_step(model, opt, batch, device, bf16=bf16, channels_last=channels_last, compiled=optimised and gpu)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_compile = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    t_compile = time.perf_counter() - t_compile
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "profile": profile,
        "device": str(device),
        "mode": "optimised" if optimised else ("bare" if device.type == "cpu" else "baseline"),
        "bf16": bf16,
        "channels_last": channels_last,
        "batch": batch,
        "grid": f"{model.image_size}x{model.image_size}x{model.channels}",
        "params_M": round(count_parameters(model) / 1e6, 2),
        "step_ms_median": round(med * 1000, 1),
        "images_per_s": round(batch / med, 2),
        "warmup_s": round(t_compile, 1),
    }


def loop_rate(profile: str, data: Path, autoencoder: Path | None, steps: int, work: Path) -> dict:
    """images/s of ``train_dae`` itself on ``data``: StepLoop's windows of 10 steps (hooks excluded), the
    median after the first; and the whole run's rate (the encoded-frame cache and hooks included)."""
    from daetalker import checkpoint as ckpt_io
    from daetalker.config.base import to_dict
    from daetalker.train.dae_trainer import train_dae
    from daetalker.train.loop import MemoryLogger

    cfg = load_config(profile, None, [f"dae.max_steps={steps}", "dae.log_every=10", f"dae.ckpt_every={steps}",
                                      "dae.sample_every=0", f"dae.lr_decay_steps={steps}", "dae.mlflow=false"])
    first = None
    if cfg.dae.space == "latent":
        first = autoencoder
        if first is None:  # a random first stage costs what a trained one does
            model = random_dae(cfg).first_stage
            state = {"step": 0, "autoencoder_config": to_dict(cfg.autoencoder), "model": model.state_dict()}
            first = ckpt_io.save_checkpoint(state, work / "ae", 0)
    logger = MemoryLogger()
    t0 = time.perf_counter()
    res = train_dae(data, work / profile, cfg, logger=logger, device="cpu", first_stage=first)
    rates = [v for _, v in logger.metrics["images_per_s"]]
    return {"profile": profile, "mode": "loop", "steps": steps, "batch": cfg.dae.batch_size,
            "bf16": cfg.dae.bf16, "images_per_s": round(statistics.median(rates[1:] or rates), 2),
            "whole_run_images_per_s": round(steps * cfg.dae.batch_size / (time.perf_counter() - t0), 2),
            "train_seconds": round(res.metrics["train_seconds"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    ap.add_argument("--cpu-batch-base128", type=int, default=2,
                    help="base128 batch on the CPU (its 128 would take minutes per step)")
    ap.add_argument("--data", type=Path, default=None, help="a processed dataset: also time the training loop")
    ap.add_argument("--autoencoder", type=Path, default=None, help="train-autoencoder checkpoint for the loop")
    ap.add_argument("--loop-profile", default="tiny")
    ap.add_argument("--loop-steps", type=int, default=80)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    cpu = torch.device("cpu")
    if not args.skip_cpu:
        print(f"CPU: {torch.get_num_threads()} threads", flush=True)
        cases = [("tiny", None), ("tiny-pixel", None), ("base128", args.cpu_batch_base128)]
        for profile, batch in cases:
            dcfg = load_config(profile).dae
            for bf16 in sorted({False, dcfg.bf16}):  # fp32, and bf16 where the profile trains in it
                r = measure(profile, cpu, batch=batch or dcfg.batch_size, optimised=False, steps=args.steps,
                            warmup=1, bf16=bf16, channels_last=dcfg.channels_last)
                r["gflop_per_image"] = round(flops_per_step(profile, 1, cpu) / 1e9, 2)
                r["achieved_gflop_s"] = round(r["gflop_per_image"] * r["images_per_s"], 1)
                rows.append(r)
                print(json.dumps(r), flush=True)
        if args.data is not None:
            import tempfile

            dcfg = load_config(args.loop_profile).dae
            with tempfile.TemporaryDirectory() as work:
                loop = loop_rate(args.loop_profile, args.data, args.autoencoder, args.loop_steps, Path(work))
            bare = measure(args.loop_profile, cpu, batch=dcfg.batch_size, optimised=False, steps=max(args.steps, 10),
                           warmup=2, bf16=dcfg.bf16, channels_last=dcfg.channels_last)  # fmt: skip
            loop["loop_over_bare"] = round(loop["images_per_s"] / bare["images_per_s"], 3)
            loop["bare_images_per_s"] = bare["images_per_s"]
            rows += [bare, loop]
            print(json.dumps(loop), flush=True)
    if torch.cuda.is_available() and not args.skip_gpu:
        gpu = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(gpu)}", flush=True)
        for profile in ("base128", "base128-latent", "paper256", "paper256-latent"):
            batch = load_config(profile).dae.batch_size
            flops = flops_per_step(profile, batch, gpu)
            by_mode = {}
            for optimised in (False, True):
                r = measure(profile, gpu, batch=batch, optimised=optimised, steps=max(args.steps, 10), warmup=3)
                r["tflop_per_step"] = round(flops / 1e12, 2)
                r["mfu_vs_bf16_peak"] = round(flops * r["images_per_s"] / batch / H200_BF16_DENSE_FLOPS, 3)
                by_mode[r["mode"]] = r
                rows.append(r)
                print(json.dumps(r), flush=True)
                torch.cuda.empty_cache()
            speedup = by_mode["optimised"]["images_per_s"] / by_mode["baseline"]["images_per_s"]
            print(json.dumps({"profile": profile, "speedup_optimised_over_fp32_eager": round(speedup, 2),
                              "goal": 2.0, "met": speedup >= 2.0}), flush=True)
    print("\n| profile | device | mode | bf16 | batch | images/s | step ms | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r.get('device', 'cpu')} | {r['mode']} | {r['bf16']} | {r['batch']} | "
              f"{r['images_per_s']} | {r.get('step_ms_median', '-')} | {r.get('mfu_vs_bf16_peak', '-')} |")


if __name__ == "__main__":
    main()
