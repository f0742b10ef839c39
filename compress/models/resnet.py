"""ResNet generator of CycleGAN and of GAN Compression's pix2pix (Johnson et al. layout).

c7s1-ngf, two stride-2 convs, n residual blocks, two transposed convs (k3 s2 p1 op1), c7s1-3,
tanh; non-affine InstanceNorm and reflection padding. Channel groups: `stem`, `down1`, `trunk`
(second down conv and every block's second conv, shared because of the residual adds),
`block{i}` (each block's first conv), `up1`, `up2`; RGB in and out are fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.layers import PlainLayers, tag_group
from compress.plan import ConvSpec

DEFAULT_SIZES = {"ngf": 64, "n_blocks": 9, "input_nc": 3, "output_nc": 3}


def group_widths(ngf: int, n_blocks: int, input_nc: int, output_nc: int) -> tuple[dict[str, int], set[str]]:
    widths = {"rgb_in": input_nc, "stem": ngf, "down1": 2 * ngf, "trunk": 4 * ngf}
    widths.update({f"block{i}": 4 * ngf for i in range(n_blocks)})
    widths.update({"up1": 2 * ngf, "up2": ngf, "rgb_out": output_nc})
    return widths, {"rgb_in", "rgb_out"}


def _norm(layers: PlainLayers, group: str) -> nn.Module:
    return tag_group(nn.InstanceNorm2d(layers.plan[group]), group)


def _unit(layers: PlainLayers, spec: ConvSpec, act: bool = True) -> list[nn.Module]:
    """conv → InstanceNorm → (ReLU) → mask of the output group."""
    out = [layers.conv(spec), _norm(layers, spec.out_group)]
    if act:
        out.append(nn.ReLU())
    return [*out, layers.mask(spec.out_group)]


class ResnetBlock(nn.Module):
    def __init__(self, layers: PlainLayers, index: int) -> None:
        super().__init__()
        inner = f"block{index}"
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            *_unit(layers, ConvSpec(("trunk",), inner, 3)),
            nn.ReflectionPad2d(1),
            *_unit(layers, ConvSpec((inner,), "trunk", 3), act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, layers: PlainLayers) -> None:
        super().__init__()
        n_blocks = layers.plan.sizes["n_blocks"]
        self.model = nn.Sequential(
            nn.ReflectionPad2d(3),
            *_unit(layers, ConvSpec(("rgb_in",), "stem", 7)),
            *_unit(layers, ConvSpec(("stem",), "down1", 3, stride=2, padding=1)),
            *_unit(layers, ConvSpec(("down1",), "trunk", 3, stride=2, padding=1)),
            *[ResnetBlock(layers, i) for i in range(n_blocks)],
            *_unit(layers, ConvSpec(("trunk",), "up1", 3, 2, 1, transposed=True, output_padding=1)),
            *_unit(layers, ConvSpec(("up1",), "up2", 3, 2, 1, transposed=True, output_padding=1)),
            nn.ReflectionPad2d(3),
            layers.conv(ConvSpec(("up2",), "rgb_out", 7)),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
