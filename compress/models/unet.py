"""U-Net generator of pix2pix (`unet_256`: 8 downsamplings), written flat instead of recursive.

Level i (1 = outermost) has a down conv writing group `down{i}` (it reads down{i-1}; LeakyReLU
0.2 before, BatchNorm after except at the two ends) and an up conv writing `up{i}`, the width
that level i received (it reads cat([down{i}, up{i+1}]), or down{n} at the innermost level;
ReLU before, BatchNorm after, dropout at the num_downs - 5 levels of ngf * 8 channels above the
innermost, as upstream). The outermost up conv writes RGB through tanh. Innermost and outermost
layers are not pruned (DESIGN §2). pix2pix's in-place LeakyReLU also rewrites the skip tensors;
the ReLU that starts every up conv makes that invisible, so plain tensors are kept here.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.layers import PlainLayers, tag_group
from compress.plan import ConvSpec

DEFAULT_SIZES = {"ngf": 64, "num_downs": 8, "input_nc": 3, "output_nc": 3}


def group_widths(ngf: int, num_downs: int, input_nc: int, output_nc: int) -> tuple[dict[str, int], set[str]]:
    if num_downs < 5:
        raise ValueError("num_downs must be at least 5")
    widths = {"rgb_in": input_nc}
    for i in range(1, num_downs + 1):
        widths[f"down{i}"] = ngf * min(2 ** (i - 1), 8)
    # up{i} writes what level i received: the width of down{i-1}.
    for i in range(num_downs, 1, -1):
        widths[f"up{i}"] = widths[f"down{i - 1}"]
    widths["rgb_out"] = output_nc
    fixed = {"rgb_in", "rgb_out", "down1", f"down{num_downs}", f"up{num_downs}"}
    return widths, fixed


def _up_out_group(i: int) -> str:
    return "rgb_out" if i == 1 else f"up{i}"


class UnetGenerator(nn.Module):
    def __init__(self, layers: PlainLayers) -> None:
        super().__init__()
        n = layers.plan.sizes["num_downs"]
        self.num_downs = n
        plan = layers.plan
        downs = []
        for i in range(1, n + 1):
            group = f"down{i}"
            src = "rgb_in" if i == 1 else f"down{i - 1}"
            unit: list[nn.Module] = [] if i == 1 else [nn.LeakyReLU(0.2)]
            unit.append(layers.conv(ConvSpec((src,), group, 4, stride=2, padding=1, bias=False)))
            if 1 < i < n:
                unit.append(tag_group(nn.BatchNorm2d(plan[group]), group))
            unit.append(layers.mask(group))
            downs.append(nn.Sequential(*unit))
        self.downs = nn.ModuleList(downs)
        ups = []  # ups[0] is level n (innermost), ups[-1] level 1 (outermost)
        for i in range(n, 0, -1):
            group = _up_out_group(i)
            src = (f"down{n}",) if i == n else (f"down{i}", f"up{i + 1}")
            spec = ConvSpec(src, group, 4, stride=2, padding=1, transposed=True, bias=i == 1)
            unit = [nn.ReLU(), layers.conv(spec)]
            if i == 1:
                unit.append(nn.Tanh())
            else:
                unit.append(tag_group(nn.BatchNorm2d(plan[group]), group))
                if 5 <= i < n:  # the num_downs - 5 middle levels of ngf * 8 channels, as upstream
                    unit.append(nn.Dropout(0.5))
                unit.append(layers.mask(group))
            ups.append(nn.Sequential(*unit))
        self.ups = nn.ModuleList(ups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        h = self.ups[0](skips[-1])
        for up, skip in zip(self.ups[1:], reversed(skips[:-1]), strict=True):
            h = up(torch.cat([skip, h], 1))
        return h
