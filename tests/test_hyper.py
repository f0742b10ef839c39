import pytest
import torch

import compress
from compress import hypernet
from compress.hyper import apply_shrink, init_from_dense
from compress.layers import ChannelMask, HyperConv
from compress.models import example_input_shape
from tests.conftest import randomize_norms
from tests.tools import require


def _half_pruned(arch, plan, seed=0):
    """A hyper generator whose latents are random with about half of each group pruned."""
    torch.manual_seed(seed)
    hyper = compress.HyperGenerator(arch, plan, embedding_dim=4, threshold=0.6745)  # P(|z|<=t) = 0.5
    with torch.no_grad():
        for g in plan.prunable:
            hyper.latents[g][0] = 2.0  # no group empties
    randomize_norms(hyper, seed)
    return hyper.eval()


def test_slim_equals_hyper(tiny):
    arch, plan, shape = tiny
    hyper = _half_pruned(arch, plan)
    pruned = hyper.pruned_plan()
    for g in plan.prunable:
        assert 0 < pruned[g] < plan[g], g  # every prunable group, trunk and skips too, is cut
    slim = compress.slim_generator(hyper)
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = hyper(x), slim(x)
    assert expected.std() > 0.01  # a non-trivial output
    assert (got - expected).abs().max() < 1e-5
    assert slim.plan == pruned
    assert not any(isinstance(m, HyperConv | ChannelMask) for m in slim.modules())
    single = (1, *shape[1:])
    assert compress.count_macs(slim, single) == compress.PlanCost(plan, single).count(pruned.widths)


def test_slim_equals_hyper_in_training_mode_for_batchnorm():
    plan = compress.full_plan("unet", ngf=8, num_downs=5)
    hyper = _half_pruned("unet", plan)
    hyper.train()
    slim = compress.slim_generator(hyper)
    assert slim.training
    for m in [*hyper.modules(), *slim.modules()]:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # dropout draws different masks for different widths
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (slim(x) - hyper(x)).abs().max() < 1e-5


def test_zero_latent_entry_gives_exactly_zero_channel():
    plan = compress.full_plan("resnet", ngf=8, n_blocks=2)
    torch.manual_seed(0)
    hyper = compress.HyperGenerator("resnet", plan)
    with torch.no_grad():
        hyper.latents["trunk"][3] = 0.0
    seen = []

    def record(module, inputs, output):
        seen.append((inputs[0][:, 3], output[:, 3]))

    for m in hyper.modules():
        if isinstance(m, ChannelMask) and m.group == "trunk":
            m.register_forward_hook(record)
    hyper(torch.randn(2, 3, 32, 32))
    assert len(seen) == 1 + 2  # the down conv and both blocks write the trunk
    for before, after in seen:
        assert before.abs().max() > 0  # the mask, not luck, zeroes it
        assert torch.equal(after, torch.zeros_like(after))


def test_hypernetwork_parameters_per_conv():
    """Each conv's weight depends on exactly C_in*C_out*(1 + 2m + k^2 m + k^2) hypernetwork
    entries (those with a non-zero gradient), and the hypernetwork holds nothing else."""
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    for m in (3, 8):
        torch.manual_seed(0)
        hyper = compress.HyperGenerator("resnet", plan, embedding_dim=m)
        convs = [mod for mod in hyper.modules() if isinstance(mod, HyperConv)]
        assert len(convs) == 8
        expected = []
        for conv in convs:
            k2 = conv.spec.kernel**2
            expected.append(conv.in_width * conv.out_width * (1 + 2 * m + k2 * m + k2))
            hyper.zero_grad(set_to_none=True)
            weight = conv.generate_weight()
            (weight * torch.randn_like(weight)).sum().backward()
            touched = sum(int((p.grad != 0).sum()) for p in hyper.hypernet.parameters() if p.grad is not None)
            assert touched == expected[-1], conv
            assert sum(p.numel() for p in hyper.hypernet.conv_parameters(conv.index)) == expected[-1]
        assert sum(p.numel() for p in hyper.hypernet.parameters()) == sum(expected)


@pytest.mark.parametrize(("arch", "sizes", "kernels"), [
    ("unet", {"ngf": 4, "num_downs": 5}, {4}),
    ("resnet", {"ngf": 4, "n_blocks": 2}, {3, 7}),
])  # fmt: skip
def test_batched_and_single_weight_generation_agree(arch, sizes, kernels):
    hyper = compress.HyperGenerator(arch, compress.full_plan(arch, **sizes))
    batched = hyper.hypernet.generate_all(hyper._latent_of, batched=True)  # the GPU path
    convs = [m for m in hyper.modules() if isinstance(m, HyperConv)]
    assert len(batched) == len(convs) and {w.shape[-1] for w in batched} == kernels
    for conv in convs:
        assert torch.allclose(conv.generate_weight(), batched[conv.index], atol=1e-6)
    sum(w.sum() for w in batched).backward()
    assert all(p.grad is not None for p in hyper.hypernet.parameters())


def _weights_and_grads(hyper, batched):
    hyper.zero_grad(set_to_none=True)
    weights = hyper.hypernet.generate_all(hyper._latent_of, batched=batched)
    sum((w * w).sum() for w in weights).backward()
    return [w.detach() for w in weights], [p.grad.clone() for p in hyper.parameters() if p.grad is not None]


def test_compiled_weight_generation_equals_eager_with_one_graph():
    require("g++")  # torch.compile's CPU backend builds C++
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    models = [
        compress.HyperGenerator("resnet", compress.full_plan("resnet", ngf=4, n_blocks=2)),  # k 7 and 3
        compress.HyperGenerator("unet", compress.full_plan("unet", ngf=4, num_downs=5)),  # k 4, concat inputs
    ]
    expected = [_weights_and_grads(h, batched) for h in models for batched in (False, True)]
    for hyper in models:
        assert hyper.hypernet.use_compiled()
    got = [_weights_and_grads(h, batched) for h in models for batched in (False, True)]
    for (w_eager, g_eager), (w_compiled, g_compiled) in zip(expected, got, strict=True):
        for a, b in zip(w_eager + g_eager, w_compiled + g_compiled, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # one dynamic graph for the convs' own parameters (conv by conv) and one for the concatenated
    # tensors of the batched path, whatever the shapes: no recompile per shape, no fallback to eager
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


def test_weight_generation_stays_eager_when_compiling_fails(monkeypatch):
    def no_compiler():
        def compiled(*_):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return compiled

    monkeypatch.setattr(hypernet, "_compiled_entries_to_weights", no_compiler)
    hyper = compress.HyperGenerator("resnet", compress.full_plan("resnet", ngf=4, n_blocks=1))
    with pytest.warns(UserWarning, match="InvalidCxxCompiler"):
        assert not hyper.hypernet.use_compiled()
    assert hyper(torch.randn(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_generated_weight_depends_on_the_latents():
    plan = compress.full_plan("dcgan", ngf=8, nz=16, image_size=16)
    hyper = compress.HyperGenerator("dcgan", plan)
    conv = next(m for m in hyper.modules() if isinstance(m, HyperConv))
    w = conv.generate_weight()
    w.sum().backward()
    assert hyper.latents[conv.spec.out_group].grad.abs().sum() > 0
    assert w.shape == (conv.out_width, conv.in_width, 4, 4)


def test_soft_threshold_closed_form():
    z = torch.tensor([3.0, -2.0, 0.5, -0.25, 0.0, 1.0])
    out = compress.soft_threshold(z, 0.75)
    assert torch.equal(out, torch.tensor([2.25, -1.25, 0.0, 0.0, 0.0, 0.25]))


def test_soft_threshold_keeps_min_channels():
    z = torch.tensor([0.3, -0.9, 0.1, 0.5])
    out = compress.soft_threshold(z, 1.0, min_keep=2)
    assert torch.equal(out, torch.tensor([0.0, -0.9, 0.0, 0.5]))  # the two largest |z| stay


def test_proximal_step_thresholds_shared_latents_once_and_keeps_min_channels():
    plan = compress.full_plan("resnet", ngf=8, n_blocks=4)  # the trunk feeds 5 convs
    torch.manual_seed(0)
    hyper = compress.HyperGenerator("resnet", plan)
    before = {g: hyper.latents[g].detach().clone() for g in plan.widths}
    compress.proximal_step(hyper, lam=3.0, lr=0.1, min_channels=1)
    for g in plan.prunable:
        expected = torch.sign(before[g]) * torch.clamp(before[g].abs() - 0.3, min=0)
        if (expected != 0).sum() >= 1:
            assert torch.allclose(hyper.latents[g], expected), g
    for g in plan.fixed:
        assert torch.equal(hyper.latents[g], before[g])  # RGB is never pruned
    apply_shrink(hyper, 100.0, min_channels=3)
    assert all(w == 3 for g, w in hyper.pruned_widths().items() if g in plan.prunable)
    assert compress.slim_generator(hyper).plan["trunk"] == 3


def test_hyper_forward_runs_on_each_family(tiny):
    arch, plan, shape = tiny
    hyper = compress.HyperGenerator(arch, plan)
    out = hyper(torch.randn(example_input_shape(plan, shape[-1], batch=2)))
    assert out.shape[:2] == (2, 3)
    out.mean().backward()
    assert all(p.grad is not None for name, p in hyper.named_parameters() if name.endswith("W2"))


def test_pruning_a_whole_group_is_refused():
    plan = compress.full_plan("resnet", ngf=8, n_blocks=1)
    hyper = compress.HyperGenerator("resnet", plan)
    with torch.no_grad():
        hyper.latents["up2"].zero_()
    with pytest.raises(ValueError, match="up2"):
        hyper.pruned_plan()


def test_soft_threshold_rounds_the_kept_count_up():
    z = torch.tensor([0.9, -0.1, 0.5, 0.05, -0.7, 0.2, 0.3, 0.0])
    out = compress.soft_threshold(z, 0.4, round_to=4)  # 3 survive (0.9, 0.5, -0.7) → keep 4
    assert torch.allclose(out, torch.tensor([0.5, 0.0, 0.1, 0.0, -0.3, 0.0, 0.3, 0.0]))
    out = compress.soft_threshold(z, 0.0, round_to=4)  # 7 alive: rounding never revives a zero
    assert torch.equal(out, z)


def test_init_from_dense_reproduces_the_dense_generator(tiny):
    arch, plan, shape = tiny
    torch.manual_seed(0)
    dense = compress.build_generator(arch, plan).eval()
    randomize_norms(dense)
    hyper = compress.HyperGenerator(arch, plan).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert (hyper(x) - dense(x)).abs().max() > 1e-2  # different before
        init_from_dense(hyper, dense)
        assert (hyper(x) - dense(x)).abs().max() < 1e-5
    with pytest.raises(compress.PlanError, match="plan differs"):
        init_from_dense(hyper, compress.build_generator(arch, plan.with_widths({plan.prunable[0]: 1})))


def test_round_to_applies_to_the_minimum_too():
    z = torch.tensor([0.9, -0.1, 0.5, 0.05, -0.7, 0.2, 0.3, 0.4, 0.6, 0.35])
    out = compress.soft_threshold(z, 5.0, min_keep=1, round_to=4)  # everything would die
    assert int((out != 0).sum()) == 4  # the floor is one block of 4, not 1 channel
