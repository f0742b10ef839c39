"""Checkpoints: state_dict + channel plan + config, written atomically, read with weights_only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import CheckpointError
from compress.hyper import HyperGenerator
from compress.models import build_generator, validate_plan
from compress.plan import ChannelPlan
from coronet.files import atomic_write_bytes

FORMAT = "coronetgan.checkpoint"
MAX_PARAMS = 2_000_000_000  # the largest model a checkpoint may describe (8 GB of float32)
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (`kind` "generator" or "hyper") and its metadata."""

    kind: str
    arch: str
    plan: ChannelPlan
    model: nn.Module
    config: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any] | None = None) -> Path:
    """Save a generator built by `build_generator` or a `HyperGenerator` (atomically)."""
    plan = getattr(model, "plan", None)
    if not isinstance(plan, ChannelPlan):
        raise CheckpointError("only generators built from a channel plan can be checkpointed")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "hyper" if isinstance(model, HyperGenerator) else "generator",
        "arch": model.arch,
        "plan": plan.to_dict(),
        "config": dict(config or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if isinstance(model, HyperGenerator):
        payload["hyper"] = {"embedding_dim": model.embedding_dim, "threshold": model.threshold}
    path = Path(path)
    atomic_write_bytes(path, lambda f: torch.save(payload, f))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint`, untrusted: `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; run the search stage first or fix the path")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt zip or pickle data
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({reason}); re-create it from its stage"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CoroNet checkpoint (no {FORMAT!r} marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, this code reads {VERSION}")
    try:
        arch, kind = payload["arch"], payload["kind"]
        plan = validate_plan(ChannelPlan.from_dict(payload["plan"]), arch)
        if kind == "hyper":
            meta = payload["hyper"]
            build = lambda: HyperGenerator(arch, plan, int(meta["embedding_dim"]), float(meta["threshold"]))  # noqa: E731
        elif kind == "generator":
            build = lambda: build_generator(arch, plan)  # noqa: E731
        else:
            raise CheckpointError(f"{path} holds an unknown model kind {kind!r}")
        with torch.device("meta"):  # its size first, allocating nothing: a crafted plan could ask for 96 GB
            n_params = sum(p.numel() for p in build().parameters())
        if n_params > MAX_PARAMS:
            raise CheckpointError(f"{path} describes a {kind} of {n_params / 1e9:.1f} G parameters, past the "
                                  f"{MAX_PARAMS / 1e9:.0f} G this tool builds: a damaged or crafted file")  # fmt: skip
        model: nn.Module = build()
        state = payload["state_dict"]
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks the field {exc.args[0]!r}; re-create it") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise CheckpointError(f"{path}: weights do not fit its plan ({detail[:200]})") from None
    model.to(map_location)
    return Checkpoint(kind, arch, plan, model, dict(payload.get("config", {})))
