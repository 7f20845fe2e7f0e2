"""The registry's vocabulary: model names, aliases, tag keys, and its user error."""

from __future__ import annotations

import math
import re
from typing import Mapping

from daetalker.errors import DaetalkerError

CHAMPION = "champion"  # the version ``generate`` serves
CHALLENGER = "challenger"  # the most recent candidate that went through the gate
AUDIT_EXPERIMENT = "daetalker-audit"
METRIC_TAG = "metric."  # version tag prefix: metric.lse_c = "7.1"
GATE_METRICS = ("lse_c", "lse_d", "fid", "pose_mae", "face_found_rate", "lse_c_vs_gt")
# Evaluation figures copied to version tags for reading, not gated.
INFO_METRICS = ("m_lmd", "psnr", "ssim", "beat_align", "av_offset", "pose_std")

_SPEAKER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class RegistryError(DaetalkerError):
    """A registry request cannot be done as asked (unknown model or version, bad argument)."""


def model_name(speaker: str) -> str:
    """``talker-<speaker>``: one registered model per speaker. Accepts the full name too."""
    s = speaker.removeprefix("talker-")
    if not _SPEAKER.match(s):
        raise RegistryError(
            f"speaker {speaker!r}: use lower-case letters, digits, '-' or '_' (at most 63, starting with a letter or digit)"
        )
    return f"talker-{s}"


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    """``{'metric.lse_c': '7.1'}`` -> ``{'lse_c': 7.1}``; unparsable values become NaN (fail the gate)."""
    out = {}
    for k, v in tags.items():
        if k.startswith(METRIC_TAG):
            try:
                out[k[len(METRIC_TAG) :]] = float(v)
            except ValueError:
                out[k[len(METRIC_TAG) :]] = math.nan
    return out
