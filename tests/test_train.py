import pytest
import torch

import compress
from compress.data import builtin_paired, builtin_unpaired, random_batches
from compress.search import SearchConfig, run_search
from compress.train import GanTrainer, ImagePool, TrainConfig, converge, linear_decay

CPU = torch.device("cpu")
SMALL = {"ndf": 8, "n_layers_d": 2}


def _batch(setup):
    if setup == "dcgan":
        return builtin_paired(2, 16, seed=0)[1]
    if setup == "cyclegan":
        return builtin_unpaired(2, 32, seed=0)
    return builtin_paired(2, 32, seed=0)


@pytest.mark.parametrize(("setup", "arch", "sizes"), [
    ("pix2pix", "unet", {"ngf": 4, "num_downs": 5}),
    ("pix2pix", "resnet", {"ngf": 4, "n_blocks": 1}),
    ("cyclegan", "resnet", {"ngf": 4, "n_blocks": 1}),
    ("dcgan", "dcgan", {"ngf": 4, "nz": 8, "image_size": 16}),
])  # fmt: skip
@pytest.mark.parametrize("variant", ["hyper", "slim"])
def test_one_step_of_each_setup_changes_the_parameters(setup, arch, sizes, variant):
    torch.manual_seed(0)
    plan = compress.full_plan(arch, **sizes)
    g = compress.HyperGenerator(arch, plan)
    if variant == "slim":
        compress.proximal_step(g, lam=1.0, lr=0.5)
        g = compress.slim_generator(g)
    trainer = GanTrainer(g, plan, TrainConfig(setup=setup, **SMALL), CPU)
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in {"g": g, **trainer.nets}.items()}
    losses = trainer.step(_batch(setup))
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for name, net in {"g": g, **trainer.nets}.items():
        changed = any(not torch.equal(p, q) for p, q in zip(net.parameters(), before[name], strict=True))
        assert changed, name


def test_setup_must_fit_the_generator():
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    with pytest.raises(compress.ConfigError, match="does not fit"):
        GanTrainer(compress.build_generator("resnet", plan), plan, TrainConfig(setup="dcgan"), CPU)
    with pytest.raises(compress.ConfigError, match=r"train\.setup must be one of"):
        TrainConfig(setup="stylegan")


def test_search_slim_converge_on_tiny_data():
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=8, n_blocks=1)
    hyper = compress.HyperGenerator("resnet", plan, embedding_dim=4)
    train = TrainConfig(setup="pix2pix", converge_steps=6, decay_steps=3, **SMALL)
    search = SearchConfig(target_macs=0.5, lam=50.0, lr=1e-3, max_steps=200)
    a, b = builtin_paired(8, 32)
    batches = random_batches(a, b, 2)
    trainer = GanTrainer(hyper, plan, train, CPU)
    result = run_search(hyper, lambda _: trainer.step(next(batches)), search, compress.PlanCost(plan, (1, 3, 32, 32)),
                        progress=False)  # fmt: skip
    assert result.reached
    slim = compress.slim_generator(hyper).train()
    trainer.g = slim
    log = converge(trainer, batches, train, progress=False)
    assert [r["step"] for r in log] == list(range(1, 7))
    assert slim.plan == result.plan
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(0.0)  # decayed to 0 at the end
    assert compress.count_macs(slim, (1, 3, 32, 32)).macs / result.full_macs.macs == pytest.approx(result.ratio)


def test_linear_decay_and_image_pool():
    assert [linear_decay(s, 10, 4, 1.0) for s in (1, 6, 7, 8, 10)] == [1.0, 1.0, 0.75, 0.5, 0.0]
    pool = ImagePool(2, seed=0)
    first = pool.query(torch.zeros(2, 1, 1, 1))
    assert torch.equal(first, torch.zeros(2, 1, 1, 1)) and len(pool.images) == 2
    later = pool.query(torch.ones(50, 1, 1, 1))
    assert 0 < int((later == 0).sum()) < 50  # some old fakes come back


def test_cyclegan_compresses_the_deployed_direction():
    """With direction BtoA the compressed generator learns B → A: its identity and cycle
    terms see B images as its inputs."""
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    a, b, _ = builtin_unpaired(2, 32, seed=0)
    seen = []
    g = compress.build_generator("resnet", plan)
    g.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    GanTrainer(g, plan, TrainConfig(setup="cyclegan", direction="BtoA", **SMALL), CPU).step((a, b))
    assert torch.equal(seen[0], b)  # first call: fake = G(input domain), here B
    with pytest.raises(compress.ConfigError, match="direction must be AtoB or BtoA"):
        TrainConfig(direction="up")
