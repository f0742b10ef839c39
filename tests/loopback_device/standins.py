"""Host stand-ins for the phone's benchmark binaries. No native `benchmark_model` or
`onnxruntime_perf_test` or `executor_runner` exists for this machine, so these scripts time the
model for real with LiteRT / ONNX Runtime / ExecuTorch and print exactly the real tools' output format
(shared/reference/tool_output.md). `write_binaries(folder)` lays them out like the lab's
arm64-v8a cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCHMARK_MODEL = r"""
import re, statistics, sys, time
import numpy as np
args = dict(re.findall(r"--(\w+)=(\S*)", " ".join(sys.argv[1:])))
known = {"graph", "num_threads", "warmup_runs", "num_runs", "use_xnnpack", "use_gpu", "use_nnapi",
         "external_delegate_path", "input_layer", "input_layer_shape", "input_layer_value_files", "output_filepath",
         "enable_op_profiling"}
XNNPACK_LINE = "Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate."
GPU_LINE = "Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate."
GPU_FULL = "Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate."
# the persona's GPU: none (the delegate takes nothing) or one that runs the graph and corrupts its
# output's green channel, as broken mobile GPU drivers are reported to do
gpu_file = os.path.join(os.environ.get("ANDROID_ROOT_PREFIX", ""), "vendor/etc/coronet_gpu")
gpu = open(gpu_file).read().strip() if os.path.exists(gpu_file) else "none"
print("INFO: STARTING!")
unknown = [f"--{k}={v}" for k, v in args.items() if k not in known]
if unknown:
    print("WARN: Unconsumed cmdline flags: " + " ".join(unknown))
threads = int(args.get("num_threads", 1))
print("INFO: Log parameter values verbosely: [0]")
print(f"INFO: Num threads: [{threads}]")
print(f"INFO: Graph: [{args['graph']}]")
if os.environ.get("CORONET_STANDIN_CRASH"):
    os.kill(os.getpid(), 11)
from ai_edge_litert.interpreter import Interpreter, OpResolverType
t0 = time.perf_counter()
xnnpack = args.get("use_xnnpack", "true") != "false"
kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
it = Interpreter(model_path=args["graph"], num_threads=threads, experimental_op_resolver_type=kind)
it.allocate_tensors()
init_us = (time.perf_counter() - t0) * 1e6
print(f"INFO: Loaded model {args['graph']}")
if xnnpack:
    print("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    print("INFO: " + XNNPACK_LINE)
if args.get("use_gpu") == "true":  # what a phone without a usable GPU delegate prints, or one that runs
    print("INFO: " + (GPU_FULL if gpu == "corrupts" else GPU_LINE))
print(f"INFO: Initialized session in {init_us / 1000:.6g}ms.")
inp = it.get_input_details()[0]
x = np.random.default_rng(0).uniform(-1, 1, inp["shape"]).astype(np.float32)
if args.get("input_layer_value_files"):
    name, path = args["input_layer_value_files"].replace("::", "\0").split(":", 1)
    data = open(path.replace("\0", ":"), "rb").read()
    expected = int(np.prod(inp["shape"])) * np.dtype(inp["dtype"]).itemsize
    if len(data) != expected:
        print(f"FATAL: The size of {path} is {len(data)} bytes. It should be {expected} bytes.", file=sys.stderr)
        sys.exit(1)
    x = np.frombuffer(data, dtype=inp["dtype"]).reshape(inp["shape"])
def run():
    t = time.perf_counter(); it.set_tensor(inp["index"], x); it.invoke(); return (time.perf_counter() - t) * 1e6
def stats(samples):
    if not samples:
        return "count=0"
    s = sorted(samples); n = len(s)
    pct = lambda p: int(s[min(n - 1, int(p / 100 * n))])
    return (f"count={n} first={int(samples[0])} curr={int(samples[-1])} min={int(s[0])} max={int(s[-1])} "
            f"avg={statistics.fmean(samples):.6g} std={int(statistics.pstdev(samples))} p5={pct(5)} "
            f"median={pct(50)} p95={pct(95)}")
warm = [run() for _ in range(int(args.get("warmup_runs", 1)))]
LIMITS = "seconds but terminate if exceeding 150 seconds."
print(f"INFO: Running benchmark for at least {len(warm)} iterations and at least 0.5 {LIMITS}")
print("INFO: " + stats(warm) + "\n")
timed = [run() for _ in range(int(args.get("num_runs", 50)))]
print(f"INFO: Running benchmark for at least {len(timed)} iterations and at least 1 {LIMITS}")
print("INFO: " + stats(timed) + "\n")
avg = lambda v: f"{statistics.fmean(v):.6g}" if v else "nan"
print(f"INFO: Inference timings in us: Init: {int(init_us)}, First inference: {int(warm[0]) if warm else 0}, "
      f"Warmup (avg): {avg(warm)}, Inference (avg): {avg(timed)}")
print("INFO: Memory footprint delta from the start of the tool (MB): init=12.5 overall=20.25")
if args.get("enable_op_profiling") == "true":  # the ops timed for real (each alone), in the tool's tables
    from device_bench.op_profile import litert_op_times
    ops = litert_op_times(args["graph"], threads, runs=3, xnnpack=xnnpack)
    kind = "QS8" if inp["dtype"] != np.float32 or any("QUANTIZE" == o.type for o in ops) else "F32"
    # what XNNPACK's own profiling calls its operators (as benchmark_model prints them when it runs them)
    names = {"CONV_2D": f"Convolution (NHWC, {kind}) IGEMM", "TRANSPOSE_CONV": f"Deconvolution (NHWC, {kind})",
             "ADD": f"Add (ND, {kind})", "MUL": f"Multiply (ND, {kind})", "SUB": f"Subtract (ND, {kind})",
             "MEAN": f"Mean (ND, {kind})", "PAD": "Constant Pad (ND, X32)", "TRANSPOSE": "Transpose (ND, X32)",
             "CONVERT": "Convert (NC, F32, QS8)", "QUANTIZE": "Convert (NC, F32, QS8)", "TANH": f"TanH (NC, {kind})"}
    total = sum(o.time_ms for o in ops) or 1.0
    field = lambda v, w: "\t" + str(v).rjust(w)
    header = (field("[node type]", 24) + field("[first]", 9) + field("[avg ms]", 9) + field("[%]", 8)
              + field("[cdf%]", 8) + field("[mem KB]", 10) + field("[times called]", 9) + "\t[Name]")
    print("Profiling Info for Benchmark Initialization:")
    print("============================== Run Order ==============================")
    print(header)
    init_ms = f"{init_us / 1e3:.3f}"
    print(field("ModifyGraphWithDelegate", 24) + field(init_ms, 9) + field(init_ms, 9) + field("100.000%", 8)
          + field("100.000%", 8) + field("0.000", 10) + field(1, 9) + "\tModifyGraphWithDelegate/0")
    print()
    print("Operator-wise Profiling Info for Regular Benchmark Runs:")
    print("============================== Run Order ==============================")
    print(header)
    cdf = 0.0
    for i, op in enumerate(ops):
        name = names.get(op.type, op.type) if xnnpack else op.type
        cdf += op.time_ms / total * 100
        label = f"Delegate/{name}:{i}" if xnnpack else f"{op.name}:{i}"
        print(field(name, 24) + field(f"{op.time_ms:.3f}", 9) + field(f"{op.time_ms:.3f}", 9)
              + field(f"{op.time_ms / total * 100:.3f}%", 8) + field(f"{cdf:.3f}%", 8) + field("0.000", 10)
              + field(1, 9) + "\t" + label)
    print()
    print(f"Timings (microseconds): count={len(timed)} first={int(total * 1e3)} curr={int(total * 1e3)}")
    print("Memory (bytes): count=0")
    print(f"{len(ops)} nodes observed")
if args.get("output_filepath"):
    with open(args["output_filepath"], "wb") as f:
        for detail in it.get_output_details():
            y = it.get_tensor(detail["index"]).copy()
            if args.get("use_gpu") == "true" and gpu == "corrupts" and y.ndim == 4:
                green = (slice(None), 1) if y.shape[1] == 3 else (slice(None), slice(None), slice(None), 1)
                scale, zero = detail["quantization"]
                y[green] = np.clip(round(1.0 / scale) + zero, -128, 127) if y.dtype == np.int8 else 1.0
            f.write(y.tobytes())
"""

PERF_TEST = r"""
import statistics, sys, time
import numpy as np
argv = sys.argv[1:]
opts, i = {}, 0
while i < len(argv) - 1:
    if argv[i].startswith("-") and argv[i] != "-I":
        opts[argv[i]] = argv[i + 1]; i += 2
    else:
        i += 1
model = argv[-1]
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = int(opts.get("-x", 1)), int(opts.get("-y", 1))
if "-p" in opts:  # ORT's profiler writes PREFIX_<date>_<time>.json, as the real tool's -p does
    so.enable_profiling, so.profile_file_prefix = True, opts["-p"]
t0 = time.perf_counter()
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
print(f"Session creation time cost: {time.perf_counter() - t0:.4g} s")
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).uniform(-1, 1, inp.shape).astype(np.float32)
def run():
    t = time.perf_counter(); sess.run(None, {inp.name: x}); return time.perf_counter() - t
first = run()
print(f"First inference time cost: {first * 1000:.0f} ms")
runs = [run() for _ in range(int(opts.get("-r", 10)))]
total = sum(runs); s = sorted(runs); n = len(s)
q = lambda p: s[min(n - 1, int(p * n))]
print(f"Total inference time cost: {total:.4g} s")
print(f"Total inference requests: {n}")
print(f"Average inference time cost: {total / n * 1000:.4g} ms")
print(f"Total inference run time: {total:.4g} s")
print(f"Number of inferences per second: {n / total:.4g}")
print("Avg CPU usage: 95 %")
print("Peak working set size: 123456789 bytes")
print(f"Min Latency: {s[0]:.4g} s")
print(f"Max Latency: {s[-1]:.4g} s")
for name, p in (("P50", 0.5), ("P90", 0.9), ("P95", 0.95), ("P99", 0.99), ("P999", 0.999)):
    print(f"{name} Latency: {q(p):.4g} s")
if "-p" in opts:
    sess.end_profiling()
"""


EXECUTOR_RUNNER = r"""
import re, sys, time
args = {}
for arg in sys.argv[1:]:
    m = re.match(r"--(\w+)=(.*)", arg)
    if m is None:
        print(f"ERROR: unknown command line flag '{arg}'", file=sys.stderr); sys.exit(1)
    args[m.group(1)] = m.group(2)
known = {"model_path", "num_executions", "cpu_threads", "inputs", "output_file"}
if set(args) - known:
    print(f"ERROR: unknown command line flag '{sorted(set(args) - known)[0]}'", file=sys.stderr); sys.exit(1)
start = time.monotonic()
def log(level, line, message):  # ExecuTorch's ET_LOG format
    t = time.monotonic() - start
    print(f"{level} {int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{int(t % 60):02d}.{int(t % 1 * 1e6):06d} "
          f"executorch:executor_runner.cpp:{line}] {message}", flush=True)
import numpy as np, torch
from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
from executorch.runtime import Runtime
threads = int(args.get("cpu_threads", -1))
log("I", 238, f"Resetting threadpool with num threads = {threads if threads > 0 else 4}")
_unsafe_reset_threadpool(threads if threads > 0 else 4)
t0 = time.perf_counter()
program = Runtime.get().load_program(args.get("model_path", "model.pte"))
meta = program.metadata("forward").input_tensor_meta(0)
method = program.load_method("forward")
log("I", 362, f"Model loaded in {(time.perf_counter() - t0) * 1e3:f} ms.")
shape = tuple(meta.sizes())
if args.get("inputs"):
    data = open(args["inputs"].split(",")[0], "rb").read()
    x = torch.from_numpy(np.frombuffer(data, dtype=np.float32).reshape(shape).copy())
else:
    x = torch.ones(shape)  # the real tool's default input: all ones
n = int(args.get("num_executions", 1))
total = 0.0
for i in range(n):
    t = time.perf_counter(); out = method.execute([x]); dt = (time.perf_counter() - t) * 1e3
    total += dt
    log("I", 481, f"Iteration {i + 1} of {n}: {dt:f} ms")
log("I", 491, f"Model executed successfully {n} time(s) in {total:f} ms.")
log("I", 497, f"{len(out)} outputs: ")
if args.get("output_file"):
    name = f"{args['output_file']}-0.bin"
    log("I", 507, f"Writing output to file: {name}")
    open(name, "wb").write(out[0].numpy().tobytes())
print("OutputX 0: tensor(sizes=" + str(list(out[0].shape)) + ", [...])")
"""


def write_binaries(folder: Path) -> Path:
    """Write `benchmark_model`, `onnxruntime_perf_test` and `executor_runner` stand-ins
    (executable) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    tools = (("benchmark_model", BENCHMARK_MODEL), ("onnxruntime_perf_test", PERF_TEST),
             ("executor_runner", EXECUTOR_RUNNER))  # fmt: skip
    for name, body in tools:
        path = folder / name
        path.write_text(f"#!{sys.executable}\nimport os\n{body}")
        os.chmod(path, 0o755)
    return folder
