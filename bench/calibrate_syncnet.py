"""Calibrate the project's SyncNet on videos it was not trained on (issue 6) and print the tables.

Real clips ($DAETALKER_REAL_CLIPS or --real): preprocessed with the profile, then cut
in time (``calibration.time_split``): the first --train-fraction of every clip trains
the expert, the rest of every clip is scored (five clips are too few to hold whole
speakers out). Synthetic speaker: a ``daetalker synth`` corpus of --synth-minutes,
preprocessed; the expert trains on its train split and scores val + test.

For every held-out video: LSE with its own audio, its audio rolled by +-10 frames and
another held-out clip's audio (columns: the protocol's LSE-D, LSE-C, AV offset, and
D(0) / C(0), the same curve read at offset 0); then the AV offset reported when the
audio is rolled by k = -5..5 frames. Ends with the properties that fail (none: calibrated).

    python bench/calibrate_syncnet.py [--real DIR] [--work DIR] [--profile tiny] [--set syncnet.max_steps=N]
                                      [--train-fraction 0.5] [--synth-minutes 0.5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from daetalker.config import load_config
from daetalker.evaluate.calibration import (
    HeldOutClip,
    calibrate,
    failures,
    format_recovery,
    format_rows,
    load_heldout,
    offset_recovery,
    time_split,
)
from daetalker.evaluate.syncnet import load_syncnet
from daetalker.evaluate.syncnet_train import train_syncnet

SHOWN = 12  # failing properties printed (all go to --json)


def run_case(name: str, data: Path, splits: tuple[str, ...], out: Path, cfg) -> dict[str, Any]:
    """Train on ``data``'s train split, score ``splits``; print and return the tables."""
    t0 = time.perf_counter()
    result = train_syncnet(data, out, cfg.syncnet, progress=False)
    train_s = time.perf_counter() - t0
    model = load_syncnet(result.checkpoint)
    clips: list[HeldOutClip] = load_heldout(data, splits)
    rows = calibrate(model, clips)
    recovery = {c.clip_id: offset_recovery(model, c) for c in clips}
    failed = failures(rows, recovery)
    print(f"\n## {name}: SyncNet sha256 {result.sha256} ({cfg.syncnet.max_steps} steps, {train_s:.0f} s; "
          f"held-out pair accuracy {json.dumps({s: round(m['accuracy'], 3) for s, m in result.heldout.items()})})")
    print(format_rows(rows))
    print(f"\nAV offset reported for audio rolled by k frames ({name}):")
    print(format_recovery(recovery))
    print(f"\n{len(failed)} calibration properties fail ({name})" + "".join(f"\n  {f}" for f in failed[:SHOWN])
          + (f"\n  ... and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""))
    return {"syncnet_sha256": result.sha256, "steps": cfg.syncnet.max_steps, "train_seconds": round(train_s, 1),
            "heldout": result.heldout, "failures": failed, "recovery": recovery,
            "rows": [{"clip_id": r.clip_id, "other_clip": r.other_clip,
                      **{k: s.as_dict() for k, s in r.scores.items()}}
                     for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=os.environ.get("DAETALKER_REAL_CLIPS"),
                    help="folder of real clips [$DAETALKER_REAL_CLIPS]; without it only the synthetic case runs")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temp folder)")
    ap.add_argument("--profile", default="tiny", help="profile: preprocessing and SyncNet sizes")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    ap.add_argument("--train-fraction", type=float, default=0.5, help="share of each real clip the expert trains on")
    ap.add_argument("--synth-minutes", type=float, default=0.5, help="synthetic corpus length (0: skip)")
    ap.add_argument("--synth-seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, None, ["syncnet.mlflow=false", "syncnet.eval_every=0", *args.overrides])
    work = args.work or Path(tempfile.mkdtemp(prefix="calibrate-syncnet-"))
    from daetalker.data.preprocess import preprocess_dataset

    print(f"# profile {args.profile}, overrides {args.overrides}, work {work}")
    print(f"# frames: {cfg.preprocess.resolution} px face crops, 25 fps, decoded from the sources and stored raw; "
          "audio: 16 kHz mono PCM16 wav")
    figures: dict[str, Any] = {"profile": args.profile, "overrides": args.overrides}
    if args.real:
        preprocess_dataset(args.real, work / "real-data", cfg.preprocess, workers=1)
        split = time_split(work / "real-data", work / "real-split", args.train_fraction)
        figures["real"] = run_case(f"real clips, trained on the first {args.train_fraction:.0%} of each",
                                   split, ("test",), work / "real-syncnet", cfg)
    if args.synth_minutes > 0:
        from daetalker.synth.corpus import synth_corpus

        synth_corpus(work / "synth-src", args.synth_minutes, args.synth_seed, cfg.synth, progress=False)
        preprocess_dataset(work / "synth-src", work / "synth-data", cfg.preprocess, workers=1)
        figures["synthetic"] = run_case("synthetic speaker, held-out clips", work / "synth-data", ("val", "test"),
                                        work / "synth-syncnet", cfg)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
