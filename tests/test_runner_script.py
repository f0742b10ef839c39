"""android_runner/runner.sh: POSIX sh (shellcheck -s sh) and runs under dash on its own."""

import subprocess
from pathlib import Path

import pytest
import torch

import compress
import export
from device_bench.parsers import parse_benchmark_model
from device_bench.run import RUNNER, parse_block
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries
from tests.tools import require


def test_shellcheck_posix_sh():
    proc = subprocess.run([require("shellcheck"), "-s", "sh", str(RUNNER)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def _tflite(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = compress.build_generator("dcgan", compress.full_plan("dcgan", ngf=4, nz=8, image_size=16)).eval()
    return export.export_bundle(model, tmp_path / "b", ("tflite",)).file("tflite")


def test_runs_under_dash_and_prints_one_block(tmp_path):
    root = tmp_path / "phone"
    build_sandbox(root, "sm8450")
    binaries = write_binaries(tmp_path / "bin")
    env = {"ANDROID_ROOT_PREFIX": str(root), "PATH": f"{root}/system/bin:/usr/bin:/bin"}
    args = ["--tool", "benchmark_model", "--bin", str(binaries), "--model", str(_tflite(tmp_path)),
            "--threads", "1", "--cpus", "80", "--warmup", "1", "--runs", "4", "--work", str(tmp_path)]  # fmt: skip
    proc = subprocess.run([require("dash"), str(RUNNER), *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    block = parse_block(proc.stdout)
    assert block["fields"]["rc"] == "0" and block["fields"]["cpus"] == "80"
    assert any(line.startswith("freq policy7") for line in block["before"])
    assert parse_benchmark_model(block["raw"], requested="xnnpack").runs.count == 4
    assert proc.stdout.count("=== CORONET-RESULT v1 BEGIN ===") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--tool", "benchmark_model", "--bin", "/nonexistent", "--model", str(RUNNER)],
     "missing binary /nonexistent/benchmark_model"),
    (["--tool", "benchmark_model", "--model", "/nope.tflite"], "model not found"),
    (["--frobnicate", "1"], "unknown option --frobnicate"),
])  # fmt: skip
def test_bad_arguments_are_one_clear_line(args, message):
    proc = subprocess.run([require("dash"), str(RUNNER), *args], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
