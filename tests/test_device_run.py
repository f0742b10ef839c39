"""End to end on the loopback phones: bundle → push → real runner → stand-in tool → parse."""

import pytest
import torch

import compress
import export
from device_bench.adb import AdbTransport, DeviceError, Timeouts
from device_bench.run import BenchJob, run_job
from tests.loopback_device.adb_device import LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries

# Short reads on purpose: a job that is silent for longer (the hot phone waits 5 s) must still
# succeed, because it runs detached and is polled.
FAST = Timeouts(connect_s=5, transport_s=2, read_s=5, command_s=10)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    model = compress.build_generator("resnet", plan).eval()
    return export.export_bundle(model, tmp_path_factory.mktemp("bundle"), image_size=32)


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    return write_binaries(tmp_path_factory.mktemp("bin"))


def _phone(tmp_path, persona, **sandbox):
    root = tmp_path / persona
    return LoopbackDevice(root, build_sandbox(root, persona, **sandbox))


@pytest.mark.parametrize("persona", ["sm8450", "mt6893"])
@pytest.mark.parametrize("runtime", ["tflite", "onnx"])
def test_run_job_end_to_end(tmp_path, bundle, binaries, persona, runtime):
    delegate = "xnnpack" if runtime == "tflite" else "cpu"
    with _phone(tmp_path, persona) as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        job = BenchJob(bundle.path, phone.serial, runtime, delegate, threads=1, cluster="big", warmup=2, runs=5,
                       poll_s=0.2)  # fmt: skip
        result = run_job(job, t, binaries)
        assert result.stats.n == 5 and 0 < result.stats.min_ms <= result.stats.median_ms
        assert result.device_state["soc"] == persona.upper() and result.device_state["cpus"] == "70"
        assert result.device_state["pushed"] == ["runner", "tool", "model"]
        assert result.device_state["before"]["temp_c"] == 41 and not result.flags
        assert result.delegate == delegate
        assert (phone.root / "taskset.log").read_text().split() == ["70"]  # pinned to the big cluster
        again = run_job(job, t, binaries)
        assert again.device_state["pushed"] == []  # unchanged files are not pushed again


def test_gpu_request_that_falls_back_is_flagged(tmp_path, bundle, binaries):
    with _phone(tmp_path, "sm8450") as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        result = run_job(BenchJob(bundle.path, phone.serial, "tflite", "gpu", warmup=1, runs=3), t, binaries)
    assert result.delegate == "cpu" and "cpu-fallback" in result.flags


def test_a_hot_phone_is_recorded(tmp_path, bundle, binaries):
    with (
        _phone(tmp_path, "mt6893", thermal_status=3, cpu_temp_c=58.0) as phone,
        AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t,
    ):
        job = BenchJob(bundle.path, phone.serial, "tflite", warmup=1, runs=3, max_wait_s=5, poll_s=0.5)
        result = run_job(job, t, binaries)
    assert result.device_state["waited_s"] == 5 and "thermal-wait" in result.flags and "hot" in result.flags
    assert result.device_state["before"]["temp_c"] == 58 and result.device_state["before"]["thermal_status"] == 3
    jobs = phone.root / "data/local/tmp/coronet/jobs"
    assert jobs.is_dir() and not list(jobs.iterdir())  # the detached job's files are cleaned up


def test_a_crashing_binary_is_a_clear_failure(tmp_path, bundle, binaries, monkeypatch):
    monkeypatch.setenv("CORONET_STANDIN_CRASH", "1")
    with (
        _phone(tmp_path, "sm8450") as phone,
        AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t,
        pytest.raises(DeviceError, match=r"run failed: benchmark_model exited 139"),
    ):
        run_job(BenchJob(bundle.path, phone.serial, "tflite", runs=3), t, binaries)


def test_a_missing_binary_names_the_file(tmp_path, bundle):
    with (
        _phone(tmp_path, "sm8450") as phone,
        AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t,
        pytest.raises(DeviceError, match=r"missing .*benchmark_model: put the arm64-v8a benchmark_model there"),
    ):
        run_job(BenchJob(bundle.path, phone.serial, "tflite"), t, tmp_path / "empty")


def test_hostile_bundle_names_run_safely(tmp_path, binaries):
    torch.manual_seed(0)
    model = compress.build_generator("dcgan", compress.full_plan("dcgan", ngf=4, nz=8, image_size=16)).eval()
    folder = tmp_path / 'it\'s a "bundle"; $(touch pwned) `id`'
    bundle = export.export_bundle(model, folder, ("tflite",))
    with _phone(tmp_path, "sm8450") as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        result = run_job(BenchJob(bundle.path, phone.serial, "tflite", warmup=1, runs=2, poll_s=0.2), t, binaries)
    assert result.stats.n == 2 and result.bundle == str(folder)
    assert not list(tmp_path.rglob("pwned"))
    outside = [p for p in phone.root.rglob("*") if p.is_file() and "data/local/tmp" not in str(p)]
    persona_files = ("/sys/", "/system/", "taskset.log")  # the sandbox's own files and the taskset record
    assert all(any(mark in str(p) for mark in persona_files) for p in outside)


def test_an_external_delegate_comes_from_the_agents_allowlist_only(tmp_path, bundle, binaries):
    """A job names an external delegate; only a name this host allows reaches the phone, as the
    path the host configured (a job that named a path could make phones load any library)."""
    with _phone(tmp_path, "sm8450") as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        job = BenchJob(bundle.path, phone.serial, "tflite", "external:hexagon", warmup=1, runs=3, poll_s=0.2)
        with pytest.raises(DeviceError, match="external delegate 'hexagon' is not in this agent's allowlist"):
            run_job(job, t, binaries)
        allowed = {"hexagon": "/vendor/lib64/libhexagon_delegate.so"}
        result = run_job(job, t, binaries, external_delegates=allowed)  # the stand-in ignores the library
    assert result.delegate == "external:hexagon"
    assert result.device_state["runner_delegate"] == "external:/vendor/lib64/libhexagon_delegate.so"
