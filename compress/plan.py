"""Channel plans: how wide each channel group of a generator is, as plain JSON-able data.

A channel group is a set of channels that must be pruned together (DESIGN §2): the output of
one conv, or, for the ResNet trunk, the outputs of every conv that feeds the residual adds.
Convolutions are described by the groups they read (concatenated in tensor order) and write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compress.errors import PlanError


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of a generator, in terms of channel groups rather than widths."""

    in_groups: tuple[str, ...]
    out_group: str
    kernel: int
    stride: int = 1
    padding: int = 0
    transposed: bool = False
    output_padding: int = 0
    bias: bool = True


@dataclass(frozen=True)
class ChannelPlan:
    """Width of every channel group of one generator; `fixed` groups are never pruned."""

    arch: str
    sizes: Mapping[str, int]
    widths: Mapping[str, int]
    fixed: frozenset[str] = field(default_factory=frozenset)

    def __getitem__(self, group: str) -> int:
        try:
            return self.widths[group]
        except KeyError:
            raise PlanError(
                f"the {self.arch} plan has no channel group {group!r}; groups are: {', '.join(self.widths)}"
            ) from None

    @property
    def prunable(self) -> list[str]:
        return [g for g in self.widths if g not in self.fixed]

    def in_width(self, spec: ConvSpec) -> int:
        return sum(self[g] for g in spec.in_groups)

    def with_widths(self, widths: Mapping[str, int]) -> ChannelPlan:
        """A plan of the same architecture with some group widths replaced."""
        unknown = set(widths) - set(self.widths)
        if unknown:
            raise PlanError(f"unknown channel groups {sorted(unknown)} for the {self.arch} plan")
        changed_fixed = [g for g in widths if g in self.fixed and widths[g] != self.widths[g]]
        if changed_fixed:
            raise PlanError(f"groups {changed_fixed} are fixed (RGB or unpruned) and keep their width")
        return ChannelPlan(self.arch, dict(self.sizes), {**self.widths, **widths}, self.fixed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "sizes": dict(self.sizes),
            "widths": dict(self.widths),
            "fixed": sorted(self.fixed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelPlan:
        try:
            return cls(
                arch=str(data["arch"]),
                sizes={str(k): int(v) for k, v in data["sizes"].items()},
                widths={str(k): int(v) for k, v in data["widths"].items()},
                fixed=frozenset(str(g) for g in data.get("fixed", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"not a channel plan ({exc!r}); expected arch, sizes and widths") from None

    def describe(self, full: ChannelPlan | None = None) -> str:
        """One line per group: `name  width` or `name  kept/full`."""
        lines = []
        for g, w in self.widths.items():
            tag = " (fixed)" if g in self.fixed else ""
            width = f"{w}/{full.widths[g]}" if full is not None else str(w)
            lines.append(f"  {g:<10} {width:>9}{tag}")
        return "\n".join(lines)
