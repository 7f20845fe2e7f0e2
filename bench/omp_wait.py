"""How OpenMP threads wait between ops: tiny-DAE training steps/s, alone and beside a busy process.

libgomp threads spin after each parallel region before they sleep (OMP_WAIT_POLICY
ACTIVE: ~forever; default: GOMP_SPINCOUNT iterations; PASSIVE: not at all). The
tiny DAE runs thousands of small ops per step, so sleeping threads pay a wake-up per
op, and spinning threads steal the core of any process next to them. Each setting
runs the same training steps (bench/train_dae.py's step, tiny profile, 2 threads)
in a fresh interpreter, alone and beside one busy-looping process; prints the median
images/s of ``--reps`` runs and the ratio to PASSIVE measured in the same run.

    python bench/omp_wait.py [--steps 30] [--reps 3] [--spins 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys, time, torch
sys.path.insert(0, {bench!r})
from train_dae import make_step
from daetalker.bundle.build import random_dae
from daetalker.config import load_config
from daetalker.models.device import bf16_supported
cfg = load_config("tiny").dae
torch.manual_seed(0)
model = random_dae(load_config("tiny"))
opt = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr)
step = make_step(model, opt, cfg.batch_size, torch.device("cpu"), bf16=cfg.bf16 and bf16_supported(torch.device("cpu")),
                 channels_last=cfg.channels_last, compiled=False)
step(); step()
t0 = time.perf_counter()
for _ in range({steps}):
    step()
print(cfg.batch_size * {steps} / (time.perf_counter() - t0))
"""


def run_once(env_extra: dict[str, str], steps: int, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra, OMP_NUM_THREADS="2")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        code = CHILD.format(bench=str(Path(__file__).parent), steps=steps)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--spins", type=int, nargs="+", default=[5000, 20000], help="GOMP_SPINCOUNT values to try")
    args = ap.parse_args()
    settings = {"PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
    settings.update({f"GOMP_SPINCOUNT={n}": {"GOMP_SPINCOUNT": str(n)} for n in args.spins})
    rows = []
    for busy in (False, True):
        base = None
        for name, env in settings.items():
            runs = [run_once(env, args.steps, busy) for _ in range(args.reps)]
            med = statistics.median(runs)
            base = base or med
            row = {"setting": name, "neighbour": "busy" if busy else "idle", "images_per_s_median": round(med, 1),
                   "runs": [round(r, 1) for r in runs], "vs_passive": round(med / base, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
