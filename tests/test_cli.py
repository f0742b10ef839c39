"""The pipeline command on a tiny config, and its one-line errors (run as a real subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import compress

ROOT = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
seed = 1
[model]
arch = "resnet"
ngf = 8
n_blocks = 1
[data]
image_size = 32
n_train = 8
batch_size = 2
[search]
target_macs = 0.5
lam = 50.0
lr = 1e-3
max_steps = 300
[train]
ndf = 8
n_layers_d = 2
converge_steps = 4
decay_steps = 2
"""


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "compress_and_ship.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_search_slim_export_end_to_end(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_CONFIG)
    proc = _run("tiny.toml", "--run-dir", "run", "--quiet", "--target-macs", "0.4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    search = json.loads((run / "search.json").read_text())
    assert search["reached"] and 0.38 <= search["ratio"] <= 0.4
    slim = compress.load_checkpoint(run / "slim.pt")
    assert slim.kind == "generator" and slim.plan.to_dict() == search["plan"]
    assert json.loads((run / "slim.json").read_text())["max_abs_diff_vs_hyper"] < 1e-5
    assert "channel plan (kept/full)" in proc.stdout and "trunk" in proc.stdout
    assert len((run / "search_log.jsonl").read_text().splitlines()) == search["steps"]
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["model"]["plan"] == search["plan"] and manifest["input"]["shape"] == [1, 3, 32, 32]
    assert "[export]" in proc.stdout and "XNNPACK partitions 1" in proc.stdout
    converged = json.loads((run / "converge.json").read_text())
    assert converged["steps"] == 4 and 0 < converged["paired"]["l1"] < 2
    assert compress.load_checkpoint(run / "converged.pt").plan == slim.plan
    again = _run("--from", "slim", "--to", "slim", "--run-dir", "run", cwd=tmp_path)
    assert again.returncode == 0 and "[search]" not in again.stdout and "[export]" not in again.stdout


@pytest.mark.parametrize(("config", "message"), [
    ("[search]\ntarget_mac = 0.5\n", "unknown key 'target_mac' in [search]; allowed: target_macs"),
    ("[model]\narch = 'vgg'\n", "unknown generator architecture 'vgg'"),
    ("[model]\narch = 'resnet'\nblocks = 3\n", "unknown key 'blocks' in [model] for arch 'resnet'"),
    ("[search]\nlam = 'big'\n", "search.lam must be a float"),
    ("[search\n", "is not valid TOML"),
])  # fmt: skip
def test_bad_config_is_one_line_and_exit_1(tmp_path, config, message):
    (tmp_path / "bad.toml").write_text(config)
    proc = _run("bad.toml", "--run-dir", "run", cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_missing_and_corrupt_inputs_are_one_line(tmp_path):
    proc = _run("missing.toml", cwd=tmp_path)
    assert proc.returncode == 1 and "config file missing.toml does not exist" in proc.stderr
    proc = _run("--from", "slim", "--run-dir", "empty", cwd=tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "hyper.pt").write_bytes(b"\x00" * 100)
    proc = _run("--from", "slim", "--run-dir", "run", cwd=tmp_path)
    assert proc.returncode == 1 and "corrupt or truncated" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_help_explains_the_command():
    proc = _run("--help", cwd=ROOT)
    assert proc.returncode == 0
    assert "--target-macs" in proc.stdout and "configs/demo.toml" in proc.stdout


@pytest.mark.parametrize("name", ["demo", "cyclegan_horse2zebra", "pix2pix_edges2shoes"])
def test_shipped_configs_parse(name):
    from compress.config import load_config

    config = load_config(ROOT / "configs" / f"{name}.toml")
    assert config.search.target_macs < 1 and config.train.setup in ("pix2pix", "cyclegan")
