"""MAC and parameter counting: one counter for the search stop, the manifest and the reports.

`macs` follows the GAN-compression literature (torchprofile's `profile_macs`): every conv,
transposed ones included, costs numel(output) * C_in/groups * k_h * k_w; norms, activations,
pads and adds cost 0. `true_macs` counts a transposed conv at its real cost,
numel(input) * C_out/groups * k_h * k_w.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from compress.layers import GROUP_ATTR, HyperConv
from compress.plan import ChannelPlan, ConvSpec


@dataclass(frozen=True)
class MacCount:
    macs: int
    true_macs: int
    params: int

    def ratio_to(self, reference: MacCount) -> float:
        return self.macs / reference.macs

    def to_dict(self) -> dict[str, int]:
        return {"macs": self.macs, "true_macs": self.true_macs, "params": self.params}


def _conv_geometry(module: nn.Module) -> tuple[int, int, int, int, bool] | None:
    """(C_in, C_out, groups, k_h*k_w, transposed) of a conv-like module, else None."""
    if isinstance(module, HyperConv):
        k = module.spec.kernel
        return module.in_width, module.out_width, 1, k * k, module.spec.transposed
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        return module.in_channels, module.out_channels, module.groups, kh * kw, True
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels, module.out_channels, module.groups, kh * kw, False
    return None


@torch.no_grad()
def _trace_convs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """Per conv module name: (numel of input, numel of output) for one forward pass."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if _conv_geometry(module) is not None:

            def hook(mod, inputs, output, name=name):
                sizes[name] = (inputs[0].numel(), output.numel())

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return sizes


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> MacCount:
    """Count MACs (both conventions) of one forward pass on `input_shape`, and the parameters."""
    sizes = _trace_convs(model, tuple(input_shape))
    macs = true_macs = 0
    for name, module in model.named_modules():
        geometry = _conv_geometry(module)
        if geometry is None or name not in sizes:
            continue
        c_in, c_out, groups, k2, transposed = geometry
        in_numel, out_numel = sizes[name]
        conv_macs = out_numel * (c_in // groups) * k2
        macs += conv_macs
        true_macs += in_numel * (c_out // groups) * k2 if transposed else conv_macs
    params = sum(p.numel() for p in model.parameters())
    return MacCount(macs, true_macs, params)


@dataclass(frozen=True)
class _ConvCost:
    spec: ConvSpec
    out_spatial: int  # output H*W per image
    in_spatial: int


class PlanCost:
    """MACs and params of any plan of one architecture at one input shape, without a model.

    Spatial sizes do not depend on widths, so they are measured once on a probe generator whose
    prunable groups have one channel; every cost is then bilinear in the group widths.
    """

    def __init__(self, plan: ChannelPlan, input_shape: tuple[int, ...]) -> None:
        from compress.models import build_generator

        self.full_plan = plan
        self.input_shape = tuple(input_shape)
        probe_plan = plan.with_widths({g: 1 for g in plan.prunable})
        probe = build_generator(plan.arch, probe_plan)
        batch = self.input_shape[0]
        sizes = _trace_convs(probe, self.input_shape)
        self.convs: list[_ConvCost] = []
        for name, module in probe.named_modules():
            if _conv_geometry(module) is not None:
                in_numel, out_numel = sizes[name]
                spec = module.spec
                in_spatial = in_numel // (batch * probe_plan.in_width(spec))
                out_spatial = out_numel // (batch * probe_plan[spec.out_group])
                self.convs.append(_ConvCost(spec, out_spatial * batch, in_spatial * batch))
        # Per-channel parameters of norms etc. (BatchNorm: weight and bias per channel).
        self._per_channel_params: dict[str, int] = {}
        for module in probe.modules():
            group = getattr(module, GROUP_ATTR, None)
            if group is not None:
                n = sum(p.numel() for p in module.parameters(recurse=False)) // probe_plan[group]
                self._per_channel_params[group] = self._per_channel_params.get(group, 0) + n
        self.full = self.count(plan.widths)

    def count(self, widths: Mapping[str, int]) -> MacCount:
        macs = true_macs = params = 0
        for conv in self.convs:
            spec = conv.spec
            c_in = sum(widths[g] for g in spec.in_groups)
            c_out = widths[spec.out_group]
            k2 = spec.kernel * spec.kernel
            macs += conv.out_spatial * c_out * c_in * k2
            true_macs += (conv.in_spatial if spec.transposed else conv.out_spatial) * c_out * c_in * k2
            params += c_in * c_out * k2 + (c_out if spec.bias else 0)
        params += sum(n * widths[g] for g, n in self._per_channel_params.items())
        return MacCount(macs, true_macs, params)

    def ratio(self, widths: Mapping[str, int]) -> float:
        """Remaining-MACs ratio (literature convention) of `widths` against the full plan."""
        return self.count(widths).macs / self.full.macs
