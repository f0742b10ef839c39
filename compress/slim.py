"""Slimming: remove channels from a generator. One slicer serves both the hyper generator
(`slim_generator`) and the L1-pruning baseline (`slice_generator` on a dense model)."""

from __future__ import annotations

import torch
from torch import nn

from compress.hyper import HyperGenerator
from compress.layers import GROUP_ATTR, HyperConv
from compress.models import build_generator
from compress.plan import ChannelPlan


@torch.no_grad()
def slice_generator(dense: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A plain generator holding only the `keep` channels (sorted indices per group) of the
    plain generator `dense`; groups not in `keep` stay whole."""
    plan: ChannelPlan = dense.plan
    device = next(dense.parameters()).device
    index = {g: keep.get(g, torch.arange(plan[g])).to(device) for g in plan.widths}
    small = build_generator(plan.arch, plan.with_widths({g: len(index[g]) for g in plan.prunable})).to(device)
    targets = dict(small.named_modules())
    for name, module in dense.named_modules():
        target = targets[name]
        spec = getattr(module, "spec", None)
        if spec is not None:
            parts, offset = [], 0
            for g in spec.in_groups:
                parts.append(index[g] + offset)
                offset += plan[g]
            in_idx, out_idx = torch.cat(parts), index[spec.out_group]
            w = module.weight
            target.weight.copy_(w[in_idx][:, out_idx] if spec.transposed else w[out_idx][:, in_idx])
            if module.bias is not None:
                target.bias.copy_(module.bias[out_idx])
        elif (group := getattr(module, GROUP_ATTR, None)) is not None:
            for pname, param in module.named_parameters(recurse=False):
                getattr(target, pname).copy_(param[index[group]])
            for bname, buf in module.named_buffers(recurse=False):
                getattr(target, bname).copy_(buf[index[group]] if buf.dim() > 0 else buf)
    return small.train(dense.training)


@torch.no_grad()
def slim_generator(hyper: HyperGenerator) -> nn.Module:
    """Compute every weight once from the hypernetwork and keep the unpruned channels.

    The result is a plain `nn.Module` (no hypernetwork parameter) with `.plan` the pruned plan;
    it computes what `hyper` computes, up to float32 rounding.
    """
    hyper.pruned_plan()  # a clear error if a group has no channel left
    first = next(hyper.parameters())
    dense = build_generator(hyper.arch, hyper.plan).to(device=first.device, dtype=first.dtype)
    weights = hyper.generate_weights()
    targets = dict(dense.named_modules())
    for name, module in hyper.net.named_modules():
        target = targets[name]
        if isinstance(module, HyperConv):
            w = weights[module.index]
            target.weight.copy_(w.transpose(0, 1) if module.spec.transposed else w)
            if module.bias is not None:
                target.bias.copy_(module.bias)
        else:
            for pname, param in module.named_parameters(recurse=False):
                getattr(target, pname).copy_(param)
            for bname, buf in module.named_buffers(recurse=False):
                getattr(target, bname).copy_(buf)
    dense.train(hyper.training)
    return slice_generator(dense, {g: hyper.kept_indices(g) for g in hyper.plan.prunable})
