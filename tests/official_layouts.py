"""The generators of pytorch-CycleGAN-and-pix2pix and gan-compression, as this project states
them (written here from their documented structure, not copied): modules at the same indices,
so their state_dicts carry the official key names, and the same computation.

ResNet: Sequential [pad3, conv7, norm, ReLU, (conv3 s2, norm, ReLU) x2, blocks..., (convT3 s2,
norm, ReLU) x2, pad3, conv7, tanh]; a block is [pad1, conv3, norm, ReLU, (Dropout), pad1, conv3,
norm] added to its input. U-Net: nested blocks [LeakyReLU, down conv, down norm, inner block,
ReLU, up conv, up norm, (Dropout)] whose output is cat(input, that); the innermost lacks the
down norm and the inner block, the outermost is [down conv, inner, ReLU, up conv, tanh] and adds
no skip. The LeakyReLU is in place, as upstream, so a skip carries its activated input.
"""

from __future__ import annotations

import torch
from torch import nn


class _Residual(nn.Module):
    def __init__(self, width: int, dropout: bool, norm: type[nn.Module], bias: bool) -> None:
        super().__init__()
        half = [nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3, bias=bias), norm(width), nn.ReLU(True)]
        rest = [nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3, bias=bias), norm(width)]
        self.conv_block = nn.Sequential(*half, *([nn.Dropout(0.5)] if dropout else []), *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class OfficialResnet(nn.Module):
    def __init__(self, ngf: int, n_blocks: int, dropout: bool = False, input_nc: int = 3, output_nc: int = 3,
                 legacy_norm: bool = False, batch_norm: bool = False, clamp_input: bool = False) -> None:  # fmt: skip
        super().__init__()
        if batch_norm:
            norm, bias = nn.BatchNorm2d, False
        else:  # legacy_norm: InstanceNorm saving running statistics, as files of old PyTorch versions hold
            norm = (lambda c: nn.InstanceNorm2d(c, track_running_stats=True)) if legacy_norm else nn.InstanceNorm2d
            bias = True
        self.clamp_input = clamp_input  # gan-compression's teacher clamps its input to [-1, 1]
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias), norm(ngf)]
        layers.append(nn.ReLU(True))
        width = ngf
        for _ in range(2):
            layers += [nn.Conv2d(width, 2 * width, 3, 2, 1, bias=bias), norm(2 * width), nn.ReLU(True)]
            width *= 2
        layers += [_Residual(width, dropout, norm, bias) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(width, width // 2, 3, 2, 1, output_padding=1, bias=bias), norm(width // 2),
                       nn.ReLU(True)]  # fmt: skip
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.clamp(-1, 1) if self.clamp_input else x)


class _UnetLevel(nn.Module):
    def __init__(self, outer: int, inner: int, sub: nn.Module | None, dropout: bool = False,
                 input_nc: int | None = None, outermost: bool = False,
                 instance_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.outermost = outermost
        norm = nn.InstanceNorm2d if instance_norm else nn.BatchNorm2d
        down = nn.Conv2d(input_nc or outer, inner, 4, 2, 1, bias=instance_norm)
        if outermost:
            layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), nn.Tanh()]
        elif sub is None:  # innermost
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=instance_norm), norm(outer)]  # fmt: skip
        else:
            layers = [nn.LeakyReLU(0.2, True), down, norm(inner), sub, nn.ReLU(True),
                      nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=instance_norm), norm(outer)]  # fmt: skip
            layers += [nn.Dropout(0.5)] if dropout else []
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class OfficialUnet(nn.Module):
    def __init__(self, ngf: int, num_downs: int, dropout: bool = True, input_nc: int = 3, output_nc: int = 3,
                 instance_norm: bool = False) -> None:  # fmt: skip
        super().__init__()
        norm = {"instance_norm": instance_norm}
        level = _UnetLevel(8 * ngf, 8 * ngf, None, **norm)
        for _ in range(num_downs - 5):
            level = _UnetLevel(8 * ngf, 8 * ngf, level, dropout, **norm)
        for mult in (4, 2, 1):
            level = _UnetLevel(mult * ngf, 2 * mult * ngf, level, **norm)
        self.model = _UnetLevel(output_nc, ngf, level, input_nc=input_nc, outermost=True, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, BatchNorm statistics included, so every key matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=g) * 0.2
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model.eval()
