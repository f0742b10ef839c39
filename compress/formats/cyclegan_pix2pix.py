"""Key layouts of junyanz/pytorch-CycleGAN-and-pix2pix generators (`models/networks.py`).

Those files (`latest_net_G_A.pth`, `latest_net_G.pth`) are plain state_dicts of
`ResnetGenerator` or `UnetGenerator`; the layouts below state where each conv and norm sits.

ResNet (`resnet_6blocks`, `resnet_9blocks`): `model` is one Sequential. Index 0 reflection pad,
1 the 7x7 stem conv, 2 its norm, 3 ReLU; 4/5/6 and 7/8/9 the two stride-2 convs with norm and
ReLU; 10 .. 10+n-1 the residual blocks; then two transposed convs at 10+n and 13+n (norms at
11+n and 14+n), a reflection pad, the 7x7 output conv at 17+n, tanh. A block's `conv_block` is
pad, conv (1), norm (2), ReLU, [Dropout(0.5) with `use_dropout`], pad, conv, norm: its second
conv is `conv_block.5`, or `conv_block.6` with dropout. Norms are InstanceNorm without affine
parameters for `norm=instance` (CycleGAN's default), so they hold no keys; convs have biases then.

U-Net (`unet_128`: 7 downsamplings, `unet_256`: 8): nested `UnetSkipConnectionBlock`s, each with
a Sequential `model`. Outermost: [down conv, submodule, ReLU, up conv (with bias), tanh].
Middle: [LeakyReLU, down conv, down norm, submodule, ReLU, up conv, up norm, (Dropout)].
Innermost: [LeakyReLU, down conv, ReLU, up conv, up norm]. The submodule sits at index 1 in the
outermost block and at index 3 in the middle ones. With `norm=batch` (pix2pix's default) convs
have no bias except the outermost up conv, and norms are BatchNorm2d with running statistics.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from compress.formats.layout import Layout

SOURCE = "pytorch-CycleGAN-and-pix2pix"


def _weight(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor | None:
    value = state.get(key)
    return value if isinstance(value, torch.Tensor) and value.dim() == 4 else None


def resnet_conv_prefixes(n_blocks: int, dropout: bool) -> list[str]:
    """Source prefixes of every conv, in the order the generator applies them."""
    second = 6 if dropout else 5
    blocks = [f"model.{10 + b}.conv_block.{i}" for b in range(n_blocks) for i in (1, second)]
    return ["model.1", "model.4", "model.7", *blocks, f"model.{10 + n_blocks}", f"model.{13 + n_blocks}",
            f"model.{17 + n_blocks}"]  # fmt: skip


def resnet_norm_prefixes(n_blocks: int, dropout: bool) -> list[str]:
    """Source prefixes of every norm (InstanceNorm: no keys unless a legacy file kept statistics)."""
    second = 7 if dropout else 6
    blocks = [f"model.{10 + b}.conv_block.{i}" for b in range(n_blocks) for i in (2, second)]
    return ["model.2", "model.5", "model.8", *blocks, f"model.{11 + n_blocks}", f"model.{14 + n_blocks}"]


def resnet_layout(state: Mapping[str, torch.Tensor], source: str = SOURCE) -> Layout | None:
    """The ResNet layout that these keys follow (sizes and dropout read from them), or None."""
    stem = _weight(state, "model.1.weight")
    if stem is None or stem.shape[-1] != 7:
        return None
    n_blocks = 0
    while f"model.{10 + n_blocks}.conv_block.1.weight" in state:
        n_blocks += 1
    dropout = "model.10.conv_block.6.weight" in state
    out = _weight(state, f"model.{17 + n_blocks}.weight")
    if out is None:
        return None
    sizes = {"ngf": int(stem.shape[0]), "n_blocks": n_blocks, "input_nc": int(stem.shape[1]),
             "output_nc": int(out.shape[0])}  # fmt: skip
    variant = f"resnet_{n_blocks}blocks" + (" with dropout" if dropout else "")
    if dropout:  # gan-compression's ResnetGenerator always has the Dropout module: the same keys
        variant += " (or gan-compression's teacher)"
    return Layout(
        source=f"{source} {variant}",
        arch="resnet",
        sizes=sizes,
        convs=resnet_conv_prefixes(n_blocks, dropout),
        norms=[],
        stateless_norms=resnet_norm_prefixes(n_blocks, dropout),
    )


UNET_NAMES = {7: "unet_128", 8: "unet_256"}


def unet_level_path(level: int) -> str:
    """The module path of the block at `level` (1 = outermost)."""
    path = "model"
    for i in range(2, level + 1):
        path += ".model.1" if i == 2 else ".model.3"
    return path


def unet_conv_prefixes(num_downs: int) -> list[str]:
    """Down convs from the outermost level in, then up convs from the innermost level out."""
    downs = ["model.model.0"] + [f"{unet_level_path(i)}.model.1" for i in range(2, num_downs + 1)]
    ups = [f"{unet_level_path(num_downs)}.model.3"]
    ups += [f"{unet_level_path(i)}.model.5" for i in range(num_downs - 1, 1, -1)]
    return [*downs, *ups, "model.model.3"]


def unet_norm_prefixes(num_downs: int) -> list[str]:
    """Down norms of the middle levels (outer to inner), then up norms from the innermost out."""
    downs = [f"{unet_level_path(i)}.model.2" for i in range(2, num_downs)]
    ups = [f"{unet_level_path(num_downs)}.model.4"]
    ups += [f"{unet_level_path(i)}.model.6" for i in range(num_downs - 1, 1, -1)]
    return downs + ups


def unet_layout(state: Mapping[str, torch.Tensor], source: str = SOURCE) -> Layout | None:
    first = _weight(state, "model.model.0.weight")
    last = _weight(state, "model.model.3.weight")
    if first is None or last is None or first.shape[-1] != 4:
        return None
    num_downs = 1
    while _weight(state, f"{unet_level_path(num_downs + 1)}.model.1.weight") is not None:
        num_downs += 1
    sizes = {
        "ngf": int(first.shape[0]),
        "num_downs": num_downs,
        "input_nc": int(first.shape[1]),
        "output_nc": int(last.shape[1]),
    }  # fmt: skip (a transposed conv's weight is (in, out, k, k))
    return Layout(
        source=f"{source} {UNET_NAMES.get(num_downs, f'unet with {num_downs} downsamplings')}",
        arch="unet",
        sizes=sizes,
        convs=unet_conv_prefixes(num_downs),
        norms=unet_norm_prefixes(num_downs),
    )


LAYOUTS = (resnet_layout, unet_layout)
