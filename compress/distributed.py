"""Data-parallel training with `torchrun`: gradients are averaged by DDP, so every rank takes
the same optimizer step and then the same (deterministic) proximal step; the latents, and with
them the pruned plan, stay identical on every rank without extra communication."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (no-op without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """The model as the training step should call it: DDP-wrapped when there are several ranks."""
    if info.world_size <= 1:
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
