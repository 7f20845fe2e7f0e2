"""Where and at what precision the networks run: device choice and bf16 autocast."""

from __future__ import annotations

import contextlib

import torch


def pick_device(local_rank: int = 0, device: str | None = None) -> torch.device:
    """``device`` if given, else this rank's CUDA device, else the CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast only on CUDA devices with bf16 (on CPUs it is slower and breaks bitwise resume)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
