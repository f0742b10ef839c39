"""`device-bench calibrate`: a latency model (compress/latency.py) for one device, runtime,
delegate, thread count and precision, measured through the ordinary job path: each random plan
of the architecture is exported into a scratch bundle and timed as a BenchJob on the device
(the host in this process, a phone over ADB), exactly as the bench stage would time it; or,
given the lab's queue (`--server` / `--store`), queued as a job that the agent serving the
device runs, so that a lab refreshes its models from cron beside its nightly matrix."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coronet.bundle import GRAPH_FORM_KEY, GRAPH_FORMS, tool_versions
from device_bench.records import BenchJob, default_delegate
from device_bench.run import TOOLS

if TYPE_CHECKING:  # torch-free at import time: compress.latency is only named here
    from compress.latency import PlanTimer
    from device_bench.lab import Submitter
    from device_bench.records import BenchResult

# the package whose version decides a host runtime's speed
RUNTIME_PACKAGES = {"onnx": "onnxruntime", "tflite": "ai-edge-litert", "executorch": "executorch"}


def measured_tools(device: str, runtime: str, binaries: Path) -> dict[str, Any]:
    """The tool versions a latency model depends on: the host's runtime package, or the hash of
    the phone tool pushed from `binaries` (phone tools print no version); and the form of the
    graph our export writes for that runtime."""
    form = {GRAPH_FORM_KEY: GRAPH_FORMS[runtime]}
    if device == "host":
        package = RUNTIME_PACKAGES[runtime]
        return {package: tool_versions().get(package), **form}
    tool = Path(binaries) / TOOLS[runtime]
    digest = hashlib.sha256(tool.read_bytes()).hexdigest()[:16] if tool.is_file() else None
    return {TOOLS[runtime]: digest, **form}


def plan_timer(
    key,
    image_size: int,
    scratch: Path,
    runs: int = 10,
    warmup_s: float = 0.5,
    binaries: Path = Path("bench-binaries"),
    transport=None,
    calibration: list | None = None,
    seed: int = 0,
    on_timed: Callable[[float], None] | None = None,
    queue: Submitter | None = None,
    tag: str = "calibration",
    min_s: float = 0.0,
) -> PlanTimer:
    """A compress.latency.PlanTimer: the plan's generator (random weights) exported into a
    bundle in `scratch` and timed as an ordinary BenchJob on the key's device, with its per-op
    profile laid per layer (op_profile.per_layer). The host profiles after its timed runs; a
    phone, whose profiler slows the run it is in, gets a second, profiled job for the layer
    times. A plan timed again (`profile=False`) reuses its bundle: no export, no profile. With a
    `queue` (device_bench.lab.Submitter) each job is queued under `tag` and its result awaited:
    an agent that serves the device runs it (the bundle uploaded to a service once).

    With `min_s` > 0 a plan's timings run for at least that long, as the search's checks do
    (compress.latency.check_runs): its first timing, of `runs` runs, says how fast it is, and a
    plan faster than that is timed again at once with enough runs, and always so after. Ten runs
    of a fast plan are a fraction of a second of a shared machine: in the calibrations of
    2026-12-03 (benchmarks/latency_target.py runs 9, 13, 14, 15) the passes of plans under 60 ms
    lay 1.1-2.8x (median 2x) further apart than those of the larger plans."""
    import torch

    from compress.latency import Timing, check_runs
    from compress.models import build_generator
    from device_bench.op_profile import OpTime, per_layer
    from device_bench.run import execute
    from export import export_bundle

    bundles: dict[tuple[tuple[str, int], ...], Any] = {}
    runs_of: dict[tuple[tuple[str, int], ...], int] = {}  # a plan's runs, once its first timing said its speed

    def time_plan(plan, profile: bool = True) -> Timing:
        widths = tuple(sorted(plan.widths.items()))
        bundle = bundles.get(widths)
        if bundle is None:
            torch.manual_seed(seed)
            model = build_generator(plan.arch, plan).eval()
            folder = Path(scratch) / f"plan-{len(bundles)}"
            bundle = export_bundle(model, folder, (key.runtime,), image_size=image_size, precision=key.precision,
                                   parity_inputs=1, calibration=calibration, sample_images=0)  # fmt: skip
            bundles[widths] = bundle

        def job(profile: bool, runs: int = runs) -> BenchJob:
            return BenchJob(str(bundle.path), key.device, key.runtime, key.delegate, key.threads, runs=runs,
                            warmup_s=warmup_s, precision=key.precision, profile=profile)  # fmt: skip

        def run(job: BenchJob) -> BenchResult:
            if queue is None:
                return execute(job, transport, binaries)
            return queue.wait(queue.submit(replace(job, bundle=queue.bundle_ref(job.bundle)), tag), poll_s=0.5)

        result = run(job(profile and key.device == "host", runs_of.get(widths, runs)))
        profiled = result
        if widths not in runs_of:
            runs_of[widths] = check_runs(result.stats.median_ms, runs, min_s=min_s)  # `runs` with min_s 0
            if runs_of[widths] > result.stats.n:
                result = run(job(False, runs_of[widths]))
        if profile and key.device != "host" and key.runtime != "executorch":
            profiled = run(job(True))
        ops = [OpTime.from_dict(op) for op in profiled.device_state.get("op_profile") or []]
        rows = per_layer(bundle.manifest["layers"], ops) if ops else None
        layer_ms = [r.total_ms for r in rows if r.group] if rows else None
        if on_timed is not None:
            on_timed(result.stats.median_ms)
        tools = measured_tools(key.device, key.runtime, binaries) if queue is None else _agent_tools(key, result)
        return Timing(result.stats.median_ms, tools, _profile(result), layer_ms, result.stats.n)

    return time_plan


def calibrate_device(
    config_path: str | None,
    device: str,
    runtime: str,
    threads: int,
    out: Path,
    precision: str = "fp32",
    delegate: str = "",
    image_size: int | None = None,
    plans: int = 24,
    held_out: int = 8,
    runs: int = 10,
    warmup_s: float = 0.5,
    binaries: Path = Path("bench-binaries"),
    seed: int = 0,
    progress: bool = True,
    repeats: int = 2,
    reference_every: int = 4,
    queue: Submitter | None = None,
    min_s: float = 2.0,
):
    """Calibrate and write the latency model for the config's generator; returns it. With a
    `queue` (device_bench.lab.Submitter), through the lab's agents rather than in this process.
    Each timing runs for at least `min_s` (`plan_timer`)."""
    import numpy as np

    from compress.config import load_config
    from compress.latency import LatencyKey, calibrate, timing_order
    from compress.models import example_input_shape, full_plan
    from coronet.progress import Progress

    config = load_config(config_path)
    plan = full_plan(config.model.arch, **config.model.sizes)
    size = image_size or config.export.image_size or config.data.image_size
    shape = example_input_shape(plan, size)
    key = LatencyKey(device, runtime, delegate or default_delegate(runtime), threads, precision)
    calibration = None
    if precision == "int8":  # calibrated on images of the right size; values matter little for timing
        rng = np.random.default_rng(seed)
        calibration = [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(4)]
    transport = None
    if device != "host" and queue is None:
        from device_bench.adb import AdbTransport

        transport = AdbTransport(device)
        transport.connect()
    bar = Progress("calibrate", len(timing_order(plans + held_out + 1, repeats, reference_every, seed)),
                   enabled=progress)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="coronet-calibrate-") as scratch:
            tag = f"calibration {Path(out).name} {datetime.now(UTC).isoformat(timespec='seconds')}"
            time_plan = plan_timer(key, size, Path(scratch), runs, warmup_s, binaries, transport, calibration, seed,
                                   lambda ms: bar.show(plan_ms=ms), queue, tag, min_s)  # fmt: skip
            model = calibrate(plan, shape, key, time_plan, plans, held_out, seed,
                              progress=lambda done, total: (bar.grow(total), bar.update(1)), repeats=repeats,
                              reference_every=reference_every)  # fmt: skip
    finally:
        bar.close()
        if transport is not None:
            transport.close()
    model.calibration["min_seconds"] = min_s
    model.save(out)
    return model


def _agent_tools(key, result: BenchResult) -> dict[str, Any]:
    """measured_tools for a job an agent ran: the host's runtime version as its result records
    it; for a phone, the graph form only (the agent's tool is not hashed in its results)."""
    form = {GRAPH_FORM_KEY: GRAPH_FORMS[key.runtime]}
    if key.device == "host":
        package = RUNTIME_PACKAGES[key.runtime]
        return {package: result.tool_versions.get(package), **form}
    return form


def _profile(result) -> dict[str, Any]:
    """What the device was: the phone's chip and model, or the host's CPU."""
    state = result.device_state
    if result.device == "host":
        before = state.get("before", {})
        return {"cpu": before.get("cpu"), "cpu_count": before.get("cpu_count"), "platform": before.get("platform")}
    return {"soc": state.get("soc"), "model": state.get("model"), "cluster": state.get("cluster")}
