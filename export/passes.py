"""Export passes: rewrite a plain generator into an equivalent one that converters lower to few,
delegate-friendly ops. Each pass returns a new module (the input is not touched) that computes
the same function up to float32 rounding; tests check each one alone.

Why these (measured with litert-torch 0.10 / XNNPACK here):
- XNNPACK's TRANSPOSE_CONV is slow: in a U-Net ngf 8 at 256² (1 thread) the transposed convs
  took 28 of 31 ms, the last one (16 -> 3 channels) alone 15.6. A stride-s transposed conv whose
  output is s times its input is s² ordinary convs on the input, one per output phase, with
  only that phase's taps; the phases interleave by reshapes and transposes, which XNNPACK
  takes. U-Net ngf 8 at 256², 2 threads: 20.5 -> 11.1 ms as one 3x3 conv with 4·C_out channels
  and a pixel shuffle, whose zero taps cost 2.25x the MACs; per phase (exact MACs), U-Net ngf 64
  at 4x fewer MACs 50.9 -> 40.1 ms and ResNet ngf 64 at 10x 108 -> 95 ms against the one-conv
  form (interleaved; the same numbers to 1e-6).
- litert-torch transposes around every constant pad, reshape and permute it meets in NCHW: the
  phase convs' pads and interleave, and the pads and norms below, work on channels-last views
  (`channels_last_views`), and tflite_export converts with the greedy layout partitioner. U-Net
  ngf 64 at 4x fewer MACs 38.5 -> 29.6 ms, dense 113 -> 94 ms (62 -> 9 TRANSPOSEs); ResNet dense
  688 -> 634 ms, 10x 81.0 -> 79.5 (8 -> 4); LiteRT 2 threads, interleaved.
- A padded transposed conv the phase rewrite leaves (an output that is not s times the input;
  none in our generators): `ConvTranspose2d(k3, s2, p1, output_padding=1)` did not convert at
  all ("failed to legalize mhlo.convolution"); an unpadded transposed conv and a crop do.
- `ReflectionPad2d` lowers to MIRROR_PAD, which XNNPACK does not take: every pad split the graph
  into another delegate partition. Slices and concatenations of at most 5 inputs are taken.
- `InstanceNorm2d` lowers with two TRANSPOSEs around every norm; the same arithmetic written with
  MEAN over the spatial axes needs none. XNNPACK's fp32 MEAN over 256x256 positions sits ~10x
  further from the exact (float64) result than PyTorch's (a conv, norm, conv at 256²: 4.9e-6 of
  the output's range, against 4.9e-7 as a mean over each row and then over the rows). In a
  ResNet ngf 64 searched to 1/16 of its latency the last norms took the file to 4.2e-5 from
  PyTorch (one such file to 1.09e-4, over the fp32 parity tolerance); with row means 1.6e-6, as
  near as ONNX Runtime, and 2-4 % faster (ResNet dense 256.5 -> 250.9 ms, 1/16 10.6 -> 10.1;
  2 threads, interleaved). Float files take the row means; int8 files keep one MEAN (an integer
  mean accumulates exactly, and a second would requantize).
- Inference-mode BatchNorm after a conv is a per-channel affine map: folded into the conv.
- For full-integer int8 only: ai-edge-quantizer has no int8 LEAKY_RELU, so each one stayed a
  float island (dequantize, LEAKY_RELU, quantize) that no NPU takes; s·x + (1 − s)·relu(x) is the
  same function in MUL, RELU and ADD, which it quantizes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

Pass = Callable[[nn.Module], nn.Module]


class Crop2d(nn.Module):
    """Drop `top`/`bottom` rows and `left`/`right` columns (static sizes)."""

    def __init__(self, top: int, bottom: int, left: int, right: int) -> None:
        super().__init__()
        self.top, self.bottom, self.left, self.right = top, bottom, left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        return x[..., self.top : h - self.bottom, self.left : w - self.right]


class SliceReflectionPad2d(nn.Module):
    """Reflection padding as single-row/column slices and concatenations.

    XNNPACK takes a concatenation of at most 5 inputs, and the converter merges nested
    concatenations along one axis, so a pad of 3 done per axis (7 inputs) left the delegate.
    Padding one side at a time, alternating axes (top, left, bottom, right), keeps every
    concatenation at p + 1 inputs; reflection padding is separable, so the result is the same.
    """

    def __init__(self, padding: tuple[int, int, int, int], channels_last_views: bool = False) -> None:
        super().__init__()
        self.left, self.right, self.top, self.bottom = padding
        self.channels_last_views = channels_last_views

    @staticmethod
    def _before(x: torch.Tensor, dim: int, p: int) -> torch.Tensor:
        return torch.cat([x.narrow(dim, i, 1) for i in range(p, 0, -1)] + [x], dim) if p else x

    @staticmethod
    def _after(x: torch.Tensor, dim: int, p: int) -> torch.Tensor:
        n = x.shape[dim]
        return torch.cat([x] + [x.narrow(dim, n - 1 - i, 1) for i in range(1, p + 1)], dim) if p else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_views:  # for litert-torch: see `channels_last_views`
            return self._pad(x.permute(0, 2, 3, 1), 1, 2).permute(0, 3, 1, 2)
        return self._pad(x, 2, 3)

    def _pad(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        x = self._before(x, rows, self.top)
        x = self._before(x, cols, self.left)
        x = self._after(x, rows, self.bottom)
        return self._after(x, cols, self.right)


def _phase_taps(kernel: int, stride: int, padding: int) -> list[list[tuple[int, int]]]:
    """Per output phase a (output index s·m + a), the (input offset d, kernel tap k) pairs of a
    1-D transposed conv: y[s·m + a] = sum of x[m + d] · w[k]."""
    return [
        [((a + padding - k) // stride, k) for k in range(kernel) if (k - a - padding) % stride == 0]
        for a in range(stride)
    ]


def phase_kernels(kernel: int, stride: int, padding: int, output_padding: int) -> list[tuple[int, int]] | None:
    """The (height, width) kernel of each phase conv of a square transposed conv, phases in
    row-major order (a_h, a_w), or None where the rewrite does not apply: stride 1, a kernel
    smaller than the stride (a phase with no taps), an output that is not exactly s times the
    input, or a phase whose taps do not cover input offset 0 (it would need a crop)."""
    if stride < 2 or kernel < stride or kernel + output_padding - 2 * padding != stride:
        return None
    windows = [[d for d, _ in phase] for phase in _phase_taps(kernel, stride, padding)]
    if not all(min(w) <= 0 <= max(w) for w in windows):
        return None
    sizes = [max(w) - min(w) + 1 for w in windows]
    return [(h, w) for h in sizes for w in sizes]


class PhaseConvTranspose2d(nn.Module):
    """A stride-s ConvTranspose2d as s² ordinary convs on the input, one per output phase
    (a_h, a_w), each with only that phase's taps (a k4 s2 transposed conv: four 2x2 convs; k3 s2:
    1x1, 1x2, 2x1, 2x2), zero-padded on the sides its taps reach, and the phases interleaved into
    the s-times larger output. The same MACs as the transposed conv's true ones."""

    def __init__(self, m: nn.ConvTranspose2d, channels_last_views: bool = False) -> None:
        super().__init__()
        (k, _), (s, _), (p, _) = m.kernel_size, m.stride, m.padding
        self.channels_last_views = channels_last_views
        assert phase_kernels(k, s, p, m.output_padding[0]) is not None, "check phase_kernels before building one"
        taps = _phase_taps(k, s, p)
        w = m.weight.detach()  # (C_in, C_out, k, k)
        self.stride = s
        self.pads: list[tuple[int, int, int, int]] = []
        self.convs = nn.ModuleList()
        for rows in taps:
            for cols in taps:
                top, left = -min(d for d, _ in rows), -min(d for d, _ in cols)
                bottom, right = max(d for d, _ in rows), max(d for d, _ in cols)
                weight = torch.zeros(m.out_channels, m.in_channels, top + bottom + 1, left + right + 1)
                for d_h, k_h in rows:
                    for d_w, k_w in cols:
                        weight[:, :, top + d_h, left + d_w] = w[:, :, k_h, k_w].t()
                conv = nn.Conv2d(m.in_channels, m.out_channels, tuple(weight.shape[2:]), bias=m.bias is not None)
                conv.weight = nn.Parameter(weight)
                if m.bias is not None:
                    conv.bias = nn.Parameter(m.bias.detach().clone())
                self.convs.append(conv)
                self.pads.append((left, right, top, bottom))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last_views:
            phases = [conv(F.pad(x, pad)) for conv, pad in zip(self.convs, self.pads, strict=True)]
            n, c, h, w = phases[0].shape
            s = self.stride
            y = torch.stack(phases, 2).reshape(n, c, s, s, h, w)  # (.., a_h, a_w, h, w)
            return y.permute(0, 1, 4, 2, 5, 3).reshape(n, c, h * s, w * s)
        # for litert-torch (see `channels_last_views`): the interleave is then one transpose of
        # (n, h, w, a_h, a_w, c) blocks
        nhwc = x.permute(0, 2, 3, 1)
        phases = []
        for conv, (left, right, top, bottom) in zip(self.convs, self.pads, strict=True):
            padded = F.pad(nhwc, (0, 0, left, right, top, bottom)) if left + right + top + bottom else nhwc
            phases.append(conv(padded.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        n, h, w, c = phases[0].shape
        s = self.stride
        y = torch.stack(phases, 3).reshape(n, h, w, s, s, c)  # (.., a_h, a_w, c)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(n, h * s, w * s, c)
        return y.permute(0, 3, 1, 2)


class MeanInstanceNorm2d(nn.Module):
    """InstanceNorm2d (inference) as mean / squared deviation / rsqrt over the spatial axes."""

    def __init__(
        self,
        eps: float,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        channels_last_views: bool = False,
        by_rows: bool = False,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.weight = None if weight is None else nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.channels_last_views = channels_last_views
        self.by_rows = by_rows  # each mean over every row, then over the rows: see the module's docstring

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_views:  # for litert-torch: see `channels_last_views`
            return self._norm(x.permute(0, 2, 3, 1), (1, 2), (1, 1, 1, -1)).permute(0, 3, 1, 2)
        return self._norm(x, (2, 3), (1, -1, 1, 1))

    def _norm(self, x: torch.Tensor, spatial: tuple[int, int], per_channel: tuple[int, ...]) -> torch.Tensor:
        if self.by_rows:
            rows, columns = spatial
            mean = lambda t: t.mean(columns, keepdim=True).mean(rows, keepdim=True)  # noqa: E731
        else:
            mean = lambda t: t.mean(spatial, keepdim=True)  # noqa: E731
        centred = x - mean(x)
        var = mean(centred * centred)
        y = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(per_channel) + self.bias.view(per_channel)
        return y


class MulReluLeaky(nn.Module):
    """LeakyReLU(s) as s·x + (1 − s)·relu(x)."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.slope + torch.relu(x) * (1.0 - self.slope)


def _replace(model: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """A deep copy of `model` in which every submodule `m` with `make(m)` not None is replaced."""
    model = copy.deepcopy(model)

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            new = make(child)
            if new is not None:
                setattr(parent, name, new)
            else:
                visit(child)

    visit(model)
    return model


def transposed_conv_without_padding(model: nn.Module) -> nn.Module:
    def make(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, nn.ConvTranspose2d) or (m.padding == (0, 0) and m.output_padding == (0, 0)):
            return None
        if m.groups != 1 or m.dilation != (1, 1):
            return None
        bare = nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, bias=m.bias is not None)
        bare.weight = nn.Parameter(m.weight.detach().clone())
        if m.bias is not None:
            bare.bias = nn.Parameter(m.bias.detach().clone())
        (ph, pw), (oh, ow) = m.padding, m.output_padding
        return nn.Sequential(bare, Crop2d(ph, ph - oh, pw, pw - ow))

    return _replace(model, make)


def transposed_conv_as_phases(model: nn.Module, channels_last_views: bool = False) -> nn.Module:
    def make(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, nn.ConvTranspose2d) or m.groups != 1 or m.dilation != (1, 1):
            return None
        square = all(v[0] == v[1] for v in (m.kernel_size, m.stride, m.padding, m.output_padding))
        kernels = phase_kernels(m.kernel_size[0], m.stride[0], m.padding[0], m.output_padding[0])
        return PhaseConvTranspose2d(m, channels_last_views) if square and kernels is not None else None

    return _replace(model, make)


def reflection_pad_as_slices(model: nn.Module, channels_last_views: bool = False) -> nn.Module:
    def make(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, nn.ReflectionPad2d):
            return None
        return SliceReflectionPad2d(tuple(m.padding), channels_last_views)

    return _replace(model, make)


def instance_norm_as_mean(model: nn.Module, channels_last_views: bool = False, by_rows: bool = False) -> nn.Module:
    def make(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, nn.InstanceNorm2d) or m.track_running_stats:
            return None
        weight, bias = (m.weight, m.bias) if m.affine else (None, None)
        return MeanInstanceNorm2d(m.eps, weight, bias, channels_last_views, by_rows)

    return _replace(model, make)


def instance_norm_as_row_means(model: nn.Module, channels_last_views: bool = False) -> nn.Module:
    """`instance_norm_as_mean` with each spatial mean taken over every row, then over the rows."""
    return instance_norm_as_mean(model, channels_last_views, by_rows=True)


def channels_last_views(rewrite: Callable[..., nn.Module]) -> Pass:
    """The pass `rewrite` with its modules working on channels-last views of their NCHW input
    (permute to NHWC, compute, permute back): the form litert-torch converts with the fewest
    TRANSPOSEs. Its layout pass keeps a constant pad, a reshape or a permute in NCHW and
    transposes around them; a U-Net's phase convs written on NCHW tensors made 62 TRANSPOSEs,
    a ResNet's norms and pads after its last up conv 4 more. On NHWC views the converter's
    transposes and these permutes cancel: a file is left with its input's and output's
    transposes and one interleave per up conv. (ExecuTorch's XNNPACK lowering does its own
    layout; a program with these views did not load.)"""

    def run(model: nn.Module) -> nn.Module:
        return rewrite(model, channels_last_views=True)

    run.__name__ = run.__qualname__ = f"{rewrite.__name__}_on_channels_last_views"
    return run


def leaky_relu_as_relu(model: nn.Module) -> nn.Module:
    def make(m: nn.Module) -> nn.Module | None:
        return MulReluLeaky(m.negative_slope) if isinstance(m, nn.LeakyReLU) else None

    return _replace(model, make)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every inference-mode BatchNorm2d that directly follows a conv in a Sequential (identity
    modules in between are skipped) into that conv; the BatchNorm becomes an identity."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        conv: nn.Module | None = None
        for name, child in list(seq.named_children()):
            if isinstance(child, nn.Conv2d | nn.ConvTranspose2d) and child.groups == 1:
                conv = child
            elif isinstance(child, nn.BatchNorm2d) and conv is not None and child.track_running_stats:
                scale = child.weight / torch.sqrt(child.running_var + child.eps)
                shift = child.bias - child.running_mean * scale
                out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
                shape = [1] * conv.weight.dim()
                shape[out_dim] = -1
                conv.weight.mul_(scale.view(shape))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
                conv.bias = nn.Parameter(bias * scale + shift)
                setattr(seq, name, nn.Identity())
                conv = None
            elif not isinstance(child, nn.Identity):
                conv = None
    return model


# Passes for each target, in order. ONNX Runtime has fast native Pad(reflect),
# InstanceNormalization and padded ConvTranspose kernels, so ONNX only folds constants.
ONNX_PASSES: tuple[Pass, ...] = (fold_batchnorm,)
_TFLITE_SHARED_PASSES: tuple[Pass, ...] = (  # float and int8 alike; they differ in the norms' means
    fold_batchnorm,
    channels_last_views(transposed_conv_as_phases),
    transposed_conv_without_padding,
    channels_last_views(reflection_pad_as_slices),
)
TFLITE_PASSES: tuple[Pass, ...] = (*_TFLITE_SHARED_PASSES, channels_last_views(instance_norm_as_row_means))
TFLITE_INT8_PASSES: tuple[Pass, ...] = (
    *_TFLITE_SHARED_PASSES, channels_last_views(instance_norm_as_mean), leaky_relu_as_relu)  # fmt: skip
# ExecuTorch lowers to XNNPACK from the same rewrites, in NCHW form. Its XNNPACK partitioner
# delegates a mean over the two innermost axes only, so its norms keep one MEAN.
EXECUTORCH_PASSES: tuple[Pass, ...] = (
    fold_batchnorm,
    transposed_conv_as_phases,
    transposed_conv_without_padding,
    reflection_pad_as_slices,
    instance_norm_as_mean,
)
EXECUTORCH_INT8_PASSES: tuple[Pass, ...] = (*EXECUTORCH_PASSES, leaky_relu_as_relu)


def apply_passes(model: nn.Module, passes: tuple[Pass, ...]) -> nn.Module:
    out = model
    for p in passes:
        out = p(out)
    return out.eval()
