"""The output parsers on the real formats of shared/reference/tool_output.md."""

import math

import pytest

from device_bench.parsers import ToolStats, parse_benchmark_model, parse_perf_test

CURRENT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/m.tflite]
INFO: Loaded model /data/local/tmp/m.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 24.6229
INFO: Initialized session in 119.515ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112

INFO: Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628

INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
"""  # noqa: E501


def test_current_litert_output():
    r = parse_benchmark_model(CURRENT, requested="xnnpack")
    assert r.ok and r.num_threads == 4 and r.graph == "/data/local/tmp/m.tflite"
    assert r.warmup.count == 9 and r.runs.count == 1000
    assert (r.runs.median, r.runs.p95, r.runs.avg, r.runs.std) == (51891, 68628, 63743.2, 60716)
    assert (r.init_us, r.first_us, r.warmup_avg_us, r.inference_avg_us) == (119515, 87112, 58147.4, 63743.2)
    assert r.init_ms == 119.515 and r.memory_overall_mb == 55.4961
    assert r.delegation.name == "XNNPACK" and r.delegation.full and r.ran_on == "xnnpack" and not r.flags


@pytest.mark.parametrize(("line", "expected"), [
    ("count=0", {"count": 0, "avg": None}),
    ("count=5 curr=1200 (all same)", {"count": 5, "min": 1200, "median": 1200, "std": 0.0, "all_same": True}),
    ("count=3 first=10 curr=12 min=10 max=14 avg=12 std=1", {"max": 14, "p5": None, "median": None}),
    ("curr=51629 count=9 min=51629 max=87112 avg=58147.4 std=11478", {"count": 9, "first": None, "avg": 58147.4}),
    ("count=2 first=1.23457e+06 curr=1.3e+06 min=1.23457e+06 max=1.3e+06 avg=1.26728e+06 std=32715",
     {"first": 1234570.0, "avg": 1267280.0}),
])  # fmt: skip
def test_statistics_variants(line, expected):
    stats = ToolStats.parse(line)
    for key, value in expected.items():
        assert getattr(stats, key) == value, key


def test_nan_and_e_notation_in_the_timings_line():
    r = parse_benchmark_model(
        "INFO: count=0\nINFO: count=0\n"
        "INFO: Inference timings in us: Init: 2.5e+06, First inference: 1.23457e+06, Warmup (avg): nan, "
        "Inference (avg): nan\n"
    )
    assert r.init_us == 2.5e6 and r.first_us == 1234570.0 and math.isnan(r.inference_avg_us)
    assert r.runs.count == 0


def test_old_formats():
    old = (
        "Num threads: [1]\n"
        "curr=80000 count=50 min=79000 max=90000 avg=80100.5 std=900\n"
        "curr=79760 count=100 min=79000 max=91000 avg=79760.9 std=800\n"
        "Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9\n"
        "Peak memory footprint (MB): init=3.1 overall=40.25\n"
    )
    r = parse_benchmark_model(old)
    assert r.runs.count == 100 and r.runs.avg == 79760.9 and r.warmup.count == 50
    assert (r.warmup_avg_us, r.init_us, r.inference_avg_us) == (83235, 38467, 79760.9)
    assert r.memory_overall_mb == 40.25 and r.ran_on == "cpu"


def test_peak_memory_and_memory_status():
    r = parse_benchmark_model(
        "INFO: Overall peak memory footprint (MB) via periodic monitoring: 61.3281\n"
        "INFO: Memory status at the end of exeution:\nINFO: - VmRSS              : 58 MB\nINFO: - RssAnon : 40 MB\n"
    )
    assert r.peak_memory_mb == 61.3281 and r.memory_status == {"VmRSS": "58 MB", "RssAnon": "40 MB"}


@pytest.mark.parametrize(("text", "requested", "ran_on", "flags"), [
    ("INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.",
     "gpu", "gpu", []),
    ("INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate "
     "w/ 3 delegate kernels.", "gpu", "gpu+cpu", ["partial-fallback"]),
    ("INFO: Though NNAPI delegate is explicitly applied, the model graph will not be executed by the delegate.",
     "nnapi", "cpu", ["cpu-fallback"]),
    ("INFO: Applied GPU delegate, and the model graph will be completely executed w/ the delegate.", "gpu", "gpu", []),
    ("INFO: Replacing 80 out of 95 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 3 partitions "
     "for subgraph 0.", "gpu", "gpu+cpu", ["partial-fallback"]),
    ("Replacing 95 node(s) with delegate (TfLiteNnapiDelegate) node, yielding 1 partitions.", "nnapi", "nnapi", []),
    ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", "gpu", "cpu", ["cpu-fallback"]),
])  # fmt: skip
def test_delegate_lines_reveal_fallbacks(text, requested, ran_on, flags):
    r = parse_benchmark_model(text + "\nINFO: count=1 curr=5 (all same)\n", requested=requested)
    assert r.ran_on == ran_on and r.flags == flags


def test_gpu_unsupported_ops_list():
    text = (
        "ERROR: Following operations are not supported by GPU delegate:\n"
        "MIRROR_PAD: Operation is not supported.\n"
        "SQUARED_DIFFERENCE: Operation is not supported.\n"
        "50 operations will run on the GPU, and the remaining 12 operations will run on the CPU.\n"
    )
    r = parse_benchmark_model(text, requested="gpu")
    assert r.delegation.gpu_unsupported == ["MIRROR_PAD", "SQUARED_DIFFERENCE"]
    assert (r.delegation.gpu_ops, r.delegation.cpu_ops) == (50, 12)
    assert r.ran_on == "gpu+cpu" and r.flags == ["partial-fallback"]


def test_failures_and_unconsumed_flags():
    r = parse_benchmark_model(
        "WARN: Unconsumed cmdline flags: --num_thread=4 --use_gpo=true\n"
        "ERROR: Node number 57 (BATCH_MATMUL) failed to prepare.\n"
        "ERROR: Failed to allocate tensors!\nERROR: Benchmarking failed.\n"
    )
    assert r.unconsumed_flags == ["--num_thread=4", "--use_gpo=true"] and "unconsumed-flags" in r.flags
    assert len(r.errors) == 3 and not r.ok
    assert parse_benchmark_model("ERROR: Disallowed CPU fallback detected.\n").errors


def test_op_profiling_tables():
    text = (
        "INFO: count=10 first=1 curr=1 min=1 max=2 avg=1.1 std=0\n"
        "INFO: count=50 first=1 curr=1 min=1 max=2 avg=1.2 std=0\n"
        "Profiling Info for Benchmark Initialization:\n"
        "============================== Run Order ==============================\n"
        "\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
        "\t         AllocateTensors\t    1.2\t    1.2\t 100.0%\t 100.0%\t     0.0\t        1\tAllocateTensors/0\n"
        "\n"
        "Timings (microseconds): count=1 curr=1200\n"
        "Memory (bytes): count=0\n"
        "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        "============================== Summary by node type ==============================\n"
        "\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]\n"
        "\t                 CONV_2D\t       18\t    40.000\t    80.000%\t    80.000%\t     0.000\t       18\n"
        "\t                    MEAN\t        9\t     5.000\t    10.000%\t    90.000%\t     0.000\t        9\n"
    )
    r = parse_benchmark_model(text)
    assert r.runs.count == 50 and r.runs.avg == 1.2  # profiling summaries are not the run statistics
    init = r.op_profile["Profiling Info for Benchmark Initialization"]["Run Order"]
    assert init[0]["Name"] == "AllocateTensors/0"
    by_type = r.op_profile["Operator-wise Profiling Info for Regular Benchmark Runs"]["Summary by node type"]
    assert [row["Node type"] for row in by_type] == ["CONV_2D", "MEAN"] and by_type[0]["avg ms"] == "40.000"


PERF = """\
Session creation time cost: 0.0513 s
First inference time cost: 52 ms
Total inference time cost: 5.1 s
Total inference requests: 100
Average inference time cost: 51.0 ms
Total inference run time: 5.12 s
Number of inferences per second: 19.5
Avg CPU usage: 98 %
Peak working set size: 123456789 bytes
Min Latency: 0.0489 s
Max Latency: 0.0602 s
P50 Latency: 0.0507 s
P90 Latency: 0.0531 s
P95 Latency: 0.0540 s
P99 Latency: 0.0581 s
P999 Latency: 0.0602 s
"""


def test_onnxruntime_perf_test():
    r = parse_perf_test(PERF)
    assert r.ok and r.requests == 100 and r.avg_ms == 51.0 and r.first_inference_ms == 52
    assert r.peak_working_set_bytes == 123456789 and r.cpu_usage_pct == 98
    assert r.latency_ms["p50"] == pytest.approx(50.7) and r.latency_ms["p999"] == pytest.approx(60.2)
    assert set(r.latency_ms) == {"min", "max", "p50", "p90", "p95", "p99", "p999"}


def test_onnxruntime_perf_test_old_format():
    r = parse_perf_test("Total time cost:5.87108\nAverage time cost:58.7108 ms\nP50 Latency is 0.0587108sec\n")
    assert r.total_inference_s == 5.87108 and r.avg_ms == 58.7108
    assert r.latency_ms["p50"] == pytest.approx(58.7108)


# An older release's summary, and the lines PerformanceResult::DumpToFile prints without a result
# file: no space after the colon, no unit on the CPU use and the memory.
PERF_OLD_COLONS = """\
Session creation time cost:0.0613 s
First inference time cost:61 ms
Total inference time cost:6.2 s
Total iterations:100
Average inference time cost:62.0 ms
Total inference run time:6.25 s
Number of inferences per second:16.0
Avg CPU usage:97
Peak working set size:98765432
Runs:100
Min Latency:0.0590 s
P90 Latency:0.0650 s
"""


def test_onnxruntime_perf_test_without_spaces_after_the_colons():
    r = parse_perf_test(PERF_OLD_COLONS)
    assert r.session_creation_s == 0.0613 and r.first_inference_ms == 61 and r.total_inference_s == 6.2
    assert r.requests == 100 and r.avg_ms == 62.0 and r.run_time_s == 6.25 and r.per_second == 16.0
    assert r.cpu_usage_pct == 97 and r.peak_working_set_bytes == 98765432
    assert r.latency_ms == {"min": pytest.approx(59.0), "p90": pytest.approx(65.0)}
    assert not r.errors


def test_every_field_of_the_current_format():
    r = parse_perf_test(PERF)
    assert (r.session_creation_s, r.total_inference_s, r.run_time_s, r.per_second) == (0.0513, 5.1, 5.12, 19.5)
    assert not r.errors


EXECUTOR_RUNNER_LOG = """\
I 00:00:00.000812 executorch:executor_runner.cpp:238] Resetting threadpool with num threads = 4
I 00:00:00.014310 executorch:executor_runner.cpp:362] Model loaded in 13.094000 ms.
I 00:00:00.066741 executorch:executor_runner.cpp:481] Iteration 1 of 4: 52.107000 ms
I 00:00:00.117880 executorch:executor_runner.cpp:481] Iteration 2 of 4: 51.020000 ms
I 00:00:00.167002 executorch:executor_runner.cpp:481] Iteration 3 of 4: 49.004000 ms
I 00:00:00.217105 executorch:executor_runner.cpp:481] Iteration 4 of 4: 50.010000 ms
I 00:00:00.217200 executorch:executor_runner.cpp:491] Model executed successfully 4 time(s) in 202.141000 ms.
I 00:00:00.217230 executorch:executor_runner.cpp:497] 1 outputs:
I 00:00:00.217301 executorch:executor_runner.cpp:507] Writing output to file: /data/local/tmp/out-0.bin
OutputX 0: tensor(sizes=[1, 3, 256, 256], [-0.12, 0.03, ...])
"""


def test_executor_runner_each_execution_and_the_total():
    from device_bench.parsers import parse_executor_runner

    r = parse_executor_runner(EXECUTOR_RUNNER_LOG)
    assert r.ok and r.threads == 4 and r.load_ms == pytest.approx(13.094)
    assert r.iterations_ms == pytest.approx([52.107, 51.02, 49.004, 50.01])
    assert r.timed_ms(warmup=2) == pytest.approx([49.004, 50.01])  # the warm-up executions dropped
    assert (r.executions, r.total_ms) == (4, pytest.approx(202.141))
    assert r.outputs_written == ["/data/local/tmp/out-0.bin"]


def test_executor_runner_older_releases_and_failures():
    from device_bench.parsers import parse_executor_runner

    total_only = "\n".join(line for line in EXECUTOR_RUNNER_LOG.splitlines() if "Iteration" not in line)
    r = parse_executor_runner(total_only)
    assert r.ok and r.iterations_ms == [] and r.total_ms == pytest.approx(202.141) and r.timed_ms(2) == []
    untimed = parse_executor_runner("I 00:00:00.1 executorch:executor_runner.cpp:180] Model executed successfully.")
    assert not untimed.ok and untimed.executions == 1 and not untimed.errors  # ran, but nothing to time
    failed = parse_executor_runner(
        "I 00:00:00.014310 executorch:executor_runner.cpp:362] Model loaded in 13.094000 ms.\n"
        "E 00:00:00.020001 executorch:method.cpp:1311] Execution of method forward failed with status 0x12\n"
    )
    assert not failed.ok and "Execution of method forward failed with status 0x12" in failed.errors[0]
