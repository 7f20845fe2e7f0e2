"""SyncNet training step: fp32 vs bf16 autocast (``syncnet.bf16``), at a profile's net and batch.

One step = a batch of random lip windows and MFCC windows -> both streams -> cosine -> BCE ->
backward -> Adam, as ``train_syncnet``'s loop does (data sampling left out: the same in both).
Prints the median ms per step over ``--repeats`` timings of ``--steps`` steps each, fp32 and bf16
interleaved, and their ratio.

    python bench/train_syncnet.py [--profile tiny] [--threads 2] [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from daetalker.config import load_config
from daetalker.evaluate.syncnet import LightSyncNet
from daetalker.evaluate.syncnet_train import sync_probability
from daetalker.models.device import bf16_supported


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.profile).syncnet
    model = LightSyncNet.from_config(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    b = cfg.batch_size
    lip = torch.randn(b, 3, 5, cfg.lip_height, cfg.lip_width)  # (B, 3, 5 frames, h, w)
    aud = torch.randn(b, 1, 13, 20)  # (B, 1, MFCC, 20 steps)
    y = (torch.rand(b) < 0.5).float()

    def step(bf16: bool) -> None:
        loss = F.binary_cross_entropy(sync_probability(model, lip, aud, bf16=bf16), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):  # warm-up: oneDNN picks its kernels on the first calls
        for _ in range(3):
            step(bf16)
    for _ in range(args.repeats):
        for bf16 in (False, True):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(bf16)
            times[bf16].append((time.perf_counter() - t0) / args.steps * 1000)
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    print(json.dumps({"profile": args.profile, "threads": args.threads, "batch": b, "bf16_supported":
                      bf16_supported(torch.device("cpu")), "fp32_ms_per_step": round(fp32, 1),
                      "bf16_ms_per_step": round(bf16, 1), "speedup": round(fp32 / bf16, 2)}))


if __name__ == "__main__":
    main()
