"""Exponential moving average of every weight of a model (encoder included, method.md section 2)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """Keeps a frozen copy of ``model`` whose parameters trail the live ones.

    ``decay_n = min(decay, (1 + n) / (10 + n))`` when ``warmup`` is on, so a
    short run is not dominated by its random initialisation. Buffers are copied
    from the live model unless ``copy_buffers`` is off (the DAE's latent
    statistics belong to the EMA encoder itself and are calibrated on it).
    """

    def __init__(self, model: nn.Module, *, decay: float, warmup: bool = False, copy_buffers: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.copy_buffers = copy_buffers
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_params = list(self.model.parameters())
        live_params = [p.detach() for p in model.parameters()]
        assert len(ema_params) == len(live_params)
        # ema = d * ema + (1 - d) * live, on all tensors at once
        torch._foreach_lerp_(ema_params, live_params, 1.0 - d)
        if self.copy_buffers:
            for b_ema, b in zip(self.model.buffers(), model.buffers()):
                b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
