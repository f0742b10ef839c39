"""Each export pass alone: same outputs before and after, and the rewrite actually happened."""

import pytest
import torch
from torch import nn

import compress
from export import passes
from tests.conftest import TINY, randomize_norms


def _same(before: nn.Module, after: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        assert (before.eval()(x) - after.eval()(x)).abs().max() < 1e-5


@pytest.mark.parametrize(("padding", "output_padding", "stride"), [(1, 1, 2), (1, 0, 2), (2, 1, 3), (0, 0, 2)])
def test_transposed_conv_without_padding(padding, output_padding, stride):
    conv = nn.ConvTranspose2d(4, 6, 3, stride, padding, output_padding)
    model = nn.Sequential(conv)
    out = passes.transposed_conv_without_padding(model)
    _same(model, out, torch.randn(2, 4, 9, 7))
    rewritten = [m for m in out.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert rewritten[0].padding == (0, 0) and rewritten[0].output_padding == (0, 0)
    assert conv.padding == (padding, padding)  # the input module is untouched


@pytest.mark.parametrize("channels_last_views", [False, True])  # ExecuTorch's form, LiteRT's
@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding", "bias"),
    [(4, 2, 1, 0, True), (3, 2, 1, 1, False), (4, 2, 1, 0, False), (2, 2, 0, 0, True), (5, 3, 1, 0, True)],
)  # the U-Net's and the ResNet's up convs, and other strides and kernels
def test_transposed_conv_as_phases(kernel, stride, padding, output_padding, bias, channels_last_views):
    conv = nn.ConvTranspose2d(4, 6, kernel, stride, padding, output_padding, bias=bias)
    model = nn.Sequential(conv)
    rewrite = passes.transposed_conv_as_phases
    if channels_last_views:  # through the wrapper the TFLite passes use
        rewrite = passes.channels_last_views(rewrite)
    out = rewrite(model)
    _same(model, out, torch.randn(2, 4, 9, 7))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in out.modules())
    assert isinstance(out[0], passes.PhaseConvTranspose2d) and len(out[0].convs) == stride**2
    taps = sum(c.kernel_size[0] * c.kernel_size[1] for c in out[0].convs)
    assert taps == kernel * kernel  # each tap of the transposed conv once: no MACs on zeros
    assert [c.kernel_size for c in out[0].convs] == passes.phase_kernels(kernel, stride, padding, output_padding)
    assert isinstance(model[0], nn.ConvTranspose2d)  # the input module is untouched


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(4, 1, 0), (3, 2, 0), (1, 2, 0)])
def test_phases_leave_what_they_cannot_compute_alone(kernel, stride, padding):
    """DCGAN's first layer (stride 1 on a 1x1 input), an output that is not s times the input,
    a kernel smaller than the stride: left as transposed convs."""
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, kernel, stride, padding))
    assert isinstance(passes.transposed_conv_as_phases(model)[0], nn.ConvTranspose2d)


@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (3, 3, 3, 3), (0, 2, 1, 3)])
@pytest.mark.parametrize("channels_last_views", [False, True])
def test_reflection_pad_as_slices(pad, channels_last_views):
    model = nn.Sequential(nn.ReflectionPad2d(pad))
    out = passes.reflection_pad_as_slices(model, channels_last_views)
    _same(model, out, torch.randn(2, 3, 8, 9))
    assert not any(isinstance(m, nn.ReflectionPad2d) for m in out.modules())


@pytest.mark.parametrize("by_rows", [False, True])
@pytest.mark.parametrize("channels_last_views", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_as_mean(affine, channels_last_views, by_rows):
    norm = nn.InstanceNorm2d(5, affine=affine)
    if affine:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    model = nn.Sequential(norm)
    out = passes.instance_norm_as_mean(model, channels_last_views, by_rows)
    _same(model, out, torch.randn(2, 5, 6, 7) * 3 + 1)
    assert isinstance(out[0], passes.MeanInstanceNorm2d) and out[0].by_rows == by_rows


def test_fold_batchnorm_into_conv_and_transposed_conv():
    plan = compress.full_plan("unet", **TINY["unet"][0])
    model = compress.build_generator("unet", plan)
    randomize_norms(model)
    out = passes.fold_batchnorm(model)
    _same(model, out, torch.rand(2, 3, 32, 32) * 2 - 1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in out.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_all_tflite_passes_on_every_generator(tiny):
    arch, plan, shape = tiny
    model = compress.build_generator(arch, plan)
    randomize_norms(model)
    _same(model, passes.apply_passes(model, passes.TFLITE_PASSES), torch.randn(shape))
