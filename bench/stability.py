"""Is a trained-model test's verdict stable? Run it under several torch thread counts, seeds and corpora.

A test that trains a model and asserts on its scores can pass on one machine and fail on
another of the same kind: a different CPU picks other oneDNN / BLAS kernels, a different
thread count sums in another order, and the trained weights move. If the asserted figure
sits next to its bar, that is enough to flip the verdict (issue 14: SyncNet LSE-C 0.020 vs
0.021). This script reruns the test in fresh pytest processes under each thread count (a
new reduction order: the cheapest stand-in for another machine), with several training
seeds and corpus seeds, and prints the margin figures of every run and their worst case.

A test takes part by honouring these environment variables (tests/test_calibration.py does):

- ``DAETALKER_TEST_THREADS``: torch intra-op threads (default 1);
- ``DAETALKER_TEST_SEEDS``: comma-separated training seeds it is parametrised over;
- ``DAETALKER_TEST_CORPUS_SEED``: the seed of its synthetic data;
- ``DAETALKER_MARGINS_OUT``: a JSON-lines file it appends one row of figures to per run
  (keys ``test``, ``seed``, ``threads``, then its figures).

    python bench/stability.py [TEST_NODE] [--threads 1 2] [--seeds 0 1 2 3] [--corpus-seeds 3 4]
                              [--bars] [--json PATH]

Default node: the calibration test of the synthetic speaker. ``--bars`` also prints each
figure's distance to the bar the test asserts (the MIN_* / MAX_* constants of its module).
Sequential on purpose: run it on an otherwise idle machine, ~1 minute per (seed, thread) run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NODE = "tests/test_calibration.py::test_synthetic_speaker_heldout_clips_are_calibrated"

# figure -> (direction, bar constant in the test module): the margin is figure - bar ("min") or bar - figure ("max")
BARS = {"lse_c_own": ("min", "MIN_LSE_C_OWN"), "lse_c_ratio": ("min", "MIN_LSE_C_RATIO"),
        "peak_gap": ("min", "MIN_PEAK_GAP"), "lse_d_gap": ("min", "MIN_LSE_D_GAP"),
        "d0_gap_shift": ("min", "MIN_D0_GAP_SHIFT"), "c0_shift_share": ("max", "MAX_C0_SHIFT_SHARE")}
SHOWN = ("own_offset", "shift_offset_err", "recovery_err", "lse_c_own", "lse_c_other", "lse_c_ratio", "peak_gap",
         "lse_d_gap", "d0_gap_shift", "c0_shift_share")


def run_pytest(node: str, threads: int, seeds: list[int], corpus_seed: int, out: Path) -> tuple[int, float, str]:
    env = {**os.environ, "DAETALKER_TEST_THREADS": str(threads), "DAETALKER_TEST_SEEDS": ",".join(map(str, seeds)),
           "DAETALKER_TEST_CORPUS_SEED": str(corpus_seed), "DAETALKER_MARGINS_OUT": str(out)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", node, "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    tail = "\n".join(p.stdout.strip().splitlines()[-3:])
    return p.returncode, time.perf_counter() - t0, tail


def bar_values(node: str) -> dict[str, float]:
    """The MIN_* / MAX_* constants of the test's module."""
    import importlib.util

    path = ROOT / node.split("::")[0]
    spec = importlib.util.spec_from_file_location("_stability_target", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    return {name: getattr(module, const) for name, (_, const) in BARS.items() if hasattr(module, const)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("node", nargs="?", default=DEFAULT_NODE, help="pytest node id (without a [param] suffix)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--corpus-seeds", type=int, nargs="+", default=[3])
    ap.add_argument("--bars", action="store_true", help="also print the margin to each asserted bar")
    ap.add_argument("--json", type=Path, default=None, help="write every row here")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus_seed in args.corpus_seeds:
            for threads in args.threads:
                out = Path(tmp) / f"margins-{corpus_seed}-{threads}.jsonl"
                rc, wall, tail = run_pytest(args.node, threads, args.seeds, corpus_seed, out)
                got = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
                print(f"corpus seed {corpus_seed}, {threads} thread(s): pytest rc {rc} in {wall:.0f} s "
                      f"({len(got)} runs recorded)\n  " + tail.replace("\n", "\n  "), flush=True)
                rows += [{**r, "pytest_rc": rc, "pytest_wall_s": round(wall, 1)} for r in got]
    if not rows:
        sys.exit("no margins recorded: does the test honour DAETALKER_MARGINS_OUT?")

    head = ["corpus", "thr", "seed", "s"] + list(SHOWN)
    print("\n" + " ".join(f"{h:>10.10s}" for h in head))
    for r in rows:
        cells = [r.get("corpus_seed", "-"), r["threads"], r["seed"], r.get("seconds", "-")] + [r.get(k) for k in SHOWN]
        print(" ".join(f"{c:>10.4g}" if isinstance(c, float) else f"{c!s:>10s}" for c in cells))
    keys = [k for k in SHOWN if all(isinstance(r.get(k), (int, float)) for r in rows)]
    worst = {}
    for k in keys:
        values = [r[k] for r in rows]
        direction = BARS.get(k, ("max" if k.endswith("err") or k in ("lse_c_other",) else "min",))[0]
        worst[k] = max(values, key=abs) if k == "own_offset" else (max(values) if direction == "max" else min(values))
    print(" ".join(f"{c:>10s}" for c in ["worst", "", "", ""]) + " "
          + " ".join(f"{worst[k]:>10.4g}" if k in worst else f"{'':>10s}" for k in SHOWN))
    if args.bars:
        bars = bar_values(args.node)
        print("\nmargin to the asserted bar (worst case; > 0: clears it):")
        for k, bar in bars.items():
            direction = BARS[k][0]
            margin = worst[k] - bar if direction == "min" else bar - worst[k]
            ratio = worst[k] / bar if direction == "min" else (bar / worst[k] if worst[k] > 0 else float("inf"))
            print(f"  {k:16s} worst {worst[k]:8.4f}  bar {'>=' if direction == 'min' else '<='} {bar:<7g} "
                  f"margin {margin:+.4f} ({ratio:.1f}x)")
    failed = sorted({(r.get("corpus_seed"), r["threads"]) for r in rows if r["pytest_rc"] != 0})
    print("\npytest failed for (corpus seed, threads): " + (", ".join(map(str, failed)) if failed else "none"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
