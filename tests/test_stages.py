"""The compress stages in-process on tiny configs: starting from a dense generator, distilling."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import compress
from compress.config import load_config
from compress.stages import converge_stage, search_stage, slim_stage

TINY = {
    "model": {"arch": "resnet", "ngf": 8, "n_blocks": 1},
    "data": {"image_size": 32, "n_train": 8, "n_test": 4, "batch_size": 2},
    "search": {"target_macs": 0.5, "lam": 50.0, "lr": 1e-3, "max_steps": 300},
    "train": {"ndf": 8, "n_layers_d": 2, "converge_steps": 3, "decay_steps": 1},
}


def _config(**sections):
    merged = {k: dict(v) for k, v in TINY.items()}
    for name, values in sections.items():
        merged[name].update(values)
    return load_config(None, merged)


def test_start_from_dense_and_distill(tmp_path):
    torch.manual_seed(0)
    dense = compress.build_generator("resnet", compress.full_plan("resnet", ngf=8, n_blocks=1))
    teacher = compress.save_checkpoint(tmp_path / "dense.pt", dense)
    config = _config(search={"init_from": str(teacher)}, train={"teacher": str(teacher), "distill_weight": 1.0})
    run = tmp_path / "run"
    assert search_stage(config, run, progress=False).reached
    slim_stage(run)
    result = converge_stage(run, progress=False)
    assert result.final_losses["distill"] > 0
    records = [json.loads(line) for line in (run / "converge_log.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["distill"] > 0 for r in records)


def test_a_teacher_of_another_model_is_refused(tmp_path):
    other = compress.build_generator("resnet", compress.full_plan("resnet", ngf=4, n_blocks=1))
    path = compress.save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(compress.CheckpointError, match="holds a resnet generator with ngf = 4, but ngf = 8"):
        search_stage(_config(search={"init_from": str(path)}), tmp_path / "run", progress=False)
    with pytest.raises(compress.ConfigError, match=r"needs train\.teacher"):
        _config(train={"distill_weight": 1.0})


@pytest.mark.parametrize("setup", ["cyclegan", "dcgan"])
def test_other_setups_run_through_the_stages(tmp_path, setup):
    model = {"arch": "dcgan", "ngf": 16, "nz": 8, "image_size": 16} if setup == "dcgan" else TINY["model"]
    data = {"image_size": 16} if setup == "dcgan" else {}
    config = load_config(
        None,
        {**TINY, "model": model, "data": {**TINY["data"], **data}, "train": {**TINY["train"], "setup": setup}},
    )
    run = tmp_path / "run"
    assert search_stage(config, run, progress=False).reached
    slim = slim_stage(run)
    result = converge_stage(run, progress=False)
    assert result.steps == 3 and compress.load_checkpoint(result.path).plan == slim.plan
    assert (result.paired is None) == (setup == "dcgan")


def test_an_interrupted_search_resumes_its_step_count(tmp_path):
    run = tmp_path / "run"
    short = _config(search={"max_steps": 3, "checkpoint_every": 2})
    with pytest.raises(compress.SearchMissError):
        search_stage(short, run, progress=False)
    assert (run / "checkpoints" / "search_state.pt").is_file()
    steps = [json.loads(line)["step"] for line in (run / "search_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    result = search_stage(_config(search={"checkpoint_every": 2}), run, progress=False)  # a larger budget
    steps = [json.loads(line)["step"] for line in (run / "search_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, result.steps + 1)) and result.steps > 3 and result.reached
    assert not (run / "checkpoints" / "search_state.pt").exists()
    with pytest.raises(compress.SearchMissError):
        search_stage(short, tmp_path / "run2", progress=False)
    state = tmp_path / "run2" / "checkpoints" / "search_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # damaged: the next run starts afresh, no traceback
    other = _config(search={"target_macs": 0.4, "checkpoint_every": 2, "max_steps": 3, "allow_miss": True})
    assert search_stage(other, tmp_path / "run2", progress=False).steps == 3  # a changed config starts afresh
    steps = [json.loads(line)["step"] for line in (tmp_path / "run2" / "search_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_an_interrupted_converge_resumes_its_step_count(tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = _config(search={"checkpoint_every": 2}, train={"converge_steps": 6, "decay_steps": 2})
    search_stage(config, run, progress=False)
    slim_stage(run)
    real_step, calls = compress.train.GanTrainer.step, []

    def interrupted(self, batch):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C during the 4th converge step
        return real_step(self, batch)

    monkeypatch.setattr(compress.train.GanTrainer, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        converge_stage(run, progress=False, config=config)
    state = torch.load(run / "checkpoints" / "converge_state.pt", weights_only=True)
    assert state["step"] == 3 and [r["step"] for r in state["log"]] == [1, 2, 3]
    assert not (run / "converged.pt").exists()
    monkeypatch.setattr(compress.train.GanTrainer, "step", real_step)
    resumed_from = []
    real_converge = compress.stages.converge
    monkeypatch.setattr(compress.stages, "converge", lambda *a, **k: resumed_from.append(k["start_step"]) or
                        real_converge(*a, **k))  # fmt: skip
    result = converge_stage(run, progress=False, config=config)
    assert resumed_from == [3] and result.steps == 6
    steps = [json.loads(line)["step"] for line in (run / "converge_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not (run / "checkpoints" / "converge_state.pt").exists()
    # a state saved under another training config is not resumed: that run starts afresh
    calls.clear()
    monkeypatch.setattr(compress.train.GanTrainer, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        converge_stage(run, progress=False, config=config)
    monkeypatch.setattr(compress.train.GanTrainer, "step", real_step)
    resumed_from.clear()
    other = _config(search={"checkpoint_every": 2}, train={"converge_steps": 5, "decay_steps": 1})
    assert converge_stage(run, progress=False, config=other).steps == 5 and resumed_from == [0]


def test_quality_on_the_test_split_of_aligned_folders(tmp_path):
    """Aligned pairs where B is A's colours inverted: the identity map's L1 is known exactly."""
    from PIL import Image

    from compress.stages import evaluate_generator

    rng = np.random.default_rng(0)
    for phase, count in (("train", 2), ("test", 3)):
        (tmp_path / phase).mkdir()
        for i in range(count):
            a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(tmp_path / phase / f"{i}.png")
    config = _config(data={"kind": "aligned", "root": str(tmp_path), "n_test": 2})
    identity = compress.build_generator("resnet", compress.full_plan("resnet", ngf=8, n_blocks=1))
    identity.forward = lambda x: x  # the prediction is the input itself
    quality = evaluate_generator(identity, config)
    assert quality["n"] == 2  # data.n_test of the 3 test pairs
    a = np.stack([np.asarray(Image.open(tmp_path / "test" / f"{i}.png"))[:, :32] for i in range(2)])
    expected = np.abs((a / 127.5 - 1) - ((255 - a) / 127.5 - 1)).mean()  # |A - B| in [-1, 1] units
    assert quality["paired"]["l1"] == pytest.approx(expected, rel=1e-5)
    assert quality["fid"]["fid"] is None and "not found" in quality["fid"]["reason"]
    no_test = tmp_path / "no_test"
    shutil.copytree(tmp_path / "train", no_test / "train")
    other = evaluate_generator(identity, _config(data={"kind": "aligned", "root": str(no_test)}))
    assert other["paired"] is None and "no test split" in other["fid"]["reason"]


def test_a_compiled_search_reaches_its_target_and_counts_as_the_same_search(tmp_path):
    from compress.stages import search_inputs
    from tests.tools import require

    require("g++")  # torch.compile's CPU backend builds C++
    config = _config(search={"compile": True})
    assert config.search.compile
    assert search_inputs(config) == search_inputs(_config())  # a speed switch: no re-run when toggled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search_stage(config, tmp_path, progress=False)
    fallbacks = [str(w.message) for w in caught if "generating eagerly" in str(w.message)]
    assert not fallbacks  # it compiled, no eager fallback
    assert result.reached and 0.48 <= result.ratio <= 0.5


def test_the_search_trains_the_generator_at_search_lr_and_logs_it(tmp_path):
    config = _config(search={"lr": 5e-4}, train={"lr": 1e-4})
    search_stage(config, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "search_log.jsonl").read_text().splitlines()]
    assert records and {r["lr"] for r in records} == {5e-4}  # the proximal step's lr is the generator's
