"""A source format's key layout: where each conv and norm of one of our generators sits in a
foreign state_dict. Mapping, legacy-key clean-up and the mismatch report are shared here; the
layouts themselves are data in one module per source format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

LEGACY_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Layout:
    """`convs` / `norms`: source key prefixes, in the order our generator holds its convs and its
    norms with state (BatchNorm); `stateless_norms`: where norms without state sit (non-affine
    InstanceNorm), whose legacy running statistics are dropped as the official loader does."""

    source: str
    arch: str
    sizes: dict[str, int]
    convs: list[str]
    norms: list[str]
    stateless_norms: list[str] = field(default_factory=list)


def our_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of our generator's convs (in application order) and of its norms with state."""
    convs = [name for name, m in model.named_modules() if getattr(m, "spec", None) is not None]
    norms = [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return convs, norms


def key_map(layout: Layout, model: nn.Module) -> dict[str, str]:
    """source key -> our key for every tensor our generator holds."""
    convs, norms = our_layers(model)
    if len(convs) != len(layout.convs) or len(norms) != len(layout.norms):
        raise ValueError(f"{layout.source}: {len(layout.convs)} convs / {len(layout.norms)} norms in the layout, "
                         f"{len(convs)} / {len(norms)} in the generator")  # fmt: skip
    ours = model.state_dict()
    mapping = {}
    for src, dst in [*zip(layout.convs, convs, strict=True), *zip(layout.norms, norms, strict=True)]:
        for key in ours:
            if key.startswith(dst + ".") and "." not in key[len(dst) + 1 :]:
                mapping[f"{src}.{key[len(dst) + 1 :]}"] = key
    return mapping


def drop_legacy_norm_keys(state: dict[str, torch.Tensor], layout: Layout) -> int:
    """Remove running statistics that old PyTorch versions saved for InstanceNorm layers (the
    official `load_networks` deletes them too); returns how many were removed."""
    legacy = [f"{p}.{b}" for p in layout.stateless_norms for b in LEGACY_NORM_BUFFERS]
    found = [k for k in legacy if k in state]
    for key in found:
        del state[key]
    return len(found)


def fill_batch_counts(state: dict[str, torch.Tensor], mapping: Mapping[str, str]) -> int:
    """BatchNorm layers saved before PyTorch 0.4.1 have no `num_batches_tracked`; it only
    matters for momentum=None, so it starts at 0 as in a fresh layer."""
    missing = [k for k in mapping if k.endswith(".num_batches_tracked") and k not in state]
    for key in missing:
        state[key] = torch.tensor(0, dtype=torch.long)
    return len(missing)


def mismatch(
    state: Mapping[str, torch.Tensor], mapping: Mapping[str, str], ours: Mapping[str, torch.Tensor], layout: Layout
) -> str:
    """'' when `state` has exactly the mapped keys at our shapes, else what does not fit."""
    missing = [k for k in mapping if k not in state]
    extra = [k for k in state if k not in mapping]
    norm_weights = [k for k in extra if k.rsplit(".", 1)[0] in layout.stateless_norms]
    if norm_weights:
        return (f"its norm layer {norm_weights[0].rsplit('.', 1)[0]!r} has weights (a BatchNorm or affine norm); "
                "ResNet generators are read with InstanceNorm without affine parameters (norm=instance)")  # fmt: skip
    if missing and all(k.rsplit(".", 1)[0] in layout.norms for k in missing):
        return (f"its norm layers hold no weights ({missing[0]!r} is missing: InstanceNorm, norm=instance); "
                f"{layout.arch} generators are read with BatchNorm (norm=batch)")  # fmt: skip
    if missing:
        return f"key {missing[0]!r} is missing" + (f" ({len(missing)} keys missing)" if len(missing) > 1 else "")
    if extra:
        return f"unexpected key {extra[0]!r}" + (f" ({len(extra)} unexpected keys)" if len(extra) > 1 else "")
    for src, dst in mapping.items():
        have, want = tuple(state[src].shape), tuple(ours[dst].shape)
        if have != want:
            return f"{src!r} has shape {list(have)}, the layout needs {list(want)}"
    return ""
