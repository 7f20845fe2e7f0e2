"""Speed and memory of ``daetalker preprocess``: frames per second, real-time factor, peak RSS.

Inputs: the real clips ($DAETALKER_REAL_CLIPS or --real), and one synthetic
speaker clip of 1 and of 10 minutes (one minute of ``daetalker synth`` joined
into a single file and looped; cached in --cache). Each run is a fresh process
writing a fresh dataset, so model loading and imports are included; figures
are the median of --runs. Peak memory is the largest max RSS of the main
process and the workers (ffmpeg decodes through a pipe and is not counted;
Linux folds a forked child's pre-exec copy into its max RSS): if memory is
bounded, the 10-minute clip peaks where the 1-minute one does. CPU is the
work on the sources (decode, models, writing; imports and start-up excluded).

    python bench/preprocess.py [--profile paper256] [--workers 2] [--runs 3] [--cache DIR]

Real-time factor = seconds of source video / wall seconds (goal: >= 8 at
256 px on 2 cores). Wall time on a shared machine varies with its load; the
CPU columns (workers and their ffmpeg) are steadier: video s / cpu s
times the cores in use bounds the real-time factor of an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_RUN = r"""
import json, sys, time
from pathlib import Path
from daetalker.config import load_config
from daetalker.data.preprocess import preprocess_dataset
src, out, profile, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = load_config(profile).preprocess
t0 = time.perf_counter()
s = preprocess_dataset(Path(src), Path(out), cfg, workers=workers)
wall = time.perf_counter() - t0
print(json.dumps(dict(wall=wall, cpu=s.cpu_s, frames=s.frames, source_s=s.source_seconds,
                      clips=s.n_clips, rss_mb=s.peak_rss_mb)))
"""


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-nostdin", "-y", *args], check=True)


def synthetic_inputs(cache: Path) -> dict[str, Path]:
    """Folders holding one synthetic clip of 1 and of 10 minutes (built once)."""
    one, ten = cache / "synth-1min" / "speaker.mp4", cache / "synth-10min" / "speaker.mp4"
    if not ten.is_file():
        from daetalker.config.synth import SynthConfig
        from daetalker.synth.corpus import synth_corpus

        corpus = cache / "corpus"
        synth_corpus(corpus, minutes=1.0, seed=0, cfg=SynthConfig(size=256), progress=False)
        listing = cache / "list.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in sorted(corpus.glob("clip_*.mp4"))))
        one.parent.mkdir(parents=True, exist_ok=True)
        ten.parent.mkdir(parents=True, exist_ok=True)
        ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(one))
        ffmpeg("-stream_loop", "9", "-i", str(one), "-c", "copy", str(ten))
    return {"synthetic 1 min": one.parent, "synthetic 10 min": ten.parent}


def run_once(src: Path, profile: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-c", ONE_RUN, str(src), out, profile, str(workers)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"preprocess of {src} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=os.environ.get("DAETALKER_REAL_CLIPS"),
                    help="folder of real clips [$DAETALKER_REAL_CLIPS]")
    ap.add_argument("--profile", default="paper256", help="config profile (paper256: 256 px crops)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "daetalker" / "bench-preprocess")
    ap.add_argument("--skip-synthetic", action="store_true")
    args = ap.parse_args()

    inputs: dict[str, Path] = {}
    if args.real:
        inputs["real clips"] = Path(args.real)
    if not args.skip_synthetic:
        inputs.update(synthetic_inputs(args.cache))
    print(f"profile {args.profile}, workers {args.workers}, {os.cpu_count()} CPUs, median of {args.runs} runs")
    print(f"{'input':>17} {'clips':>5} {'video s':>8} {'frames':>7} {'wall s':>7} {'src cpu s':>9} {'fps':>7} "
          f"{'x real time':>11} {'video s/cpu s':>13} {'peak MB':>8}")
    for name, src in inputs.items():
        runs = [run_once(src, args.profile, args.workers) for _ in range(args.runs)]
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        r = runs[0]
        print(f"{name:>17} {r['clips']:>5} {r['source_s']:>8.1f} {r['frames']:>7} {wall:>7.1f} {cpu:>9.1f} "
              f"{r['frames'] / wall:>7.1f} {r['source_s'] / wall:>11.2f} {r['source_s'] / cpu:>13.2f} "
              f"{max(x['rss_mb'] for x in runs):>8.0f}")


if __name__ == "__main__":
    main()
