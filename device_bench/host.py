"""The host benchmark: the embedded default device when no phone is attached. ONNX Runtime
and LiteRT (XNNPACK) on this CPU: warm-up by time, then N timed runs, raw samples kept."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from coronet.bundle import Bundle, key_parts, tool_versions
from device_bench.records import BenchResult, LatencyStats, default_delegate


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_state() -> dict:
    state = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        state["loadavg"] = list(os.getloadavg())
    return state


def host_op_profile(bundle: Bundle, key: str, x: np.ndarray, threads: int, runs: int) -> dict:
    """Per-op times of the file on this CPU, after its timed runs (so they do not disturb them):
    ONNX Runtime's profiler; for LiteRT, each op timed alone with XNNPACK (op_profile.py)."""
    from device_bench.op_profile import litert_op_times, onnx_op_times

    runtime, _ = key_parts(key)
    path, runs = bundle.file(key), max(3, min(runs, 20))
    if runtime == "onnx":
        ops, source = onnx_op_times(path, x, threads, runs), "onnxruntime profiler"
    elif runtime == "tflite":
        ops, source = litert_op_times(path, threads, runs), "litert: each op timed alone (xnnpack)"
    else:
        return {"op_profile_source": f"no per-op profile of {runtime} on the host"}
    return {"op_profile": [op.to_dict() for op in ops], "op_profile_source": source}


def run_host_benchmark(
    bundle: Bundle,
    key: str,
    threads: int = 1,
    runs: int = 20,
    warmup_s: float = 1.0,
    seed: int = 0,
    profile: bool = False,
) -> BenchResult:
    """Time `runs` inferences of the bundle's file `key` ("tflite", "onnx-int8", ...) after
    warming up for `warmup_s`; with `profile`, then also each op's time (`host_op_profile`)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    before = host_state()
    t0 = time.perf_counter()
    runner = bundle.runner(key, threads=threads)
    runtime, precision = key_parts(key)
    init_ms = (time.perf_counter() - t0) * 1e3
    shape = bundle.input_shape
    entry = bundle.manifest["files"][key]
    if entry.get("layout") == "NHWC":
        shape = (shape[0], shape[2], shape[3], shape[1])
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    warmups, start = 0, time.perf_counter()
    while warmups == 0 or time.perf_counter() - start < warmup_s:
        runner.raw(x)
        warmups += 1
    samples = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        runner.raw(x)
        samples.append((time.perf_counter_ns() - t) / 1e6)
    after = host_state()
    state = {"before": before, "after": after}
    if profile:
        state.update(host_op_profile(bundle, key, x, threads, runs))
    return BenchResult(
        device="host",
        runtime=runtime,
        delegate=default_delegate(runtime),
        threads=threads,
        bundle=str(bundle.path),
        model_sha256=entry["sha256"],
        samples_ms=samples,
        stats=LatencyStats.from_samples(samples),
        init_ms=init_ms,
        warmup_runs=warmups,
        device_state=state,
        tool_versions=tool_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        precision=precision,
    )
