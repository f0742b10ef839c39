"""The search from a pretrained generator: saliency latents, step 0 reproducing the generator,
and a proximal step that leaves the kept channels' latents alone."""

from __future__ import annotations

import pytest
import torch

import compress
from compress.config import load_config
from compress.hyper import init_from_dense
from compress.saliency import channel_saliency, latents_from_saliency
from compress.search import ControlledPruner, SearchConfig
from compress.stages import search_stage
from tests.conftest import randomize_norms
from tests.official_layouts import OfficialResnet, randomize


@pytest.mark.parametrize(("measure", "fit"), [("in", "scale"), ("out", "offset"), ("inout", "scale")])
def test_step_zero_reproduces_the_pretrained_generator(tiny, measure, fit):
    arch, plan, shape = tiny
    torch.manual_seed(0)
    dense = compress.build_generator(arch, plan)
    randomize_norms(dense)
    dense.eval()
    hyper = compress.HyperGenerator(arch, plan).eval()
    latents = latents_from_saliency(channel_saliency(dense, measure))
    init_from_dense(hyper, dense, latents, fit=fit)
    for group, values in latents.items():
        assert torch.equal(hyper.latents[group].detach(), values)
        assert values.mean().item() == pytest.approx(1.0, rel=1e-5)
    x = torch.randn(shape)
    with torch.no_grad():
        assert (hyper(x) - dense(x)).abs().max().item() <= 1e-5


def test_saliency_ranks_an_unused_channel_last():
    plan = compress.full_plan("resnet", ngf=8, n_blocks=2)
    dense = compress.build_generator("resnet", plan)
    with torch.no_grad():  # nothing reads channel 3 of block0: its "in" saliency is 0
        dense.model[13].conv_block[6].weight[:, 3] = 0
        dense.model[5].weight[2] = 0  # nothing writes channel 2 of down1: its "out" saliency is 0
    reads = channel_saliency(dense, "in")
    assert reads["block0"].argmin().item() == 3 and reads["block0"][3] == 0
    assert channel_saliency(dense, "out")["down1"].argmin().item() == 2
    assert latents_from_saliency(reads)["block0"][3] > 0  # small, but not pruned before the search
    with pytest.raises(ValueError, match="unknown saliency measure"):
        channel_saliency(dense, "taylor2")


def test_below_cut_shrinks_only_the_channels_the_target_prunes():
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=8, n_blocks=2)
    hyper = compress.HyperGenerator("resnet", plan)
    cost = compress.PlanCost(plan, (1, 3, 32, 32))
    config = SearchConfig(target_macs=0.5, tolerance=0.02, lam=1.0, lr=1.0, shrink="below_cut")
    pruner = ControlledPruner(hyper, cost, config)
    cut = pruner._cut()
    # the cut is where the plain shrink reaches the target
    assert cost.ratio(pruner._widths(cut)) <= 0.5 < cost.ratio(pruner._widths(cut * 0.999))
    before = {g: hyper.latents[g].detach().clone() for g in hyper.prunable_groups}
    pruner.step(lr=0.01)  # shrink by 0.01 below the cut
    moved = kept = 0
    for g in hyper.prunable_groups:
        under = before[g].abs() <= cut
        after = hyper.latents[g].detach()
        assert torch.equal(after[~under], before[g][~under])  # the kept channels stay as they were
        assert torch.allclose(after[under].abs(), (before[g][under].abs() - 0.01).clamp_min(0))
        moved, kept = moved + int(under.sum()), kept + int((~under).sum())
    assert moved > 0 and kept > 0


def test_search_from_an_official_file_with_saliency_and_below_cut(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    torch.save(randomize(OfficialResnet(8, 1)).state_dict(), path)
    tiny = {
        "data": {"image_size": 32, "n_train": 8, "n_test": 4, "batch_size": 2},
        "search": {"target_macs": 0.4, "lam": 50.0, "lr": 1e-3, "max_steps": 300, "init_from": str(path),
                   "shrink": "below_cut"},
        "train": {"ndf": 8, "n_layers_d": 2},
    }  # fmt: skip
    config = load_config(None, tiny)
    assert config.model.arch == "resnet" and config.model.sizes["ngf"] == 8 and config.model.read_from == str(path)
    result = search_stage(config, tmp_path / "run", progress=False)
    assert result.reached and 0.38 <= result.ratio <= 0.4
    plan = compress.full_plan("resnet", ngf=8, n_blocks=1)
    hyper, cost = compress.HyperGenerator("resnet", plan), compress.PlanCost(plan, (1, 3, 32, 32))
    assert ControlledPruner(hyper, cost, SearchConfig(init_from=str(path))).shrinks_below_cut  # auto, pretrained
    assert not ControlledPruner(hyper, cost, SearchConfig()).shrinks_below_cut  # auto, from scratch
    with pytest.raises(compress.ConfigError, match=r"search\.shrink must be auto, all or below_cut"):
        SearchConfig(shrink="some")


def test_the_scale_fit_fades_a_shrinking_channel_and_keeps_the_others():
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=8, n_blocks=1)
    dense = compress.build_generator("resnet", plan).eval()
    hyper = compress.HyperGenerator("resnet", plan).eval()
    init_from_dense(hyper, dense, latents_from_saliency(channel_saliency(dense, "in")), fit="scale")
    before = [w.clone() for w in hyper.generate_weights()]
    with torch.no_grad():
        hyper.latents["block0"][2] *= 0.5
    after = hyper.generate_weights()
    index = {m.spec: m.index for m in hyper.net.modules() if hasattr(m, "generate_weight")}
    writer = next(i for spec, i in index.items() if spec.out_group == "block0")
    reader = next(i for spec, i in index.items() if spec.in_groups == ("block0",))
    torch.testing.assert_close(after[writer][2], before[writer][2] * 0.5)  # its weights halve
    torch.testing.assert_close(after[reader][:, 2], before[reader][:, 2] * 0.5)
    assert torch.equal(after[writer][:2], before[writer][:2])
    assert torch.equal(after[reader][:, 3:], before[reader][:, 3:])
    untouched = [i for i in range(len(before)) if i not in (writer, reader)]
    assert all(torch.equal(after[i], before[i]) for i in untouched)
