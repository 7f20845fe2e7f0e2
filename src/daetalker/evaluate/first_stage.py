"""How much of a speaker's face a first-stage autoencoder keeps: the ceiling of a latent-space DAE (issue 16).

A latent-space talker can only show what the autoencoder's decoder draws, so
these figures bound everything downstream. Up to ``frames`` held-out frames
(val/test; training frames when there is no held-out split) are encoded and
decoded once and each reconstruction is scored against its frame:

- ``psnr`` (dB, capped at ``PSNR_CAP``) and ``ssim``: ``image_metrics`` on the
  uint8 frames;
- ``mouth_pearson``: Pearson r between the mouth opening measured on the
  reconstructions and on the real frames, both measured the way evaluation
  measures generated frames (``FrameLabeller``: BlazeFace, Face Mesh,
  ``mouth_opening`` at the labelling size), with ``m_lmd`` (mouth landmark
  distance) and ``pose_mae`` from ``versus_ground_truth`` and the face-found
  rates of both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from daetalker.config.preprocess import PreprocessConfig
from daetalker.models.first_stage import FirstStage
from daetalker.models.images import to_uint8

PSNR_CAP = 100.0  # dB: identical images would be inf, which JSON and MLflow do not hold


def score_first_stage(model: FirstStage, data_dir: Path, *, frames: int = 256, pcfg: PreprocessConfig | None = None,
                      bf16: bool = False) -> dict[str, Any]:  # fmt: skip
    """The held-out report of ``model`` on ``data_dir`` (see the module docstring); NaN where no face is found."""
    from daetalker.evaluate.evaluate import FrameLabeller, versus_ground_truth
    from daetalker.evaluate.image_metrics import psnr, ssim
    from daetalker.train.autoencoder_trainer import reconstruct
    from daetalker.train.frames_dataset import held_out_frames

    x, split = held_out_frames(Path(data_dir), frames, model.image_size)
    real, fake = to_uint8(x), to_uint8(reconstruct(model, x, bf16))  # (N, P, P, 3)
    out: dict[str, Any] = {"frames": len(x), "split": split, "psnr": min(psnr(fake, real), PSNR_CAP),
                           "ssim": ssim(fake, real)}
    labeller = FrameLabeller(pcfg or PreprocessConfig())
    gt, gen = labeller(real, {}), labeller(fake, {})
    versus = versus_ground_truth(gen, gt)
    out.update({k: versus[k] for k in ("mouth_pearson", "m_lmd", "pose_mae")},
               face_found_rate=float(gen.found.mean()), face_found_rate_real=float(gt.found.mean()))
    return out


def finite_metrics(report: dict[str, Any], prefix: str = "heldout_") -> dict[str, float]:
    """The report's finite numbers as MLflow metrics (``heldout_psnr``, ...)."""
    return {prefix + k: float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
