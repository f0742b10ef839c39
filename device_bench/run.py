"""One benchmark job: `execute` runs a `BenchJob` on the host or on a phone. On a phone: push the
runner, the tool and the model (each only when the device lacks those exact bytes), run the
on-device runner, parse its result block."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import shlex
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from coronet.bundle import Bundle, tool_versions
from coronet.images import png_bytes
from device_bench.adb import AdbTransport, DeviceError
from device_bench.op_profile import OpTime, from_benchmark_model, read_ort_profile
from device_bench.output_check import OutputCheck, compare, read_output, tensor_bytes
from device_bench.parsers import parse_benchmark_model, parse_executor_runner, parse_perf_test
from device_bench.profiles import DeviceProfile, clusters_from_policies, identify_soc, parse_getprop
from device_bench.records import BenchJob, BenchResult, JobError, LatencyStats, default_delegate

RUNNER = Path(__file__).resolve().parents[1] / "android_runner" / "runner.sh"
TOOLS = {"tflite": "benchmark_model", "onnx": "onnxruntime_perf_test", "executorch": "executor_runner"}
OUTPUT_TOOLS = ("tflite", "executorch")  # the runtimes whose phone tool hands the output back
OUTPUT_IMAGE_SIDE = 256  # the phone's output kept with the result as a PNG of at most this side
BLOCK = re.compile(r"=== CORONET-RESULT v1 BEGIN ===\n(.*?)\n=== CORONET-RESULT v1 END ===", re.S)


def execute(
    job: BenchJob,
    transport: AdbTransport | None = None,
    binaries: Path = Path("bench-binaries"),
    external_delegates: dict[str, str] | None = None,
) -> BenchResult:
    """Run `job` (its bundle a local folder) where it says: this host, or the phone `transport`
    is connected to. The one executor of the suite, the agent and the `run` command."""
    if job.device == "host":
        if job.delegate != default_delegate(job.runtime):
            raise JobError(f"bench job: the host runs {job.runtime} with {default_delegate(job.runtime)}; "
                           f"{job.delegate} needs a phone")  # fmt: skip
        from device_bench.host import run_host_benchmark

        return run_host_benchmark(Bundle.open(job.bundle), job.file_key, job.threads, job.runs, job.warmup_s,
                                  profile=job.profile)  # fmt: skip
    if transport is None:
        raise JobError(f"bench job for {job.device}: connect to the phone first")
    return run_job(job, transport, binaries, external_delegates=external_delegates)


def detect_profile(t: AdbTransport) -> DeviceProfile:
    props = parse_getprop(t.check("getprop", "profile"))
    soc, known = identify_soc(props)
    listing = t.check(
        'for p in /sys/devices/system/cpu/cpufreq/policy*; do echo "$(basename "$p")|'
        '$(cat "$p/related_cpus")|$(cat "$p/cpuinfo_max_freq")"; done',
        "profile",
    )
    policies = {}
    for line in listing.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip().isdigit():
            policies[parts[0]] = (parts[1], parts[2])
    return DeviceProfile(t.serial, props.get("ro.product.model", "?"), soc, clusters_from_policies(policies), known)


def parse_block(output: str) -> dict:
    """The runner's result block: key=value fields, the two state records, the raw tool output."""
    m = BLOCK.search(output)
    if m is None:
        raise ValueError("no CORONET-RESULT block in the runner's output")
    body = m.group(1)
    head, _, raw = body.partition("--- raw output ---\n")
    fields, _, states = head.partition("--- state before ---\n")
    before, _, after = states.partition("--- state after ---\n")
    return {
        "fields": dict(line.split("=", 1) for line in fields.splitlines() if "=" in line),
        "before": before.strip().splitlines(),
        "after": after.strip().splitlines(),
        "raw": raw,
    }


def _state(lines: list[str]) -> dict:
    state: dict = {"freq_khz": {}}
    for line in lines:
        key, _, rest = line.partition(" ")
        if key == "freq":
            policy, _, values = rest.partition(" ")
            state["freq_khz"][policy] = dict(v.split("=", 1) for v in values.split() if "=" in v)
        elif key in ("temp_c", "thermal_status"):
            state[key] = int(rest) if rest.strip().lstrip("-").isdigit() else None
    return state


def run_job(
    job: BenchJob,
    t: AdbTransport,
    binaries: Path,
    bench_dir: str = "/data/local/tmp/coronet",
    external_delegates: dict[str, str] | None = None,
) -> BenchResult:
    """Run `job` (its bundle a local folder) on the connected device `t`; raises DeviceError
    (with the step) on failure. An "external:NAME" delegate is the library this host's
    `external_delegates` allowlist names NAME (a path on the phone); any other is refused."""
    with tempfile.TemporaryDirectory(prefix="coronet-job-") as scratch:  # the check input and output
        return _run_job(job, t, binaries, bench_dir, external_delegates, Path(scratch))


def _run_job(
    job: BenchJob,
    t: AdbTransport,
    binaries: Path,
    bench_dir: str,
    external_delegates: dict[str, str] | None,
    scratch: Path,
) -> BenchResult:
    bundle = Bundle.open(job.bundle)
    delegate = job.delegate
    if job.external_delegate is not None:
        library = (external_delegates or {}).get(job.external_delegate)
        if library is None:
            raise DeviceError(t.serial, "prepare", f"external delegate {job.external_delegate!r} is not in this "
                              "agent's allowlist (--external-delegate NAME=PATH_ON_PHONE)")  # fmt: skip
        delegate = f"external:{library}"
    tool = TOOLS[job.runtime]
    local_tool = Path(binaries) / tool
    if not local_tool.is_file():
        raise DeviceError(t.serial, "prepare", f"missing {local_tool}: put the arm64-v8a {tool} there")
    model = bundle.file(job.file_key)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    # The model is stored under its hash: hostile bundle names never reach the device's shell.
    remote = {
        "runner": f"{bench_dir}/runner.sh",
        "tool": f"{bench_dir}/bin/{tool}",
        "model": f"{bench_dir}/models/{digest[:24]}{model.suffix}",
    }
    sources = {"runner": RUNNER, "tool": local_tool, "model": model}
    layout = bundle.manifest["files"][job.file_key].get("layout", "NCHW")
    check_args: tuple[str, ...] = ()
    remote_output = ""
    check_input = bundle.check_input() if job.runtime in OUTPUT_TOOLS else None
    if check_input is not None:  # the phone runs the check input and writes its output back
        if job.runtime == "tflite":
            name, shape, data = tensor_bytes(check_input, model, layout)
        else:  # a .pte takes NCHW float32
            name, shape, data = "x", list(check_input.shape), check_input.tobytes()
        local_input = scratch / "input.bin"
        local_input.write_bytes(data)
        sources["input"] = local_input
        remote["input"] = f"{bench_dir}/inputs/{hashlib.sha256(data).hexdigest()[:24]}.bin"
        remote_output = f"{bench_dir}/jobs/output-{uuid.uuid4().hex[:16]}.bin"
        check_args = ("--input-layer", name, "--input-shape", ",".join(map(str, shape)),
                      "--input-file", remote["input"], "--output-file", remote_output)  # fmt: skip
    remote_profile = f"{bench_dir}/jobs/profile-{uuid.uuid4().hex[:16]}.json"
    profile_args = ("--op-profile", remote_profile) if job.profile else ()
    pushed = [name for name, src in sources.items() if t.push(src, remote[name])]
    t.check(f"chmod 755 {shlex.quote(remote['tool'])} {shlex.quote(remote['runner'])}", "prepare")
    profile = detect_profile(t)
    cluster = profile.cluster(job.cluster)
    command = " ".join(
        shlex.quote(part)
        for part in (
            "sh", remote["runner"], "--tool", tool, "--bin", f"{bench_dir}/bin", "--model", remote["model"],
            "--threads", str(job.threads), "--cpus", cluster.mask, "--warmup", str(job.warmup),
            "--runs", str(job.runs), "--delegate", delegate, "--max-temp-c", str(job.max_temp_c),
            "--max-wait-s", str(job.max_wait_s), "--work", bench_dir, *check_args, *profile_args,
        )
    )  # fmt: skip
    rc, output = t.run_detached(command, f"{bench_dir}/jobs", timeout_s=job.budget_s, poll_s=job.poll_s,
                                unreachable_s=job.unreachable_s)  # fmt: skip
    if rc != 0:
        raise DeviceError(t.serial, "run", f"the runner exited {rc}: {output.strip()[-300:]}")
    try:
        block = parse_block(output)
    except ValueError as exc:
        raise DeviceError(t.serial, "run", str(exc)) from None
    tool_rc = int(block["fields"].get("rc", "1"))
    if tool_rc != 0:
        raise DeviceError(t.serial, "run", f"{tool} exited {tool_rc}: {block['raw'].strip()[-300:] or 'no output'}")
    flags: list[str] = []
    if job.runtime == "tflite":
        parsed = parse_benchmark_model(block["raw"], requested=job.delegate)
        if not parsed.ok:
            raise DeviceError(t.serial, "parse", "; ".join(parsed.errors) or "no timed runs in the tool output")
        runs = parsed.runs
        median = runs.median if runs.median is not None else runs.avg
        p95 = runs.p95 / 1e3 if runs.p95 is not None else None
        stats = LatencyStats(runs.count, median / 1e3, None, p95, runs.min / 1e3, runs.avg / 1e3)
        init_ms, ran_on, flags = (parsed.init_us or 0) / 1e3, parsed.ran_on, list(parsed.flags)
        ops = from_benchmark_model(parsed.op_profile, "GPU" if ran_on == "gpu" else "CPU")
    elif job.runtime == "onnx":
        perf = parse_perf_test(block["raw"])
        if not perf.ok:
            raise DeviceError(t.serial, "parse", "; ".join(perf.errors) or "no average latency in the tool output")
        lat = perf.latency_ms
        stats = LatencyStats(perf.requests or 0, lat.get("p50", perf.avg_ms), lat.get("p90"), lat.get("p95"),
                             lat.get("min", perf.avg_ms), perf.avg_ms)  # fmt: skip
        init_ms, ran_on = (perf.session_creation_s or 0) * 1e3, job.delegate
        ops = _ort_profile(t, block, remote_profile, scratch) if job.profile else []
    else:
        et = parse_executor_runner(block["raw"])
        if not et.ok:
            raise DeviceError(t.serial, "parse", "; ".join(et.errors) or "no execution times in executor_runner's "
                              "output (a release that logs neither each execution nor their total)")  # fmt: skip
        timed = et.timed_ms(job.warmup)
        if timed:
            stats = LatencyStats.from_samples(timed)
        else:  # only the total of all executions, warm-up included
            mean = et.total_ms / (et.executions or 1)
            stats, flags = LatencyStats(et.executions or 1, mean, None, None, mean, mean), ["mean-only"]
        init_ms, ran_on = et.load_ms or 0.0, "xnnpack"  # the program's own delegate
        ops = []  # executor_runner has no per-op timing of its own (ETDump is a build option)
    output_check = None
    if check_args:
        output_check = _check_output(t, bundle, job, ran_on, block, remote_output, scratch, layout)
        if output_check is None:
            flags.append("output-unchecked")  # an older benchmark_model without --output_filepath
    before, after = _state(block["before"]), _state(block["after"])
    profiled: dict = {}
    if job.profile:  # its timed runs carried the profiler
        flags.append("op-profiled" if ops else "no-op-profile")
        profiled = {"op_profile": [op.to_dict() for op in ops], "op_profile_source": tool} if ops else {}
    waited = int(block["fields"].get("waited_s", "0"))
    if waited:
        flags.append("thermal-wait")
    if (before.get("thermal_status") or 0) > 0:
        flags.append("hot")
    return BenchResult(
        device=t.serial,
        runtime=job.runtime,
        delegate=ran_on,
        threads=job.threads,
        bundle=str(bundle.path),
        model_sha256=digest,
        samples_ms=[],  # the tools report statistics, not samples
        stats=stats,
        init_ms=init_ms,
        warmup_runs=job.warmup,
        device_state={
            "soc": profile.soc,
            "model": profile.model,
            "cluster": job.cluster,
            "cpus": cluster.mask,
            "waited_s": waited,
            "before": before,
            "after": after,
            "pushed": pushed,
            "runner_delegate": block["fields"].get("delegate", delegate),  # an external one as its library path
            **profiled,
        },
        tool_versions={"host": tool_versions()},
        flags=flags,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        precision=job.precision,
        output_check=output_check.to_dict() if output_check is not None else None,
    )


def _ort_profile(t: AdbTransport, block: dict, remote: str, scratch: Path) -> list[OpTime]:
    """onnxruntime_perf_test's profile JSON, pulled from the phone; its one warm-up run left out."""
    if int(block["fields"].get("profile_bytes", "-1")) < 0:
        return []
    local = scratch / "profile.json"
    t.pull(remote, local)
    t.shell(f"rm -f {shlex.quote(remote)}")
    try:
        return read_ort_profile(local, warmup=1)
    except ValueError as exc:  # JSONDecodeError included
        raise DeviceError(t.serial, "parse", f"onnxruntime_perf_test's profile: {exc}") from None


def _check_output(
    t: AdbTransport, bundle: Bundle, job: BenchJob, ran_on: str, block: dict, remote: str, scratch: Path, layout: str
) -> OutputCheck | None:
    """The phone's output on the check input against this host's output of the runtime's fp32
    file on the same input (LiteRT's reference kernels, no delegate); a wrong output fails the
    job, so its latency is never recorded. None when the tool wrote no output."""
    if int(block["fields"].get("output_bytes", "-1")) < 0:
        return None
    local = scratch / "output.bin"
    t.pull(remote, local)
    t.shell(f"rm -f {shlex.quote(remote)}")
    reference, expected = _reference_output(bundle, job.runtime)
    raw = local.read_bytes()
    try:
        if job.runtime == "tflite":
            got = read_output(raw, bundle.file(job.file_key))
            if layout == "NHWC" and got.ndim == 4:
                got = got.transpose(0, 3, 1, 2)
        elif len(raw) != expected.nbytes:  # a .pte's output: NCHW float32
            raise ValueError(f"the phone wrote {len(raw)} bytes of output, expected {expected.nbytes}")
        else:
            got = np.frombuffer(raw, dtype=np.float32).reshape(expected.shape)
        check = compare(got, expected, job.precision, f"the {reference} file on the host")
    except ValueError as exc:  # a short or misshapen output is the phone's failure, said in one line
        raise DeviceError(t.serial, "check", str(exc)) from None
    if not check.ok:
        raise DeviceError(t.serial, "check", f"{ran_on} computed a wrong output: {check.describe()}; "
                          "no latency recorded")  # fmt: skip
    if got.ndim == 4 and got.shape[1] in (1, 3):  # what the phone computed, for the report's samples
        image = base64.b64encode(png_bytes(got[0], max_side=OUTPUT_IMAGE_SIDE)).decode()
        check = dataclasses.replace(check, image_png=image)
    return check


def _reference_output(bundle: Bundle, runtime: str) -> tuple[str, np.ndarray]:
    """This host's output on the check input, from an fp32 file: the job's runtime's for TFLite
    (LiteRT's reference kernels, no delegate); for a .pte the ONNX or TFLite one (the lab host
    need not have ExecuTorch; every fp32 file matches PyTorch to 1e-4)."""
    from export.runtimes import OnnxRunner, TfliteRunner

    x = bundle.check_input()
    for key in ("tflite",) if runtime == "tflite" else ("onnx", "tflite", "executorch"):
        if key not in bundle.keys:
            continue
        if key == "onnx":
            return key, OnnxRunner(bundle.file(key))(x)
        if key == "tflite":
            layout = bundle.manifest["files"][key].get("layout", "NCHW")
            return key, TfliteRunner(bundle.file(key), layout=layout, xnnpack=False)(x)
        return key, bundle.runner(key)(x)
    raise DeviceError("host", "check", f"the bundle has no fp32 {runtime} file to compare the phone's output with")
