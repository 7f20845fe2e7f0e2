"""DDP set-up for trainers launched by ``torchrun`` (or as one plain process).

torchrun exports RANK, WORLD_SIZE and LOCAL_RANK; without them the trainer is
a single process and nothing here touches torch.distributed. gloo on CPU,
nccl on GPU. Only rank 0 writes checkpoints, logs and files (``is_main``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from daetalker.models.device import pick_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun described, or return a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(local_rank, device)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks, else ``model`` itself."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = info.device
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging: every rank must call it)."""
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's value on every rank (e.g. the path of the checkpoint resumed from)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
