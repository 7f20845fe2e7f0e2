"""Training throughput of the diffusion autoencoder (images/s, median over timed steps).

CPU (always): the tiny and base128 profiles, fp32 eager, as the trainer runs them here.
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

import torch

from daetalker.config import load_config
from daetalker.diffusion import eps_loss, linear_schedule, q_sample
from daetalker.models import DiffusionAutoencoder, count_parameters

H200_BF16_DENSE_FLOPS = 989e12


def make_step(model, opt, batch: int, image_size: int, device, *, bf16: bool, channels_last: bool, compiled: bool):
    """One training step on a fixed synthetic batch, exactly the trainer's maths."""
    sched = linear_schedule()
    g = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand(batch, 3, image_size, image_size, generator=g, device=device) * 2 - 1
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
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return step


def flops_per_step(profile: str, batch: int, device) -> float:
    """FLOPs of one eager fp32 forward + backward (what the model costs, whatever the kernels)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load_config(profile).dae
    model = DiffusionAutoencoder.from_config(cfg).to(device)
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        model(x, x, t).float().pow(2).mean().backward()
    return float(counter.get_total_flops())


def measure(profile: str, device: torch.device, *, batch: int, optimised: bool, steps: int, warmup: int) -> dict:
    cfg = load_config(profile).dae
    torch.manual_seed(0)
    model = DiffusionAutoencoder.from_config(cfg).to(device)
    if optimised:
        model = model.to(memory_format=torch.channels_last)
    fused = optimised and device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused or None)
    step = make_step(model, opt, batch, cfg.image_size, device, bf16=optimised and device.type == "cuda",
                     channels_last=optimised, compiled=optimised and device.type == "cuda")
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
        "mode": "optimised" if optimised else "baseline",
        "batch": batch,
        "image_size": cfg.image_size,
        "params_M": round(count_parameters(model) / 1e6, 2),
        "step_ms_median": round(med * 1000, 1),
        "images_per_s": round(batch / med, 2),
        "warmup_s": round(t_compile, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    ap.add_argument("--cpu-batch-base128", type=int, default=2,
                    help="base128 batch on the CPU (its 128 would take minutes per step)")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true")
    args = ap.parse_args()
    rows = []
    cpu = torch.device("cpu")
    if not args.skip_cpu:
        print(f"CPU: {torch.get_num_threads()} threads", flush=True)
        for profile, batch in (("tiny", load_config("tiny").dae.batch_size), ("base128", args.cpu_batch_base128)):
            r = measure(profile, cpu, batch=batch, optimised=False, steps=args.steps, warmup=1)
            r["gflop_per_image"] = round(flops_per_step(profile, 1, cpu) / 1e9, 2)
            r["achieved_gflop_s"] = round(r["gflop_per_image"] * r["images_per_s"], 1)
            rows.append(r)
            print(json.dumps(r), flush=True)
    if torch.cuda.is_available() and not args.skip_gpu:
        gpu = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(gpu)}", flush=True)
        for profile in ("base128", "paper256"):
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
    print("\n| profile | device | mode | batch | images/s | step ms | MFU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['device']} | {r['mode']} | {r['batch']} | {r['images_per_s']} | "
              f"{r['step_ms_median']} | {r.get('mfu_vs_bf16_peak', '-')} |")


if __name__ == "__main__":
    main()
