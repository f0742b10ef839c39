"""`device-bench` as a user runs it (subprocesses), against the host and a loopback phone."""

import os
import socket
import subprocess
import sys

import pytest
import torch

import compress
import export
from device_bench.store import ResultStore
from tests.loopback_device.adb_device import LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = compress.build_generator("resnet", compress.full_plan("resnet", ngf=4, n_blocks=1)).eval()
    return export.export_bundle(model, tmp_path_factory.mktemp("bundle"), image_size=32)


def _cli(*args, home):
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "device_bench.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_run_on_the_host_and_store(tmp_path, bundle):
    store = tmp_path / "bench.db"
    proc = _cli("run", "--device", "host", "--bundle", str(bundle.path), "--runtime", "onnx", "--runs", "3",
                "--store", str(store), home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("host onnx/cpu x1: median ")
    with ResultStore(store) as s:
        assert [j["status"] for j in s.jobs()] == ["done"] and s.results()[0].stats.n == 3


def test_run_on_a_loopback_phone_and_list_devices(tmp_path, bundle):
    root = tmp_path / "phone"
    store = tmp_path / "bench.db"
    with LoopbackDevice(root, build_sandbox(root, "sm8450")) as phone:
        binaries = write_binaries(tmp_path / "bin")
        proc = _cli("run", "--device", phone.serial, "--bundle", str(bundle.path), "--runs", "3", "--warmup", "1",
                    "--binaries", str(binaries), "--store", str(store), home=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{phone.serial} tflite/xnnpack x1: median ")
        listed = _cli("devices", "--device", phone.serial, "--store", str(store), home=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "SM8450 (known)" in listed.stdout and "cpus 80 @ 3.00 GHz" in listed.stdout
        assert f"in the store: {phone.serial}" in listed.stdout
        assert listed.stdout.startswith("usb: ")  # USB discovery ran (no phones attached here)
    assert (tmp_path / ".android" / "adbkey").is_file()


def test_failures_are_one_line_and_stored(tmp_path, bundle):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # nobody listens there once closed
    store = tmp_path / "bench.db"
    proc = _cli("run", "--device", dead, "--bundle", str(bundle.path), "--store", str(store), home=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith(f"device-bench: error: {dead}: connect failed")
    assert len(proc.stderr.strip().splitlines()) == 1
    with ResultStore(store) as s:
        [job] = s.jobs()
        assert job["status"] == "failed" and "connect failed" in job["reason"] and not s.results()
    incomplete = tmp_path / "half"
    incomplete.mkdir()
    proc = _cli("run", "--bundle", str(incomplete), "--store", str(store), home=tmp_path)
    assert proc.returncode == 1 and "no manifest.json" in proc.stderr and "Traceback" not in proc.stderr
