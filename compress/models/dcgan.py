"""DCGAN generator (Radford et al.): transposed convs k4 from a noise vector, BatchNorm, ReLU.

Groups `g1`..`g{n}` (widest first) are prunable; the noise input and RGB output are fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.layers import PlainLayers, tag_group
from compress.plan import ConvSpec

DEFAULT_SIZES = {"nz": 100, "ngf": 64, "image_size": 64, "output_nc": 3}


def n_hidden(image_size: int) -> int:
    """Hidden transposed convs: 1x1 → 4x4 → ... → image_size/2, then one more to RGB."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError("image_size must be a power of two of at least 8")
    return image_size.bit_length() - 3


def group_widths(nz: int, ngf: int, image_size: int, output_nc: int) -> tuple[dict[str, int], set[str]]:
    n = n_hidden(image_size)
    widths = {"noise": nz}
    widths.update({f"g{j + 1}": ngf * 2 ** (n - 1 - j) for j in range(n)})
    widths["rgb_out"] = output_nc
    return widths, {"noise", "rgb_out"}


class DcganGenerator(nn.Module):
    def __init__(self, layers: PlainLayers) -> None:
        super().__init__()
        plan = layers.plan
        n = n_hidden(plan.sizes["image_size"])
        units: list[nn.Module] = []
        src = "noise"
        for j in range(1, n + 1):
            group = f"g{j}"
            stride, padding = (1, 0) if j == 1 else (2, 1)
            spec = ConvSpec((src,), group, 4, stride, padding, transposed=True, bias=False)
            units += [
                layers.conv(spec),
                tag_group(nn.BatchNorm2d(plan[group]), group),
                nn.ReLU(),
                layers.mask(group),
            ]
            src = group
        units += [layers.conv(ConvSpec((src,), "rgb_out", 4, 2, 1, transposed=True, bias=False)), nn.Tanh()]
        self.main = nn.Sequential(*units)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)
