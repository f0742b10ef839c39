import pytest
import torch

import compress
from compress.models import build_discriminator


def test_generators_map_to_images_of_the_right_shape(tiny):
    arch, plan, shape = tiny
    model = compress.build_generator(arch, plan).eval()
    out = model(torch.randn(shape))
    size = plan.sizes.get("image_size", shape[-1])
    assert out.shape == (shape[0], 3, size, size)
    assert out.abs().max() <= 1.0  # tanh
    assert model.plan is plan and model.arch == arch


def test_resnet_groups_follow_the_residual_structure():
    plan = compress.full_plan("resnet", ngf=8, n_blocks=3)
    assert list(plan.widths) == [
        "rgb_in", "stem", "down1", "trunk", "block0", "block1", "block2", "up1", "up2", "rgb_out"
    ]  # fmt: skip
    assert plan.fixed == {"rgb_in", "rgb_out"}
    specs = [m.spec for m in compress.build_generator("resnet", plan).modules() if hasattr(m, "spec")]
    writes_trunk = [s for s in specs if s.out_group == "trunk"]
    assert len(writes_trunk) == 1 + 3  # second down conv + each block's second conv
    assert specs[-3].transposed and specs[-3].output_padding == 1


def test_unet_skips_concatenate_in_tensor_order():
    plan = compress.full_plan("unet", ngf=8, num_downs=6)
    specs = [m.spec for m in compress.build_generator("unet", plan).modules() if hasattr(m, "spec")]
    assert ("down3", "up4") in [s.in_groups for s in specs]
    assert {"down1", "down6", "up6", "rgb_in", "rgb_out"} == set(plan.fixed)


def test_a_slim_plan_builds_a_smaller_model(tiny):
    arch, plan, shape = tiny
    small = plan.with_widths({g: 1 for g in plan.prunable})
    model = compress.build_generator(arch, small).eval()
    assert model(torch.randn(shape)).shape[1] == 3
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in compress.build_generator(arch, plan).parameters()
    )


def test_unknown_arch_is_one_clear_error():
    with pytest.raises(compress.UnknownArchError, match=r"unknown generator architecture 'vgg'.*resnet, unet, dcgan"):
        compress.full_plan("vgg")
    with pytest.raises(compress.PlanError, match="unknown size 'depth'"):
        compress.full_plan("resnet", depth=3)


def test_plan_that_does_not_match_the_architecture_is_rejected():
    resnet2 = compress.full_plan("resnet", ngf=8, n_blocks=2)
    resnet3 = compress.full_plan("resnet", ngf=8, n_blocks=3)
    wrong = compress.ChannelPlan("resnet", resnet3.sizes, resnet2.widths, resnet2.fixed)
    with pytest.raises(compress.PlanError, match="missing groups \\['block2'\\]"):
        compress.build_generator("resnet", wrong)
    with pytest.raises(compress.PlanError, match="fixed"):
        compress.build_generator(
            "resnet", compress.ChannelPlan("resnet", resnet2.sizes, {**resnet2.widths, "rgb_out": 2}, resnet2.fixed)
        )
    with pytest.raises(compress.PlanError, match="at least 1"):
        compress.build_generator(
            "resnet", compress.ChannelPlan("resnet", resnet2.sizes, {**resnet2.widths, "trunk": 0}, resnet2.fixed)
        )
    with pytest.raises(compress.PlanError, match="not for 'unet'"):
        compress.build_generator("unet", resnet2)


def test_plan_round_trips_through_json():
    plan = compress.full_plan("unet", ngf=8, num_downs=5)
    assert compress.ChannelPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(compress.PlanError, match="not a channel plan"):
        compress.ChannelPlan.from_dict({"arch": "unet"})


@pytest.mark.parametrize(("arch", "kwargs", "shape", "out"), [
    ("resnet", {"ndf": 8}, (2, 3, 64, 64), (2, 1, 6, 6)),  # 70x70 PatchGAN on 64x64
    ("dcgan", {"ndf": 8, "image_size": 32}, (2, 3, 32, 32), (2, 1)),
])  # fmt: skip
def test_discriminators(arch, kwargs, shape, out):
    d = build_discriminator(arch, **kwargs)
    assert d(torch.randn(shape)).shape == out
