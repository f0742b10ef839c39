"""Slimming: turn a hyper generator into a plain generator with the pruned channels removed."""

from __future__ import annotations

import torch
from torch import nn

from compress.hyper import HyperGenerator
from compress.layers import GROUP_ATTR, HyperConv
from compress.models import build_generator


def _input_indices(hyper: HyperGenerator, groups: tuple[str, ...]) -> torch.Tensor:
    """Kept channel indices of a concatenation of groups, in the concatenated numbering."""
    parts, offset = [], 0
    for g in groups:
        parts.append(hyper.kept_indices(g) + offset)
        offset += hyper.plan[g]
    return torch.cat(parts)


@torch.no_grad()
def slim_generator(hyper: HyperGenerator) -> nn.Module:
    """Compute every kept weight once from the hypernetwork and build the slim generator.

    The result is a plain `nn.Module` (no hypernetwork parameter) with `.plan` the pruned plan;
    it computes what `hyper` computes, up to float32 rounding.
    """
    plan = hyper.pruned_plan()
    slim = build_generator(hyper.arch, plan)
    first = next(hyper.parameters())
    slim.to(device=first.device, dtype=first.dtype)
    targets = dict(slim.named_modules())
    weights = hyper.generate_weights()
    for name, module in hyper.net.named_modules():
        target = targets[name]
        if isinstance(module, HyperConv):
            spec = module.spec
            out_idx = hyper.kept_indices(spec.out_group)
            in_idx = _input_indices(hyper, spec.in_groups)
            weight = weights[module.index][out_idx][:, in_idx]
            target.weight.copy_(weight.transpose(0, 1) if spec.transposed else weight)
            if module.bias is not None:
                target.bias.copy_(module.bias[out_idx])
        elif (group := getattr(module, GROUP_ATTR, None)) is not None:
            idx = hyper.kept_indices(group)
            for pname, param in module.named_parameters(recurse=False):
                getattr(target, pname).copy_(param[idx])
            for bname, buf in module.named_buffers(recurse=False):
                getattr(target, bname).copy_(buf[idx] if buf.dim() > 0 else buf)
    slim.train(hyper.training)
    return slim
