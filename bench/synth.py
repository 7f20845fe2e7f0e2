"""Speed of the synthetic speaker: seconds of video made per wall-clock second.

For 128 and 256 px, on one clip of about ``--seconds`` s (median of ``--runs``):

* speech: espeak-ng synthesis (in a fresh process) + visemes + motion (``make_clip``);
* render: every frame rendered in memory (``render_clip``), the baseline;
* write: render + H.264/AAC encode + wav + parquet (``write_clip``), what ``daetalker synth`` does.

"x real time" is seconds of video per second; above 1.0 is faster than the
video plays. It is given per wall-clock second and per CPU second (this
process plus its children, e.g. ffmpeg), since a busy machine inflates wall
time. Ratios printed: write / render throughput (the cost of encoding) and
256 / 128 px render throughput.

    python bench/synth.py [--seconds 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from daetalker.config.synth import SynthConfig
from daetalker.synth.corpus import make_clip, render_clip, speaker_for, write_clip
from daetalker.synth.face_render import FaceRenderer


def _cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def median_times(fn, runs: int) -> tuple[float, float]:
    """Median (wall, cpu) seconds of ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), _cpu()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(_cpu() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="target clip length")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    speaker = speaker_for(args.seed)
    render_speed: dict[int, float] = {}
    print(f"{'size':>5} {'stage':>7} {'wall s':>7} {'cpu s':>7} {'video s':>8} {'x real time':>12} {'(cpu)':>7}")
    for size in (128, 256):
        cfg = SynthConfig(size=size, clip_seconds=args.seconds)
        clip = make_clip(cfg, args.seed, 0, args.seconds)
        video_s = clip.n_frames / cfg.fps
        speech = median_times(lambda: make_clip(cfg, args.seed, 0, args.seconds), args.runs)
        render = median_times(lambda: render_clip(clip, speaker, size), args.runs)
        with tempfile.TemporaryDirectory() as tmp:
            renderer = FaceRenderer(speaker, size)
            write = median_times(lambda: write_clip(clip, renderer, Path(tmp), cfg), args.runs)
        for stage, (wall, cpu) in (("speech", speech), ("render", render), ("write", write)):
            print(f"{size:>5} {stage:>7} {wall:>7.2f} {cpu:>7.2f} {video_s:>8.2f} {video_s / wall:>12.2f}"
                  f" {video_s / cpu:>7.2f}")
        render_speed[size] = video_s / render[0]
        print(f"{size:>5} ratio write/render throughput (wall): {render[0] / write[0]:.2f}")
    print(f"ratio 256/128 px render throughput (wall): {render_speed[256] / render_speed[128]:.2f}")


if __name__ == "__main__":
    main()
