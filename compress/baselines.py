"""Baselines at equal MACs, for an honest comparison with CoroNetGAN:

(a) uniform width scaling: every prunable group scaled by one factor, trained from scratch;
(b) L1-norm channel pruning: rank the channels of a trained dense generator by the L1 norm of
    the weights that write them, keep the same fraction of every group, fine-tune.

Torch-Pruning could do (b)'s slicing, but the channel groups are already explicit in the plan
(trunk and skips included), so slicing is a short loop here rather than a dependency that would
have to rediscover them by tracing.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.macs import PlanCost
from compress.plan import ChannelPlan
from compress.slim import slice_generator


def _round(width: float, full: int, round_to: int) -> int:
    return int(min(full, max(round_to, round_to * round(width / round_to))))


def uniform_plan(full: ChannelPlan, cost: PlanCost, target: float, round_to: int = 1) -> ChannelPlan:
    """The largest uniform scaling of every prunable group whose MACs ratio is at most `target`."""

    def widths(scale: float) -> dict[str, int]:
        return {g: _round(full[g] * scale, full[g], round_to) for g in full.prunable}

    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost.ratio({**full.widths, **widths(mid)}) <= target else (lo, mid)
    return full.with_widths(widths(lo))


def l1_importance(dense: nn.Module) -> dict[str, torch.Tensor]:
    """Per group, the L1 norm of the weights writing each channel (summed over the convs that
    share the group, e.g. every conv writing the ResNet trunk)."""
    plan: ChannelPlan = dense.plan
    scores = {g: torch.zeros(plan[g]) for g in plan.prunable}
    for module in dense.modules():
        spec = getattr(module, "spec", None)
        if spec is None or spec.out_group not in scores:
            continue
        out_dim = 1 if spec.transposed else 0
        w = module.weight.detach().abs()
        scores[spec.out_group] += w.sum(dim=[d for d in range(w.dim()) if d != out_dim]).cpu()
    return scores


def l1_prune(dense: nn.Module, cost: PlanCost, target: float, round_to: int = 1) -> nn.Module:
    """Keep the top-L1 channels of every group, the same fraction everywhere, at `target` MACs."""
    plan = uniform_plan(dense.plan, cost, target, round_to)
    scores = l1_importance(dense)
    keep = {g: torch.sort(torch.topk(scores[g], plan[g]).indices).values for g in plan.prunable}
    return slice_generator(dense, keep)
