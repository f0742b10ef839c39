"""Data-parallel training with `torchrun`: gradients are averaged by DDP, so every rank takes
the same optimizer step and then the same (deterministic) proximal step; the latents, and with
them the pruned plan, stay identical on every rank without extra communication (checked at
every search check: `latent_spread`).

The rules the pipeline follows under `torchrun --nproc_per_node N`:
- every rank trains on its own shard of the data (`DistributedSampler`), `data.batch_size`
  images per rank, so the effective batch is N x data.batch_size; the learning rates follow
  `train.lr_scaling` ("none": as configured, the pix2pix/CycleGAN practice; "linear": times N);
- rank 0 alone writes files and stamps and prints; the other ranks wait for it and read what
  it wrote; a stage that trains nothing runs on rank 0 only;
- gloo on CPUs, NCCL on GPUs (each rank on cuda:LOCAL_RANK).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def launched() -> bool:
    """Whether this process is one of several ranks that `torchrun` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: under torchrun a bare 'cuda' means this rank's own GPU."""
    if device.type == "cuda" and device.index is None and launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (no-op without it)."""
    if not launched():
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def current() -> DistInfo:
    """This process's rank and the number of ranks (0 of 1 outside torchrun)."""
    if not dist.is_initialized():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size())


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """The model as the training step should call it: DDP-wrapped when there are several ranks."""
    if info.world_size <= 1:
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (itself outside torchrun)."""
    if current().world_size <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def first_error(error: str | None) -> str | None:
    """Every rank's outcome of a step they all took (None: fine); returns the first rank's error,
    the same on every rank, so that all of them stop together with one message."""
    if current().world_size <= 1:
        return error
    errors: list[str | None] = [None] * current().world_size
    dist.all_gather_object(errors, error)
    return next((e for e in errors if e), None)


def all_finite(values: Sequence[float], device: torch.device) -> bool:
    """Whether `values` are finite on every rank: a loss that diverges on one rank stops all
    of them at the same step (not one rank while the others wait for its gradients)."""
    finite = all(v == v and abs(v) != float("inf") for v in values)
    if current().world_size <= 1:
        return finite
    flag = torch.tensor([1.0 if finite else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


@torch.no_grad()
def spread(tensors: Sequence[torch.Tensor]) -> float:
    """The largest difference between this rank's `tensors` and any other rank's (0.0 when they
    are identical everywhere, and outside torchrun); the same value on every rank."""
    if current().world_size <= 1:
        return 0.0
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    # max(x) - min(x) over ranks, per entry, as one reduction each
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max()) if flat.numel() else 0.0


def lr_factor(rule: str) -> float:
    """How much the configured learning rates are multiplied by under the current ranks."""
    return float(current().world_size) if rule == "linear" else 1.0


def stop_once_on_signals() -> None:
    """Ctrl-C in a terminal reaches every rank, and torchrun then sends each one SIGINT (or
    SIGTERM) again: the first one interrupts (KeyboardInterrupt, so the search saves its state),
    later ones are ignored so that they cannot cut that save short."""

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def report_error(message: str) -> None:
    """Under torchrun: leave `message` where the launcher looks for a rank's error, so that its
    failure summary names the cause instead of pointing to a traceback that does not exist."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path and launched():
        with contextlib.suppress(OSError), open(path, "w") as f:  # the message is on stderr anyway
            json.dump({"message": message, "timestamp": int(time.time())}, f)


def finish(clean: bool = True) -> None:
    """Leave the process group (torch warns at exit otherwise); when every rank is still there
    (`clean`), all leave together, so the launcher sees no rank go first."""
    if not dist.is_initialized():
        return
    if clean:
        with contextlib.suppress(RuntimeError):  # another rank is gone: nothing to wait for
            dist.barrier()
    dist.destroy_process_group()
