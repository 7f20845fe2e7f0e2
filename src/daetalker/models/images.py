"""Frames between their stored form (uint8 RGB, channels last) and the networks' (float in [-1, 1], channels first)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_model_range(frames: np.ndarray | torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """uint8 (..., R, R, 3) RGB -> float32 (..., 3, S, S) in [-1, 1], resized to S if given."""
    x = torch.as_tensor(np.asarray(frames))
    assert x.dtype == torch.uint8 and x.shape[-1] == 3, (x.dtype, tuple(x.shape))
    x = x.movedim(-1, -3).float().div_(127.5).sub_(1.0)
    if image_size is not None and x.shape[-1] != image_size:
        lead = x.shape[:-3]
        x = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(image_size, image_size), mode="bilinear",
                          antialias=True, align_corners=False).clamp_(-1, 1)
        x = x.reshape(*lead, 3, image_size, image_size)
    return x


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, S, S) in [-1, 1] -> uint8 (..., S, S, 3) RGB."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()
