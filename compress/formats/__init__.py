"""Read a trained generator from any file the field uses: `import_generator(path)`.

Our checkpoints; official pytorch-CycleGAN-and-pix2pix state_dicts (`resnet_6blocks`,
`resnet_9blocks` with or without dropout, `unet_128`, `unet_256`; `latest_net_G_A.pth`,
`latest_net_G.pth`); gan-compression's full-size ResNet teacher (the same keys as the official
ResNet with dropout). Keys may carry DataParallel/DDP `module.` prefixes, InstanceNorm layers may
carry the running statistics that old PyTorch saved, BatchNorm layers may lack
`num_batches_tracked`. The architecture and its sizes come from the keys and shapes; sizes a
caller gives must agree with them. Always loaded with `weights_only=True`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import CheckpointError, PlanError
from compress.formats import cyclegan_pix2pix
from compress.formats.layout import Layout, drop_legacy_norm_keys, fill_batch_counts, key_map, mismatch
from compress.models import build_generator, full_plan, get_architecture
from compress.plan import ChannelPlan

# Every known foreign layout, tried in order; each returns None when the keys are not its kind.
LAYOUTS = cyclegan_pix2pix.LAYOUTS
# Where training scripts commonly nest a generator's state_dict inside a bigger checkpoint dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "generator", "netG", "netG_A", "G", "G_A", "G_AB")


@dataclass
class ImportedGenerator:
    """A generator read from a file: our plain generator module (eval mode, `.plan`, `.arch`),
    the format it came in, what the import had to fix on the way, and the training config our
    own checkpoints carry ({} for foreign files)."""

    model: nn.Module
    plan: ChannelPlan
    source: str
    notes: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.plan.sizes.items())
        notes = "; ".join(self.notes)
        return f"{self.plan.arch} ({sizes}) from {self.source}" + (f"; {notes}" if notes else "")


def _load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"generator file {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for junk, truncation and pickled code
        text = str(exc).strip()
        if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
            raise CheckpointError(
                f"{path} holds pickled Python objects ({found.group(1)}: a whole saved model?), not only tensors; "
                "save the generator's state_dict() and import that"
            ) from None
        reason = text.splitlines()[0][:160] if text else type(exc).__name__
        raise CheckpointError(f"{path} is not a PyTorch weights file ({reason})") from None


def _state_dict(payload: Any, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a plain (or wrapped) state_dict, with DataParallel prefixes stripped."""
    notes = []
    if isinstance(payload, dict) and not _is_state_dict(payload):
        if {"state", "param_groups"} <= set(payload):
            raise CheckpointError(f"{path} is an optimizer state (state, param_groups), not a generator's weights")
        inner = [k for k in WRAPPER_KEYS if k in payload and _is_state_dict(payload[k])]
        if not inner:
            keys = ", ".join(sorted(map(str, payload))[:6])
            raise CheckpointError(f"{path} is a dict without generator weights (keys: {keys}); pass a state_dict file")
        notes.append(f"weights read from its {inner[0]!r} entry")
        payload = payload[inner[0]]
    if not isinstance(payload, dict) or not _is_state_dict(payload):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state_dict of a generator")
    state = {str(k): v for k, v in payload.items()}
    stripped = 0
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
        stripped += 1
    if stripped:
        notes.append("stripped the DataParallel 'module.' prefix")
    return state, notes


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _describe_foreign(state: dict[str, torch.Tensor]) -> str:
    """A guess at what a file that fits no generator layout holds, for the error line."""
    convs = [v for v in state.values() if v.dim() == 4]
    if convs and all(w.shape[-1] == 4 for w in convs) and convs[-1].shape[0] == 1:
        return "it looks like a PatchGAN discriminator (4x4 convs ending in 1 channel), not a generator"
    return (f"its {len(state)} keys (first {next(iter(state))!r}) fit neither a ResNet (resnet_Nblocks) nor a "
            "U-Net (unet_128/unet_256) generator of pytorch-CycleGAN-and-pix2pix")  # fmt: skip


def _check_agrees(path: Path, plan: ChannelPlan, arch: str | None, sizes: dict[str, int]) -> None:
    if arch is not None and plan.arch != arch:
        raise CheckpointError(f"{path} holds a {plan.arch} generator, but a {arch} generator was asked for")
    for key, value in sizes.items():
        if key not in plan.sizes:
            allowed = ", ".join(get_architecture(plan.arch).default_sizes)
            raise PlanError(f"unknown size {key!r} for the {plan.arch} generator; allowed: {allowed}")
        if int(value) != plan.sizes[key]:
            raise CheckpointError(
                f"{path} holds a {plan.arch} generator with {key} = {plan.sizes[key]}, but {key} = {value} "
                "was asked for; fix the config's [model] or leave it out to take the file's sizes"
            )


def _ours(path: Path, arch: str | None, sizes: dict[str, int]) -> ImportedGenerator:
    from compress.checkpoint import load_checkpoint
    from compress.hyper import HyperGenerator
    from compress.slim import slim_generator

    loaded = load_checkpoint(path)
    model, notes = loaded.model, ()
    if isinstance(model, HyperGenerator):
        model, notes = slim_generator(model.eval()), ("a hyper generator, slimmed",)
    _check_agrees(path, model.plan, arch, sizes)
    return ImportedGenerator(model.eval(), model.plan, f"a CoroNet {loaded.kind} checkpoint", notes, loaded.config)


def _try_layout(layout: Layout, state: dict[str, torch.Tensor]) -> tuple[nn.Module | None, list[str], str]:
    """(our generator holding `state`'s weights, notes, '') or (None, [], what does not fit)."""
    try:
        model = build_generator(layout.arch, full_plan(layout.arch, **layout.sizes))
    except PlanError as exc:
        return None, [], str(exc)
    state = dict(state)
    mapping = key_map(layout, model)
    notes = []
    if dropped := drop_legacy_norm_keys(state, layout):
        notes.append(f"dropped {dropped} legacy InstanceNorm running-statistics keys")
    if filled := fill_batch_counts(state, mapping):
        notes.append(f"{filled} BatchNorm layers had no num_batches_tracked")
    ours = model.state_dict()
    problem = mismatch(state, mapping, ours, layout)
    if problem:
        return None, [], problem
    model.load_state_dict({dst: state[src].to(ours[dst].dtype) for src, dst in mapping.items()})
    return model.eval(), notes, ""


def import_generator(path: str | Path, arch: str | None = None, **sizes: int) -> ImportedGenerator:
    """Read the generator in `path` (any supported format) as our plain generator with its plan.

    `arch` and `sizes` (e.g. ngf=64, n_blocks=9) are checked against what the file holds: a
    contradiction is an error, never a silent re-shape. Every failure is a `CheckpointError`
    whose one line names the file and what does not fit.
    """
    path = Path(path)
    payload = _load(path)
    if isinstance(payload, dict) and "format" in payload and "state_dict" in payload:
        return _ours(path, arch, sizes)
    state, notes = _state_dict(payload, path)
    problems = []
    for read_layout in LAYOUTS:
        layout = read_layout(state)
        if layout is None:
            continue
        model, fixes, problem = _try_layout(layout, state)
        if model is None:
            problems.append(f"as {layout.source}: {problem}")
            continue
        _check_agrees(path, model.plan, arch, sizes)
        return ImportedGenerator(model, model.plan, layout.source, tuple(notes + fixes))
    detail = problems[0] if problems else _describe_foreign(state)
    raise CheckpointError(f"{path} is not a generator this code can read: {detail}")
