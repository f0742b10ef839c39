"""Generator families: each registers its default sizes, its channel groups and its module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from compress.errors import PlanError, UnknownArchError
from compress.layers import PlainLayers
from compress.models import dcgan, resnet, unet
from compress.models.discriminators import DcganDiscriminator, PatchGANDiscriminator
from compress.plan import ChannelPlan


@dataclass(frozen=True)
class Architecture:
    name: str
    default_sizes: dict[str, int]
    group_widths: Callable[..., tuple[dict[str, int], set[str]]]
    module: Callable[[PlainLayers], nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "resnet": Architecture("resnet", resnet.DEFAULT_SIZES, resnet.group_widths, resnet.ResnetGenerator),
    "unet": Architecture("unet", unet.DEFAULT_SIZES, unet.group_widths, unet.UnetGenerator),
    "dcgan": Architecture("dcgan", dcgan.DEFAULT_SIZES, dcgan.group_widths, dcgan.DcganGenerator),
}


def get_architecture(arch: str) -> Architecture:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise UnknownArchError(
            f"unknown generator architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}"
        ) from None


def full_plan(arch: str, **sizes: int) -> ChannelPlan:
    """The dense plan of `arch`; `sizes` override the defaults (e.g. ngf=16, n_blocks=6)."""
    spec = get_architecture(arch)
    unknown = set(sizes) - set(spec.default_sizes)
    if unknown:
        raise PlanError(
            f"unknown size {sorted(unknown)[0]!r} for the {arch} generator; allowed: {', '.join(spec.default_sizes)}"
        )
    merged = {**spec.default_sizes, **{k: int(v) for k, v in sizes.items()}}
    if any(v < 1 for v in merged.values()):
        raise PlanError(f"generator sizes must be positive integers, got {merged}")
    try:
        widths, fixed = spec.group_widths(**merged)
    except ValueError as exc:
        raise PlanError(f"invalid {arch} sizes {merged}: {exc}") from None
    return ChannelPlan(arch, merged, widths, frozenset(fixed))


def validate_plan(plan: ChannelPlan, arch: str | None = None) -> ChannelPlan:
    """Check that `plan` has the groups of its architecture, fixed widths intact, widths >= 1."""
    if arch is not None and plan.arch != arch:
        raise PlanError(f"the plan is for {plan.arch!r}, not for {arch!r}")
    reference = full_plan(plan.arch, **plan.sizes)
    if list(plan.widths) != list(reference.widths):
        missing = sorted(set(reference.widths) - set(plan.widths))
        extra = sorted(set(plan.widths) - set(reference.widths))
        raise PlanError(
            f"the plan does not match the {plan.arch} architecture with sizes {dict(plan.sizes)}: "
            f"missing groups {missing}, unexpected groups {extra}"
            if missing or extra
            else f"the plan's groups are not in the {plan.arch} architecture's order"
        )
    for group in reference.widths:
        width = plan.widths[group]
        if group in reference.fixed and width != reference.widths[group]:
            raise PlanError(f"group {group!r} is fixed at {reference.widths[group]} channels, the plan says {width}")
        if width < 1:
            raise PlanError(f"group {group!r} has {width} channels; every group keeps at least 1")
    if set(plan.fixed) != set(reference.fixed):
        raise PlanError(f"the plan's fixed groups {sorted(plan.fixed)} should be {sorted(reference.fixed)}")
    return plan


def build_generator(arch: str, plan: ChannelPlan) -> nn.Module:
    """A plain generator (dense or slim) at the widths of `plan`, with `.arch` and `.plan`."""
    validate_plan(plan, arch)
    model = get_architecture(arch).module(PlainLayers(plan))
    model.arch = arch
    model.plan = plan
    return model


def example_input_shape(plan: ChannelPlan, image_size: int = 256, batch: int = 1) -> tuple[int, ...]:
    """The generator's input shape: an image for resnet/unet, a noise vector for dcgan."""
    if plan.arch == "dcgan":
        return (batch, plan.sizes["nz"], 1, 1)
    return (batch, plan.sizes["input_nc"], image_size, image_size)


def build_discriminator(arch: str, **kwargs: Any) -> nn.Module:
    """The discriminator that goes with a generator family (PatchGAN for resnet/unet)."""
    get_architecture(arch)
    if arch == "dcgan":
        return DcganDiscriminator(**kwargs)
    return PatchGANDiscriminator(**kwargs)
