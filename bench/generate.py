"""Generation speed: DDIM decoding of many frames per batch vs one frame at a time (method.md sections 5, 7).

The same latents and the same shared x_T are decoded twice, batched and one
frame per call; the frames must agree within tolerance. Random weights are
fine for speed. Prints JSON.

CPU (always): ``--profile`` (default tiny: a latent DAE, 128 px frames), ``--steps`` DDIM
steps (default: the profile's ``dae.sample_steps``), median of 3; frames/s counts the whole
decode to pixels (DDIM in the DAE's space, then the first stage's decoder in latent space).
GPU (when torch.cuda.is_available()): base128, base128-latent, paper256 and paper256-latent,
20 steps, bf16 autocast, batched frames/s (and one-at-a-time on a few frames for the ratio).

    python bench/generate.py [--profile tiny] [--frames 32] [--batch 32] [--steps N] [--skip-cpu] [--skip-gpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from daetalker.bundle.build import random_dae
from daetalker.config import load_config
from daetalker.diffusion import linear_schedule
from daetalker.generate.video import decode_latents, shared_noise


def decode_all(dae, z, x_T, *, steps: int, batch: int, bf16: bool) -> torch.Tensor:
    sched = linear_schedule(1000, 1e-4, 0.02)
    return torch.cat(list(decode_latents(dae, z, x_T, steps=steps, schedule=sched, batch_size=batch, bf16=bf16)))


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench(profile: str, device: torch.device, *, frames: int, single_frames: int, batch: int, steps: int,
          bf16: bool, repeats: int) -> dict:
    cfg = load_config(profile)
    torch.manual_seed(0)
    dae = random_dae(cfg).to(device).eval().requires_grad_(False)
    z = torch.randn(frames, cfg.dae.latent_dim, generator=torch.Generator().manual_seed(1)).to(device)
    x_T = shared_noise(dae.image_size, 0, device, dae.channels)  # (1, C, R, R) in the DAE's space
    decode_all(dae, z[:batch], x_T, steps=1, batch=batch, bf16=bf16)  # warm-up (cuDNN, allocator)
    t_b, out_b = timed(lambda: decode_all(dae, z, x_T, steps=steps, batch=batch, bf16=bf16), device, repeats)
    n1 = min(single_frames, frames)
    t_1, out_1 = timed(lambda: decode_all(dae, z[:n1], x_T, steps=steps, batch=1, bf16=bf16), device, repeats)
    fps_b, fps_1 = frames / t_b, n1 / t_1
    return {
        "profile": profile, "device": str(device), "space": cfg.dae.space, "frame_px": dae.pixel_size,
        "grid": f"{dae.image_size}x{dae.image_size}x{dae.channels}", "steps": steps,
        "bf16": bf16, "batch": batch, "frames": frames, "batched_fps": round(fps_b, 2),
        "one_at_a_time_fps": round(fps_1, 2), "speedup": round(fps_b / fps_1, 2),
        "max_abs_diff": float((out_b[:n1].float() - out_1.float()).abs().max()),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the profile's dae.sample_steps)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    if not args.skip_cpu:
        steps = args.steps or load_config(args.profile).dae.sample_steps
        results.append(bench(args.profile, torch.device("cpu"), frames=args.frames, single_frames=args.frames,
                             batch=args.batch, steps=steps, bf16=load_config(args.profile).dae.bf16,
                             repeats=3))  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    if not args.skip_gpu and torch.cuda.is_available():
        for profile, batch in (("base128", 64), ("base128-latent", 64), ("paper256", 32), ("paper256-latent", 32)):
            results.append(bench(profile, torch.device("cuda"), frames=4 * batch, single_frames=16, batch=batch,
                                 steps=20, bf16=True, repeats=3))  # fmt: skip
            print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
