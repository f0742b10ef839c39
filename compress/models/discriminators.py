"""Discriminators: PatchGAN (70x70 for n_layers=3) and DCGAN. They are trained, never pruned."""

from __future__ import annotations

from torch import nn


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(width)
    if kind == "batch":
        return nn.BatchNorm2d(width)
    raise ValueError(f"unknown norm {kind!r}; use 'instance' or 'batch'")


class PatchGANDiscriminator(nn.Module):
    """pix2pix/CycleGAN `NLayerDiscriminator`; bias only where no BatchNorm follows."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        use_bias = norm == "instance"
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=use_bias),
                _norm(norm, ndf * mult),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class DcganDiscriminator(nn.Module):
    """DCGAN discriminator: stride-2 convs down to 4x4, then a 4x4 conv to one logit."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, image_size: int = 64) -> None:
        super().__init__()
        n_down = image_size.bit_length() - 3
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        width = ndf
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).flatten(1)
