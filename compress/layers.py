"""Layer factories: the one generator definition is built dense/slim (plain convs) or hyper.

A generator asks its factory for each conv (`conv(spec)`) and for the mask that ends each conv
unit (`mask(group)`); it tags its per-channel modules (norms) with their group (`tag_group`).
The plain factory returns ordinary convs and identity masks; the hyper factory returns convs
whose weights come from the hypernetwork and masks that zero pruned channels, so all variants
share module names, and dense and slim models share state_dict keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from compress.plan import ChannelPlan, ConvSpec

# Attribute set on per-channel modules (norms) to say which group their channels belong to;
# slimming reads it to slice their parameters and buffers.
GROUP_ATTR = "channel_group"


def tag_group(module: nn.Module, group: str) -> nn.Module:
    setattr(module, GROUP_ATTR, group)
    return module


class PlainLayers:
    """Ordinary `nn.Conv2d` / `nn.ConvTranspose2d` at the plan's widths; masks are identities."""

    def __init__(self, plan: ChannelPlan) -> None:
        self.plan = plan

    def conv(self, spec: ConvSpec) -> nn.Module:
        cls = nn.ConvTranspose2d if spec.transposed else nn.Conv2d
        extra = {"output_padding": spec.output_padding} if spec.transposed else {}
        conv = cls(
            self.plan.in_width(spec),
            self.plan[spec.out_group],
            spec.kernel,
            stride=spec.stride,
            padding=spec.padding,
            bias=spec.bias,
            **extra,
        )
        conv.spec = spec
        return conv

    def mask(self, group: str) -> nn.Module:
        return nn.Identity()


class HyperConv(nn.Module):
    """A conv whose weight comes from the hypernetwork (see `compress.hypernet`); it owns only
    its bias. `index` is its slot in the hypernetwork."""

    def __init__(
        self,
        spec: ConvSpec,
        in_width: int,
        out_width: int,
        index: int,
        weight_of: Callable[[int], torch.Tensor],
    ) -> None:
        super().__init__()
        self.spec = spec
        self.in_width, self.out_width = in_width, out_width
        self.index = index
        k2 = spec.kernel * spec.kernel
        bound = 1.0 / math.sqrt(in_width * k2)
        self.bias = nn.Parameter(torch.empty(out_width).uniform_(-bound, bound)) if spec.bias else None
        # A bound method, not a submodule: the hypernetwork belongs to the HyperGenerator.
        self._weight_of = weight_of

    def generate_weight(self) -> torch.Tensor:
        """The conv weight as (C_out, C_in, k, k), whatever the conv's direction."""
        return self._weight_of(self.index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.generate_weight()
        s = self.spec
        if s.transposed:
            return F.conv_transpose2d(x, weight.transpose(0, 1), self.bias, s.stride, s.padding, s.output_padding)
        return F.conv2d(x, weight, self.bias, s.stride, s.padding)

    def extra_repr(self) -> str:
        s = self.spec
        kind = "transposed, " if s.transposed else ""
        return f"{kind}{'+'.join(s.in_groups)}({self.in_width}) -> {s.out_group}({self.out_width}), k={s.kernel}"


class ChannelMask(nn.Module):
    """Multiplies by the keep-mask of one group: pruned channels become exactly zero."""

    def __init__(self, group: str, mask_of: Callable[[str], torch.Tensor]) -> None:
        super().__init__()
        self.group = group
        self._mask_of = mask_of

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._mask_of(self.group).to(x.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return self.group


class HyperLayers(PlainLayers):
    """Hypernetwork convs and real masks; records every conv it makes, in order, so that the
    HyperGenerator can build the hypernetwork that serves them."""

    def __init__(
        self,
        plan: ChannelPlan,
        weight_of: Callable[[int], torch.Tensor],
        mask_of: Callable[[str], torch.Tensor],
    ) -> None:
        super().__init__(plan)
        self.weight_of = weight_of
        self.mask_of = mask_of
        self.convs: list[tuple[ConvSpec, int, int]] = []

    def conv(self, spec: ConvSpec) -> nn.Module:
        in_width, out_width = self.plan.in_width(spec), self.plan[spec.out_group]
        self.convs.append((spec, in_width, out_width))
        return HyperConv(spec, in_width, out_width, len(self.convs) - 1, self.weight_of)

    def mask(self, group: str) -> nn.Module:
        if group in self.plan.fixed:
            return nn.Identity()
        return ChannelMask(group, self.mask_of)
