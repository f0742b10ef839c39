"""import_generator: official pytorch-CycleGAN-and-pix2pix and gan-compression files (built here
from random weights under the official key names) compute what the original networks compute."""

from __future__ import annotations

import pytest
import torch

import compress
from compress.formats import import_generator
from tests.official_layouts import OfficialResnet, OfficialUnet, randomize


def _save(tmp_path, state: dict, name: str = "latest_net_G.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def _assert_same_function(original: torch.nn.Module, imported: torch.nn.Module, shape, low: float = -1.0) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * (1 - low) + low
    with torch.no_grad():
        want, got = original.eval()(x.clone()), imported.eval()(x.clone())
    assert want.std() > 0.05  # a saturated output would match anything
    assert (want - got).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("n_blocks", "ngf", "dropout"), [(6, 8, False), (9, 4, True), (6, 12, True), (9, 8, False)])
def test_official_resnet_imports_with_inferred_sizes(tmp_path, n_blocks, ngf, dropout):
    original = randomize(OfficialResnet(ngf, n_blocks, dropout))
    path = _save(tmp_path, original.state_dict(), "latest_net_G_A.pth")
    imported = import_generator(path)
    assert imported.plan == compress.full_plan("resnet", ngf=ngf, n_blocks=n_blocks)
    assert f"resnet_{n_blocks}blocks" in imported.source and ("dropout" in imported.source) == dropout
    assert not imported.model.training
    _assert_same_function(original, imported.model, (2, 3, 32, 32))


@pytest.mark.parametrize(("num_downs", "size", "dropout"), [(7, 128, True), (8, 256, False), (8, 256, True)])
def test_official_unet_imports_with_batchnorm_statistics(tmp_path, num_downs, size, dropout):
    original = randomize(OfficialUnet(4, num_downs, dropout))
    path = _save(tmp_path, original.state_dict())
    imported = import_generator(path, arch="unet", ngf=4, num_downs=num_downs)
    assert imported.plan.sizes["num_downs"] == num_downs
    assert {7: "unet_128", 8: "unet_256"}[num_downs] in imported.source
    _assert_same_function(original, imported.model, (1, 3, size, size))


def test_legacy_instance_norm_statistics_are_dropped(tmp_path):
    legacy = randomize(OfficialResnet(8, 6, legacy_norm=True))
    state = legacy.state_dict()
    assert any(k.endswith("running_mean") for k in state)  # as old PyTorch saved them
    imported = import_generator(_save(tmp_path, state))
    assert any("legacy InstanceNorm" in note for note in imported.notes)
    current = OfficialResnet(8, 6)  # the official loader deletes those keys and never uses them
    current.load_state_dict({k: v for k, v in state.items() if k in current.state_dict()})
    _assert_same_function(current, imported.model, (1, 3, 32, 32))


def test_batchnorm_without_batch_counts_and_a_dataparallel_prefix(tmp_path):
    original = randomize(OfficialUnet(4, 7))
    state = {f"module.{k}": v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    imported = import_generator(_save(tmp_path, state))
    assert any("module." in note for note in imported.notes)
    assert any("num_batches_tracked" in note for note in imported.notes)
    _assert_same_function(original, imported.model, (1, 3, 128, 128))


def test_gan_compression_teacher_imports(tmp_path):
    # gan-compression's ResnetGenerator: always a Dropout module in each block (so the second conv
    # is conv_block.6), and its forward clamps the input to [-1, 1], the images' range.
    original = randomize(OfficialResnet(16, 9, dropout=True, clamp_input=True))
    imported = import_generator(_save(tmp_path, original.state_dict(), "latest_net_G.pth"), arch="resnet", ngf=16)
    assert "gan-compression" in imported.source
    _assert_same_function(original, imported.model, (2, 3, 64, 64))


def test_a_wrapped_checkpoint_and_our_own_files(tmp_path):
    original = randomize(OfficialResnet(8, 6))
    imported = import_generator(_save(tmp_path, {"netG": original.state_dict(), "epoch": torch.tensor(200)}))
    assert any("'netG'" in note for note in imported.notes)
    ours = compress.build_generator("resnet", compress.full_plan("resnet", ngf=8, n_blocks=2))
    path = compress.save_checkpoint(tmp_path / "ours.pt", ours)
    again = import_generator(path, arch="resnet", ngf=8)
    assert again.plan == ours.plan and "CoroNet" in again.source
    _assert_same_function(ours, again.model, (1, 3, 32, 32))


def _refusal(path, **kwargs) -> str:
    with pytest.raises(compress.CoronetError) as info:
        import_generator(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_files_that_are_no_generator_are_refused_in_one_line(tmp_path):
    disc = compress.build_discriminator("resnet", input_nc=6, ndf=8, n_layers=2)
    assert "discriminator" in _refusal(_save(tmp_path, disc.state_dict(), "latest_net_D.pth"))
    opt = torch.optim.Adam(OfficialResnet(4, 6).parameters())
    opt.step()
    assert "optimizer state" in _refusal(_save(tmp_path, opt.state_dict(), "opt.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 64)
    assert "not a PyTorch weights file" in _refusal(junk)
    other = {"conv1.weight": torch.randn(8, 3, 3, 3), "fc.weight": torch.randn(10, 8), "fc.bias": torch.randn(10)}
    assert "neither a ResNet" in _refusal(_save(tmp_path, other, "classifier.pth"))
    batch_norm = randomize(OfficialResnet(8, 6, batch_norm=True))
    assert "norm=instance" in _refusal(_save(tmp_path, batch_norm.state_dict(), "bn_resnet.pth"))
    instance_unet = randomize(OfficialUnet(4, 7, instance_norm=True))
    assert "read with BatchNorm (norm=batch)" in _refusal(_save(tmp_path, instance_unet.state_dict(), "in_unet.pth"))
    whole = tmp_path / "whole_model.pth"
    torch.save(OfficialResnet(4, 6), whole)
    assert "pickled" in _refusal(whole)
    assert "does not exist" in _refusal(tmp_path / "missing.pth")


def test_a_contradiction_with_the_asked_sizes_is_refused(tmp_path):
    path = _save(tmp_path, randomize(OfficialResnet(8, 6)).state_dict())
    assert "resnet generator, but a unet" in _refusal(path, arch="unet")
    assert "ngf = 8, but ngf = 16" in _refusal(path, arch="resnet", ngf=16)
    assert "n_blocks = 6, but n_blocks = 9" in _refusal(path, n_blocks=9)
