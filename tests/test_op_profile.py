"""Per-op profiles: the tools' real output formats parsed into one record, laid against the plan's
layers, measured on the host (ONNX Runtime's profiler, LiteRT ops timed alone) and on a loopback
phone through the real runner, and shown per layer in headless Chromium."""

import pytest
import torch

import compress
import export
from device_bench.adb import AdbTransport, Timeouts
from device_bench.host import run_host_benchmark
from device_bench.op_profile import OpTime, from_benchmark_model, from_ort_profile, per_layer
from device_bench.parsers import parse_benchmark_model
from device_bench.run import BenchJob, execute, run_job
from device_bench.store import ResultStore
from reports import build_report, render_site
from tests.loopback_device.adb_device import LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries
from tests.test_report import CHROMIUM_ARGS
from tests.tools import require

# benchmark_model's op profile as StatsCalculator prints it (each field "\t" + right-aligned):
# XNNPACK's own operator names, with spaces, as the tool shows them for a delegated graph


def _row(kind: str, first: float, avg: float, percent: float, cdf: float, index: int) -> str:
    fields = [(kind, 24), (f"{first:.3f}", 9), (f"{avg:.3f}", 9), (f"{percent:.3f}%", 8), (f"{cdf:.3f}%", 8),
              ("0.000", 10), ("1", 9)]  # fmt: skip
    return "".join("\t" + value.rjust(width) for value, width in fields) + f"\tDelegate/{kind}:{index}"


XNNPACK_PROFILE = "\n".join([
    "INFO: count=5 first=900 curr=880 min=870 max=910 avg=885 std=10",
    "Operator-wise Profiling Info for Regular Benchmark Runs:",
    "============================== Run Order ==============================",
    "\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]",
    _row("Constant Pad (ND, X32)", 0.010, 0.011, 1.25, 1.25, 0),
    _row("Convolution (NHWC, F32) IGEMM", 0.300, 0.310, 35.0, 36.25, 1),
    _row("Mean (ND, F32)", 0.050, 0.052, 6.0, 42.25, 2),
    _row("Convert (NC, F32, QS8)", 0.020, 0.020, 2.0, 44.25, 3),
    _row("Deconvolution (NHWC, F32)", 0.450, 0.440, 50.0, 94.25, 4),
    _row("TanH (NC, F32)", 0.050, 0.050, 5.75, 100.0, 5),
    "",
    "Timings (microseconds): count=5 first=880 curr=880 min=870 max=910 avg=885 std=10",
    "Memory (bytes): count=0",
    "6 nodes observed",
])  # fmt: skip
LAYERS = [
    {"name": "model.1", "group": "stem", "in": 3, "out": 8, "kernel": 7, "stride": 1, "transposed": False},
    {"name": "model.5", "group": "up1", "in": 8, "out": 3, "kernel": 3, "stride": 2, "transposed": True},
]


def test_benchmark_model_op_profile_with_xnnpack_operator_names():
    parsed = parse_benchmark_model(XNNPACK_PROFILE)
    ops = from_benchmark_model(parsed.op_profile)
    assert [op.type for op in ops][:3] == ["Constant Pad (ND, X32)", "Convolution (NHWC, F32) IGEMM", "Mean (ND, F32)"]
    assert ops[1].time_ms == 0.31 and ops[1].name == "Delegate/Convolution (NHWC, F32) IGEMM:1"
    assert [op.is_conv for op in ops] == [False, True, False, False, True, False]  # "Convert" is no conv
    assert parsed.runs.count == 5  # the op profile's own "Timings" line is not the run statistics
    rows = per_layer(LAYERS, ops)
    assert [r.layer for r in rows] == ["input", "model.1", "model.5"]
    assert rows[0].other_ms == pytest.approx(0.011) and rows[0].conv_ms == 0
    assert rows[1].conv_ms == 0.31 and rows[1].other_ms == pytest.approx(0.072)  # mean + convert on its output
    assert rows[1].other_ops == "Mean (ND, F32), Convert (NC, F32, QS8)" and rows[2].shape == "8→3 T3 s2"
    assert per_layer(LAYERS[:1], ops) is None  # two conv ops, one layer: not laid against the plan


def test_a_transposed_layer_computed_as_phase_convs_is_one_row():
    """A TFLite file computes a stride-2 transposed conv as four convs, one per output phase
    (export.passes): the four conv ops in a row are that layer's conv time."""
    layers = [LAYERS[0], {**LAYERS[1], "phases": 4}]
    kinds = ["Convolution (NHWC, F32) IGEMM", "Constant Pad (ND, X32)"] + ["Convolution (NHWC, F32) IGEMM"] * 4
    kinds += ["Transpose (ND, X32)", "TanH (NC, F32)"]
    ops = [OpTime(f"op{i}", kind, 0.1 * (i + 1)) for i, kind in enumerate(kinds)]
    rows = per_layer(layers, ops)
    assert [r.layer for r in rows] == ["model.1", "model.5"]
    assert rows[0].conv_ms == pytest.approx(0.1) and rows[0].other_ms == pytest.approx(0.2)  # the pad after it
    assert rows[1].conv_ms == pytest.approx(0.3 + 0.4 + 0.5 + 0.6) and rows[1].other_ms == pytest.approx(0.7 + 0.8)
    assert per_layer(layers, ops[:-3] + ops[-2:]) is None  # three phase convs: neither one nor four per layer


def test_ort_profile_events_averaged_per_node_without_the_warmup():
    def node(name, op, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "ph": "X",
                "args": {"op_name": op, "provider": "CPUExecutionProvider"}}  # fmt: skip

    events = [{"cat": "Session", "name": "session_initialization", "dur": 9000}]
    for first, dur in ((True, 500), (False, 100), (False, 120)):
        events += [node("conv2d_nchwc", "Conv", dur * 3 if first else dur), node("node_relu", "Relu", dur // 10)]
        events.append({"cat": "Node", "name": "node_relu_fence_before", "dur": 0, "args": {}})
    ops = from_ort_profile(events, warmup=1)
    assert ops == [OpTime("conv2d_nchwc", "Conv", 0.11), OpTime("node_relu", "Relu", 0.011)]
    with pytest.raises(ValueError, match="JSON list"):
        from_ort_profile({"traceEvents": []})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    model = compress.build_generator("resnet", plan).eval()
    return export.export_bundle(model, tmp_path_factory.mktemp("bundle"), image_size=32)


def test_the_manifest_lists_the_convs_in_forward_order(bundle):
    layers = bundle.manifest["layers"]
    plan = bundle.manifest["model"]["plan"]["widths"]
    assert [layer["group"] for layer in layers][:3] == ["stem", "down1", "trunk"] and len(layers) == 8
    assert all(layer["out"] == plan[layer["group"]] for layer in layers if layer["group"] in plan)
    assert [layer["transposed"] for layer in layers] == [False] * 5 + [True, True, False]


@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_host_profile_lays_every_conv_on_its_layer(bundle, runtime):
    result = run_host_benchmark(bundle, runtime, runs=3, warmup_s=0.01, profile=True)
    ops = [OpTime.from_dict(op) for op in result.device_state["op_profile"]]
    assert all(op.time_ms > 0 for op in ops) and len(ops) > len(bundle.manifest["layers"])
    rows = per_layer(bundle.manifest["layers"], ops)
    assert rows is not None and [r.layer for r in rows if r.group] == [m["name"] for m in bundle.manifest["layers"]]
    assert all(r.conv_ms > 0 for r in rows if r.group)
    norm = "InstanceNormalization" if runtime == "onnx" else "MEAN"
    assert norm in rows[1].other_ops  # the stem's norm counts to the stem
    assert "onnxruntime" in result.device_state["op_profile_source"] or runtime == "tflite"
    plain = execute(BenchJob(str(bundle.path), "host", runtime, runs=2, warmup_s=0.01))
    assert "op_profile" not in plain.device_state  # only when asked


def test_the_suite_profiles_on_the_host_in_its_timed_jobs_and_on_phones_in_extra_ones(bundle):
    from coronet.bundle import Bundle
    from device_bench.suite import _jobs

    opened = [Bundle.open(bundle.path)]
    host = _jobs(opened, ["tflite", "onnx"], "host", True)
    assert [(runtime, profile) for _, runtime, _, profile in host] == [("tflite", True), ("onnx", True)]
    phone = _jobs(opened, ["tflite", "onnx"], "127.0.0.1:5555", True)
    assert [(runtime, profile) for _, runtime, _, profile in phone] == [
        ("tflite", False), ("onnx", False), ("tflite", True), ("onnx", True)]  # fmt: skip
    assert not any(profile for *_, profile in _jobs(opened, ["tflite"], "host", False))


def test_phone_profiles_reach_the_ops_page_in_chromium(bundle, tmp_path):
    """A loopback phone's benchmark_model and onnxruntime_perf_test profiles (through the real
    runner: --enable_op_profiling, -p FILE pulled back) beside the host's, per layer."""
    chromium = require("chromium")
    from playwright.sync_api import sync_playwright

    store_path = tmp_path / "bench.db"
    binaries = write_binaries(tmp_path / "bin")
    root = tmp_path / "sm8450"
    with (
        ResultStore(store_path) as store,
        LoopbackDevice(root, build_sandbox(root, "sm8450")) as phone,
        AdbTransport(phone.serial, tmp_path / "adbkey", Timeouts(read_s=10, command_s=20)) as t,
    ):
        for runtime in ("tflite", "onnx"):
            job = BenchJob(str(bundle.path), phone.serial, runtime, warmup=1, runs=3, poll_s=0.2, profile=True)
            result = run_job(job, t, binaries)
            assert "op-profiled" in result.flags
            ops = [OpTime.from_dict(op) for op in result.device_state["op_profile"]]
            assert per_layer(bundle.manifest["layers"], ops) is not None, [op.type for op in ops]
            store.finish(store.add_job(job), result)
            leftovers = t.shell(f"ls {'/data/local/tmp/coronet/jobs'}")[1]
            assert "profile-" not in leftovers  # the pulled profile is removed from the phone
        host = BenchJob(str(bundle.path), "host", "onnx", runs=3, warmup_s=0.01, profile=True)
        store.finish(store.add_job(host), execute(host))
    data = build_report(store_path, [bundle.path])
    assert set(data.latency["device"]) == {"host"}  # the phone's runs carried the profiler: not latencies
    render_site(data, tmp_path / "site")
    cells = "cells => cells.map(c => c.textContent)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((tmp_path / "site" / "index.html").as_uri())
        page.click("text=ops: ")
        heads = page.eval_on_selector_all("#ops-layers thead th", cells)
        expected = {f"{phone.serial} tflite/xnnpack", f"{phone.serial} onnx/cpu", "host onnx/cpu"}
        assert expected <= set(heads), heads
        rows = page.eval_on_selector_all("#ops-layers tbody th", cells)
        layers = bundle.manifest["layers"]
        assert [r.split(" · ")[0] for r in rows[1:-2]] == [m["name"] for m in layers]
        assert rows[-2:] == ["sum of ops", "measured median"] and "stem" in rows[1] and "3→" in rows[1]
        values = page.eval_on_selector_all("#ops-layers tbody tr:nth-child(2) td", cells)
        assert all(float(v) > 0 for v in values), values  # the stem layer on every device and runtime
        images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
        assert images == [True]  # the share-per-layer plot
        page.screenshot(path=str(tmp_path / "ops.png"), full_page=True)
        browser.close()
    layers_csv = (tmp_path / "site" / f"ops-{bundle.path.name}-layers.csv").read_text().splitlines()
    assert len(layers_csv) == 1 + len(rows)  # the per-layer table as CSV too


def test_a_malformed_profile_from_an_agent_leaves_the_report_whole(bundle, tmp_path):
    """A result's numbers are validated when it is stored; the op list inside its device state is
    read by the report, which skips a profile it cannot read instead of failing the report."""
    result = execute(BenchJob(str(bundle.path), "host", "onnx", runs=2, warmup_s=0.01))
    result.device_state["op_profile"] = [{"name": "conv", "type": "Conv", "time_ms": "fast"}]
    with ResultStore(tmp_path / "bench.db") as store:
        store.finish(store.add_job(BenchJob(str(bundle.path), "host", "onnx")), result)
    data = build_report(tmp_path / "bench.db", [bundle.path])
    assert data.op_profiles == {} and len(data.latency) == 1
    render_site(data, tmp_path / "site")
    assert not list((tmp_path / "site").glob("ops-*.html"))
