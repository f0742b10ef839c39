"""End to end on the loopback phones: bundle → push → real runner → stand-in tool → parse."""

import subprocess
import threading
import time

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
        pushed = ["runner", "tool", "model"] + (["input"] if runtime == "tflite" else [])  # the check input
        assert result.device_state["pushed"] == pushed
        assert result.device_state["before"]["temp_c"] == 41 and not result.flags
        assert result.delegate == delegate
        assert (phone.root / "taskset.log").read_text().split() == ["70"]  # pinned to the big cluster
        if runtime == "tflite":  # the phone ran the bundle's check input and its output came back right
            check = result.output_check
            assert check["ok"] and check["judged_by"] == "max_abs" and check["max_abs"] <= check["tolerance"]
            assert check["psnr_db"] > 60 and "tflite" in check["reference"]
        else:  # onnxruntime_perf_test hands no output back
            assert result.output_check is None
        again = run_job(job, t, binaries)
        assert again.device_state["pushed"] == []  # unchanged files are not pushed again


def test_gpu_request_that_falls_back_is_flagged(tmp_path, bundle, binaries):
    with _phone(tmp_path, "sm8450") as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        result = run_job(BenchJob(bundle.path, phone.serial, "tflite", "gpu", warmup=1, runs=3), t, binaries)
    assert result.delegate == "cpu" and "cpu-fallback" in result.flags


def test_a_gpu_delegate_that_computes_a_wrong_image_fails_its_job(tmp_path, bundle, binaries):
    """The MT6893 persona's GPU delegate runs the whole graph (a fine latency) and writes a green
    cast over the output: the job fails with the numbers, and no latency is recorded."""
    with _phone(tmp_path, "mt6893") as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        with pytest.raises(DeviceError, match=r"check failed: gpu computed a wrong output: max-abs .* > 0.001") as err:
            run_job(BenchJob(bundle.path, phone.serial, "tflite", "gpu", warmup=1, runs=3, poll_s=0.2), t, binaries)
        assert err.value.step == "check"
        fine = run_job(BenchJob(bundle.path, phone.serial, "tflite", "xnnpack", warmup=1, runs=3, poll_s=0.2), t,
                       binaries)  # fmt: skip
        assert fine.output_check["ok"]  # the same phone's CPU path computes it right
        jobs = phone.root / "data/local/tmp/coronet/jobs"
        assert not [p for p in jobs.iterdir() if p.name.startswith("output-")]  # outputs are taken and removed


def test_int8_output_on_the_phone_is_checked_against_fp32(tmp_path, binaries):
    """A full-integer file's output on the phone, judged against the fp32 file by the worst
    channel's mean error (quantization noise passes, a broken channel would not)."""
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    model = compress.build_generator("resnet", plan).eval()
    calibration = [torch.rand(1, 3, 32, 32).mul(2).sub(1).numpy() for _ in range(4)]
    int8 = export.export_bundle(model, tmp_path / "b", ("tflite",), image_size=32, precision="int8",
                                calibration=calibration)  # fmt: skip
    with _phone(tmp_path, "sm8450") as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        result = run_job(BenchJob(int8.path, phone.serial, "tflite", precision="int8", warmup=1, runs=3, poll_s=0.2),
                         t, binaries)  # fmt: skip
    check = result.output_check
    assert result.precision == "int8" and check["ok"] and check["judged_by"] == "channel_mean_abs"
    assert 0 < check["channel_mean_abs"] <= 0.2 and check["reference"] == "the tflite file on the host"


def test_an_executorch_program_runs_on_the_phone_with_its_output_checked(tmp_path, binaries):
    """A .pte through executor_runner (stand-in: ExecuTorch's runtime, the real tool's log lines):
    warm-up executions dropped, the timed ones summarised, the output checked against ONNX fp32."""
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    model = compress.build_generator("resnet", plan).eval()
    pte = export.export_bundle(model, tmp_path / "b", ("onnx", "executorch"), image_size=32)
    with _phone(tmp_path, "mt6893") as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        job = BenchJob(pte.path, phone.serial, "executorch", threads=2, warmup=2, runs=4, poll_s=0.2)
        result = run_job(job, t, binaries)
    assert result.runtime == "executorch" and result.delegate == "xnnpack" and result.stats.n == 4
    assert 0 < result.stats.min_ms <= result.stats.median_ms and result.init_ms > 0
    check = result.output_check
    assert check["ok"] and check["reference"] == "the onnx file on the host" and check["max_abs"] < 1e-3


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


def _run_in_thread(job, t, binaries):
    """run_job in a thread: (thread, outcome dict with "result" or "error")."""
    outcome = {}

    def work():
        try:
            outcome["result"] = run_job(job, t, binaries)
        except DeviceError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


def _hot_phone(tmp_path):
    return _phone(tmp_path, "mt6893", thermal_status=3, cpu_temp_c=58.0)  # its job waits 3 s for cool-down


def _slow_job(bundle, phone, **settings) -> BenchJob:
    """A job the hot phone holds for a few seconds (cool-down), polled often."""
    return BenchJob(bundle.path, phone.serial, "tflite", **{"warmup": 1, "runs": 3, "max_wait_s": 3, "poll_s": 0.3,
                                                             **settings})  # fmt: skip


def _wait_until_running(phone) -> None:
    """Until the job is started on the phone (its pid file is there), then a little more."""
    jobs, deadline = phone.root / "data/local/tmp/coronet/jobs", time.monotonic() + 30
    while not (jobs.is_dir() and list(jobs.glob("*.pid"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)


def test_a_phone_that_drops_mid_run_and_returns_gives_its_result(tmp_path, bundle, binaries):
    with _hot_phone(tmp_path) as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST, backoff_s=0.05) as t:
        job = _slow_job(bundle, phone, unreachable_s=15)
        thread, outcome = _run_in_thread(job, t, binaries)
        _wait_until_running(phone)
        phone.unplug()  # the job goes on on the phone; the host cannot see it
        time.sleep(2.0)
        phone.faults.offline = False
        thread.join(timeout=60)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert "thermal-wait" in outcome["result"].flags and outcome["result"].stats.n == 3
    assert not list((phone.root / "data/local/tmp/coronet/jobs").iterdir())


def test_a_phone_that_stays_away_fails_its_job_in_bounded_time(tmp_path, bundle, binaries):
    with _hot_phone(tmp_path) as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST, backoff_s=0.05) as t:
        job = _slow_job(bundle, phone, unreachable_s=3)
        thread, outcome = _run_in_thread(job, t, binaries)
        _wait_until_running(phone)
        started = time.monotonic()
        phone.unplug()
        thread.join(timeout=60)
    assert not thread.is_alive() and time.monotonic() - started < 15
    assert "unreachable for 3 s while the job ran" in str(outcome["error"])


def test_a_job_killed_on_the_phone_fails_at_once_and_leaves_nothing_behind(tmp_path, bundle, binaries):
    """The phone restarts mid-run: its processes are gone and no result will ever come. This used
    to wait out the whole job budget (max_wait_s + 600 s), and the job's files stayed on the phone."""
    with _hot_phone(tmp_path) as phone, AdbTransport(phone.serial, tmp_path / "adbkey", FAST) as t:
        job = _slow_job(bundle, phone)
        thread, outcome = _run_in_thread(job, t, binaries)
        jobs = phone.root / "data/local/tmp/coronet/jobs"
        _wait_until_running(phone)
        started = time.monotonic()
        subprocess.run(["pkill", "-9", "-f", str(phone.root / "data/local/tmp/coronet")], check=False)
        thread.join(timeout=60)
        assert not thread.is_alive() and time.monotonic() - started < 15
        assert isinstance(outcome.get("error"), DeviceError), outcome
        leftovers = sorted(p.name for p in jobs.iterdir())
        again = run_job(_slow_job(bundle, phone, runs=2), t, binaries)
    assert leftovers and again.stats.n == 2
    assert not list(jobs.iterdir())  # the next job cleared what the killed one left
