import pytest
import torch

import compress
from compress.models import example_input_shape


def test_resnet_dense_matches_published_counts():
    plan = compress.full_plan("resnet", ngf=64, n_blocks=9)
    count = compress.count_macs(compress.build_generator("resnet", plan), (1, 3, 256, 256))
    assert count.macs / 1e9 == pytest.approx(56.80, abs=0.01)
    assert count.true_macs / 1e9 == pytest.approx(49.55, abs=0.01)
    assert count.params / 1e6 == pytest.approx(11.378, abs=0.001)


def test_unet256_dense_matches_reference_layout():
    plan = compress.full_plan("unet", ngf=64, num_downs=8)
    count = compress.count_macs(compress.build_generator("unet", plan), (1, 3, 256, 256))
    assert count.macs / 1e9 == pytest.approx(18.14, abs=0.01)
    assert count.true_macs / 1e9 == pytest.approx(6.05, abs=0.01)
    # pix2pix's unet_256 layer by layer (convs without bias under BatchNorm, bias on the last
    # transposed conv): 19,532,800 down + 34,871,299 up conv weights + 9,856 BatchNorm = 54,413,955,
    # which pix2pix prints as 54.414 M. shared/reference/published.md rounds it to 54.40 M.
    assert count.params == 54_413_955


def test_transposed_conv_conventions():
    conv = torch.nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
    count = compress.count_macs(conv, (1, 8, 5, 5))
    assert count.macs == 10 * 10 * 4 * 8 * 9  # numel(output) * C_in * k^2
    assert count.true_macs == 5 * 5 * 8 * 4 * 9  # numel(input) * C_out * k^2
    assert count.params == 8 * 4 * 9 + 4


def test_plan_cost_equals_counting_the_built_module(tiny):
    arch, plan, shape = tiny
    cost = compress.PlanCost(plan, (1, *shape[1:]))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        widths = {grp: int(torch.randint(1, plan[grp] + 1, (1,), generator=g)) for grp in plan.prunable}
        small = plan.with_widths(widths)
        built = compress.count_macs(compress.build_generator(arch, small), (1, *shape[1:]))
        assert cost.count(small.widths) == built
    assert cost.ratio(plan.widths) == 1.0


def test_hyper_model_counts_at_full_width(tiny):
    arch, plan, shape = tiny
    dense = compress.count_macs(compress.build_generator(arch, plan), example_input_shape(plan, shape[-1]))
    hyper = compress.count_macs(compress.HyperGenerator(arch, plan), example_input_shape(plan, shape[-1]))
    assert (hyper.macs, hyper.true_macs) == (dense.macs, dense.true_macs)
    assert hyper.params > dense.params
