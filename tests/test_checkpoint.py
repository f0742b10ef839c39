import pytest
import torch

import compress


def test_generator_checkpoint_round_trips(tmp_path, tiny):
    arch, plan, shape = tiny
    small = plan.with_widths({g: max(1, plan[g] // 2) for g in plan.prunable})
    model = compress.build_generator(arch, small).eval()
    path = compress.save_checkpoint(tmp_path / "g.pt", model, {"note": "hello"})
    loaded = compress.load_checkpoint(path)
    assert loaded.kind == "generator" and loaded.plan == small and loaded.config == {"note": "hello"}
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), model(x))


def test_hyper_checkpoint_round_trips(tmp_path):
    plan = compress.full_plan("resnet", ngf=8, n_blocks=1)
    hyper = compress.HyperGenerator("resnet", plan, embedding_dim=3, threshold=0.1)
    compress.proximal_step(hyper, lam=5.0, lr=0.1)
    loaded = compress.load_checkpoint(compress.save_checkpoint(tmp_path / "h.pt", hyper))
    assert isinstance(loaded.model, compress.HyperGenerator)
    assert loaded.model.embedding_dim == 3 and loaded.model.threshold == 0.1
    assert loaded.model.pruned_plan() == hyper.pruned_plan()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), hyper(x))


def test_saving_is_atomic_and_leaves_no_temp_files(tmp_path):
    plan = compress.full_plan("dcgan", ngf=4, nz=8, image_size=8)
    model = compress.build_generator("dcgan", plan)
    compress.save_checkpoint(tmp_path / "g.pt", model)
    compress.save_checkpoint(tmp_path / "g.pt", model)
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt"]


@pytest.fixture
def saved(tmp_path):
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    return compress.save_checkpoint(tmp_path / "g.pt", compress.build_generator("resnet", plan))


def test_truncated_checkpoint_is_one_clear_error(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(compress.CheckpointError, match=r"corrupt or truncated.*re-create it"):
        compress.load_checkpoint(saved)


def test_corrupt_checkpoint_is_one_clear_error(saved):
    saved.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(compress.CheckpointError, match="corrupt or truncated"):
        compress.load_checkpoint(saved)


def test_foreign_and_missing_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(compress.CheckpointError, match="not a CoroNet checkpoint"):
        compress.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(compress.CheckpointError, match="does not exist"):
        compress.load_checkpoint(tmp_path / "nope.pt")


def test_untrusted_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"format": "coronetgan.checkpoint", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(compress.CheckpointError, match="corrupt or truncated"):
        compress.load_checkpoint(tmp_path / "evil.pt")


def _edit(path, **changes):
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        payload[key] = value(payload) if callable(value) else value
    torch.save(payload, path)


def test_plan_that_does_not_match_the_arch(saved):
    _edit(saved, plan=lambda p: {**p["plan"], "widths": {**p["plan"]["widths"], "block7": 4}})
    with pytest.raises(compress.PlanError, match="unexpected groups \\['block7'\\]"):
        compress.load_checkpoint(saved)


def test_unknown_arch(saved):
    _edit(saved, arch="vgg", plan=lambda p: {**p["plan"], "arch": "vgg"})
    with pytest.raises(compress.UnknownArchError, match="'vgg'"):
        compress.load_checkpoint(saved)


def test_weights_that_do_not_fit_the_plan(saved):
    _edit(saved, plan=lambda p: {**p["plan"], "widths": {**p["plan"]["widths"], "trunk": 8}})
    with pytest.raises(compress.CheckpointError, match="weights do not fit its plan"):
        compress.load_checkpoint(saved)


def test_a_checkpoint_that_asks_for_a_huge_model_is_refused_before_allocating(tmp_path):
    """A small crafted file whose plan describes a ResNet of ngf 40000 (~100 GB of weights)."""
    plan = compress.full_plan("resnet", ngf=40000, n_blocks=9)
    payload = {"format": "coronetgan.checkpoint", "version": 1, "arch": "resnet", "kind": "generator",
               "plan": plan.to_dict(), "state_dict": {}, "config": {}}  # fmt: skip
    torch.save(payload, tmp_path / "crafted.pt")
    assert (tmp_path / "crafted.pt").stat().st_size < 10_000
    with pytest.raises(compress.CheckpointError, match=r"describes a generator of \d+\.\d G parameters"):
        compress.load_checkpoint(tmp_path / "crafted.pt")


def test_a_damaged_discriminator_state_is_one_line(tmp_path):
    from compress.config import parse_config
    from compress.stages import converge_stage

    data = {"image_size": 32, "n_train": 4, "batch_size": 2}
    train = {"converge_steps": 1, "decay_steps": 0}
    config = parse_config({"model": {"arch": "resnet", "ngf": 4, "n_blocks": 1}, "data": data, "train": train})
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    compress.save_checkpoint(tmp_path / "slim.pt", compress.build_generator("resnet", plan), config.to_dict())
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "gan.pt").write_bytes(b"PK\x03\x04 half a zip file")
    with pytest.raises(compress.CheckpointError, match=r"gan\.pt is damaged or does not fit this config"):
        converge_stage(tmp_path, progress=False, config=config)
