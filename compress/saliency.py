"""How much each channel of a trained generator matters, per channel group, from its weights.

Measures (all summed over every conv that shares a group, e.g. every writer of the ResNet trunk):
- `out`: L1 norm of the weights that write the channel (the classic L1-norm pruning score). A
  norm layer right after the conv (InstanceNorm in the ResNet) rescales the channel, so in a
  normalised network this says little about the channel's effect.
- `in`: L1 norm of the weights that read the channel: how strongly the next layers use it,
  which a norm before them does not hide.
- `inout`: the product of both, each divided by its group mean.

The search starts its latents at the saliency divided by its group mean (`latents_from_saliency`),
so the proximal step, which shrinks every latent by the same amount, reaches the least salient
channels first.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.plan import ChannelPlan

MEASURES = ("out", "in", "inout")


def _abs_weight(module: nn.Module) -> tuple[torch.Tensor, int, int]:
    """|weight| as (C_out, C_in, k, k), whatever the conv's direction."""
    w = module.weight.detach().abs()
    if module.spec.transposed:
        w = w.transpose(0, 1)
    return w, w.shape[0], w.shape[1]


@torch.no_grad()
def channel_saliency(model: nn.Module, measure: str = "in") -> dict[str, torch.Tensor]:
    """Per prunable group of `model.plan`, one non-negative score per channel."""
    if measure not in MEASURES:
        raise ValueError(f"unknown saliency measure {measure!r}; choose one of {', '.join(MEASURES)}")
    plan: ChannelPlan = model.plan
    writes = {g: torch.zeros(plan[g]) for g in plan.prunable}
    reads = {g: torch.zeros(plan[g]) for g in plan.prunable}
    for module in model.modules():
        spec = getattr(module, "spec", None)
        if spec is None:
            continue
        w, _, _ = _abs_weight(module)
        if spec.out_group in writes:
            writes[spec.out_group] += w.sum(dim=(1, 2, 3)).cpu()
        offset = 0
        per_input = w.sum(dim=(0, 2, 3)).cpu()
        for g in spec.in_groups:
            if g in reads:
                reads[g] += per_input[offset : offset + plan[g]]
            offset += plan[g]
    if measure == "out":
        return writes
    if measure == "in":
        return reads
    return {g: _unit_mean(writes[g]) * _unit_mean(reads[g]) for g in plan.prunable}


def _unit_mean(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.mean().clamp_min(1e-12)


def latents_from_saliency(saliency: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Latent vectors with mean 1 in every group, in proportion to the saliency (a zero score
    gets a small positive latent, so no channel starts pruned)."""
    return {g: _unit_mean(s).clamp_min(1e-3) for g, s in saliency.items()}
