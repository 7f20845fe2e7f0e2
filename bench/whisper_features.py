"""Whisper tiny.en features (s2l.features=whisper-tiny): encoder speed and agreement with ctranslate2.

Speed: seconds of audio featurised per second of wall time (front-end + encoder,
``WhisperFeatures.__call__``), median of --runs, for a 3 s clip (a GRID sentence)
and 60 s (two 30 s windows and one overlap), in float32 and under bf16 autocast,
with bf16's deviation from float32 (cosine per frame). Agreement: the same
log-mel through daetalker's encoder and ctranslate2's (float32 compute on the
fp16 weights), over --runs renderings: max and mean |difference|, and the
largest difference in units of fp16 resolution at the value's scale,
2^-10 (|ref| + 1); how far each is from the same weights run in float64;
and the encoders' own speed (log-mel given). Also: features of 3 s encoded alone (as here)
against Whisper's 30 s zero-padded input, per frame. Speech: espeak-ng (the synthetic speaker's voice).

    python bench/whisper_features.py [--runs 5] [--threads N] [--parts speed padding agreement]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import daetalker  # noqa: F401  (sets GOMP_SPINCOUNT before torch loads libgomp)

import numpy as np
import torch
from scipy.signal import resample_poly

from daetalker.assets import asset_path
from daetalker.features.whisper import WHISPER_ASSET, WhisperFeatures, whisper_log_mel
from daetalker.synth.speech import synthesize

TEXT = ("Bin blue at f two now. Place green by the river soon, and set white with seven again. "
        "Lay red in g nine please; the quick brown fox jumps over the lazy dog.")


def speech(seconds: float) -> np.ndarray:
    """espeak-ng speech tiled to ``seconds`` (each call renders anew: espeak's output varies from call to call)."""
    utt = synthesize(TEXT)
    wav = resample_poly(utt.samples / 32768.0, 320, 441).astype(np.float32)
    return np.tile(wav, int(seconds * 16000) // len(wav) + 1)[: int(seconds * 16000)]


def median_rate(fn, seconds: float, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return seconds / statistics.median(times)


def speed(runs: int) -> None:
    fp32, bf16 = WhisperFeatures(), WhisperFeatures(bf16=True)
    print("| audio | log-mel alone (s audio / s) | float32 | bf16 autocast | bf16 / fp32 | "
          "bf16 vs fp32 cosine (mean, min) |")
    print("|---|---|---|---|---|---|")
    for seconds in (3.0, 60.0):
        wav = speech(seconds)
        mel = median_rate(lambda: whisper_log_mel(torch.from_numpy(wav)), seconds, runs)
        a = median_rate(lambda: fp32(wav), seconds, runs)
        b = median_rate(lambda: bf16(wav), seconds, runs)
        x, y = fp32(wav), bf16(wav)
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        print(f"| {seconds:.0f} s | {mel:.0f} | {a:.1f} | {b:.1f} | {b / a:.2f} | {cos.mean():.4f}, {cos.min():.4f} |")


def padding(runs: int) -> None:
    """Whisper pads every input to 30 s; daetalker encodes only the audio. How far apart the two are, per frame."""
    ext = WhisperFeatures()
    print("| audio | unpadded vs 30 s padded: cosine mean | 5th percentile | min |")
    print("|---|---|---|---|")
    cosines = []
    for _ in range(runs):
        wav = speech(3.0)
        alone = ext(wav)
        advanced = np.concatenate([wav[160:], np.zeros(160 + 480000 - len(wav), np.float32)])
        with torch.inference_mode():
            padded = ext.encoder(whisper_log_mel(torch.from_numpy(advanced))[None])[0, : len(alone)].numpy()
        cosines.append((alone * padded).sum(1) / np.linalg.norm(alone, axis=1) / np.linalg.norm(padded, axis=1))
    cos = np.concatenate(cosines)
    print(f"| speech 3 s x {runs} | {cos.mean():.3f} | {np.percentile(cos, 5):.3f} | {cos.min():.3f} |")


def agreement(runs: int) -> None:
    """Over ``runs`` renderings per length: the worst and median max |difference| (they vary with the input)."""
    import ctranslate2

    with tempfile.TemporaryDirectory() as tmp:
        for name, dst in [(WHISPER_ASSET, "model.bin"), ("whisper_tiny_en_ct2_config.json", "config.json"),
                          ("whisper_tiny_en_ct2_vocabulary.txt", "vocabulary.txt")]:
            os.symlink(asset_path(name), Path(tmp) / dst)
        theirs = ctranslate2.models.Whisper(tmp, device="cpu", compute_type="float32",
                                            intra_threads=torch.get_num_threads())
        ours = WhisperFeatures().encoder
        exact = copy.deepcopy(ours).double()  # the same fp16 weights, float64 arithmetic
        print("| input | frames | max abs diff (worst, median) | mean abs diff | mean abs value | "
              "worst diff / fp16 step | max off float64: ours, ctranslate2 | ours (s audio / s) | "
              "ctranslate2 (s audio / s) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for seconds in (3.0, 30.0):
            maxes, means, values, steps, off64 = [], [], [], [], ([], [])
            for _ in range(runs):
                mel = whisper_log_mel(torch.from_numpy(speech(seconds)))[None]  # (1, 80, 100 s)
                view = lambda: ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))  # noqa: E731
                ref = np.asarray(theirs.encode(view()))
                with torch.inference_mode():
                    got, gt = ours(mel).numpy(), exact(mel.double()).numpy()
                err = np.abs(got - ref)
                off64[0].append(float(np.abs(got - gt).max()))
                off64[1].append(float(np.abs(ref - gt).max()))
                maxes.append(float(err.max()))
                means.append(float(err.mean()))
                values.append(float(np.abs(ref).mean()))
                steps.append(float((err / (2.0**-10 * (np.abs(ref) + 1))).max()))
            with torch.inference_mode():
                ours_rate = median_rate(lambda: ours(mel), seconds, runs)
            ct2_rate = median_rate(lambda: theirs.encode(view()), seconds, runs)
            print(f"| speech {seconds:.0f} s | {ref.shape[1]} | {max(maxes):.2e}, {statistics.median(maxes):.2e} | "
                  f"{statistics.median(means):.2e} | {statistics.median(values):.3f} | {max(steps):.3f} | "
                  f"{max(off64[0]):.1e}, {max(off64[1]):.1e} | {ours_rate:.1f} | {ct2_rate:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--parts", nargs="+", default=["speed", "padding", "agreement"],
                    choices=["speed", "padding", "agreement"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}")
    for part in args.parts:
        {"speed": speed, "padding": padding, "agreement": agreement}[part](args.runs)
        print()


if __name__ == "__main__":
    main()
