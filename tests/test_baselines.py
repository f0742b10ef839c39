import torch

import compress
from compress.baselines import l1_importance, l1_prune, slice_generator, uniform_plan
from tests.conftest import randomize_norms


def test_uniform_plan_lands_at_or_below_the_target(tiny):
    _, plan, shape = tiny
    cost = compress.PlanCost(plan, (1, *shape[1:]))
    small = uniform_plan(plan, cost, 0.3)
    assert 0.15 < cost.ratio(small.widths) <= 0.3
    assert all(small[g] <= plan[g] for g in plan.prunable)


def test_slicing_a_dense_generator_equals_masking_its_channels():
    """Removing channels from a dense model = the dense model with those channels' outputs zeroed
    (via a hyper generator started from it, whose masks zero exactly those channels)."""
    plan = compress.full_plan("unet", ngf=8, num_downs=5)
    torch.manual_seed(0)
    dense = compress.build_generator("unet", plan).eval()
    randomize_norms(dense)
    keep = {g: torch.arange(0, plan[g], 2) for g in plan.prunable}  # every other channel
    small = slice_generator(dense, keep).eval()
    hyper = compress.HyperGenerator("unet", plan).eval()
    from compress.hyper import init_from_dense

    with torch.no_grad():
        for g in plan.prunable:
            hyper.latents[g][1::2] = 0.0
            hyper.latents[g][0::2] = hyper.latents[g][0::2].abs() + 1  # kept: nonzero
    init_from_dense(hyper, dense)  # reproduces the dense weights for these latents
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        assert (small(x) - hyper(x)).abs().max() < 1e-4


def test_l1_prune_keeps_the_largest_channels():
    plan = compress.full_plan("resnet", ngf=8, n_blocks=2)
    torch.manual_seed(0)
    dense = compress.build_generator("resnet", plan)
    with torch.no_grad():
        dense.model[1].weight[3].mul_(100)  # stem channel 3: by far the largest
    scores = l1_importance(dense)
    assert int(scores["stem"].argmax()) == 3
    cost = compress.PlanCost(plan, (1, 3, 32, 32))
    small = l1_prune(dense, cost, 0.25)
    assert cost.ratio(small.plan.widths) <= 0.25
    assert torch.allclose(small.model[1].weight.abs().sum((1, 2, 3)).max(), dense.model[1].weight[3].abs().sum())
