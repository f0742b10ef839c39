"""Per-op profiles in one record format, whatever measured them, and merged per layer of the plan.

Sources: `benchmark_model --enable_op_profiling=true` on a phone (its "Run Order" table), ONNX
Runtime's profiler (`onnxruntime_perf_test -p FILE` on a phone, `SessionOptions.enable_profiling`
on the host), LiteRT on the host (its Python API has no profiler: each op is timed alone, see
`litert_op_times`), and Qualcomm AI Hub (device_bench/aihub.py). Each gives `OpTime`s in execution
order, stored as `device_state["op_profile"]` of the result.

`per_layer` lays them against the bundle's layers (the convolutions in forward order, from the
manifest): the i-th conv op is the i-th layer, and every op after a conv up to the next one
(norm, activation, the next pad, layout reorders) counts to that conv's layer, because it works
on that conv's output channels and so shrinks with that channel group. Ops before the first conv
form an "input" row. When the counts of conv ops and layers differ (a runtime fused or split
convolutions) the profile is not laid against the plan and the page shows it by op type only.
No torch here: the lab host and the report import it."""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# a convolution in any tool's words: CONV_2D, TRANSPOSE_CONV, Conv, ConvTranspose, QLinearConv,
# FusedConv, "Convolution (NHWC, F32) IGEMM", "Deconvolution (NHWC, QS8)", Conv2d; not "Convert"
CONV = re.compile(r"conv(?!ert)", re.IGNORECASE)
RUN_ORDER = ("Operator-wise Profiling Info for Regular Benchmark Runs", "Run Order")


@dataclass(frozen=True)
class OpTime:
    """One op of one profile: its name in the tool's words, its type, its mean time per
    inference and where it ran (CPU, GPU, NPU)."""

    name: str
    type: str
    time_ms: float
    compute_unit: str = "CPU"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpTime:
        return cls(str(data.get("name", "")), str(data.get("type", "")), float(data.get("time_ms", 0.0)),
                   str(data.get("compute_unit", "CPU")))  # fmt: skip

    @property
    def is_conv(self) -> bool:
        return CONV.search(self.type) is not None


def from_benchmark_model(op_profile: dict[str, dict[str, list[dict[str, str]]]], unit: str = "CPU") -> list[OpTime]:
    """The "Run Order" table of the regular runs, as benchmark_model printed it (parsed by
    `parsers.parse_benchmark_model`); [] when the tool printed no op profile."""
    section, table = RUN_ORDER
    ops = []
    for row in op_profile.get(section, {}).get(table, []):
        try:
            ms = float(row.get("avg ms", "nan"))
        except ValueError:
            continue
        if ms == ms:  # not NaN
            ops.append(OpTime(row.get("Name", ""), row.get("node type", row.get("Node type", "")), ms, unit))
    return ops


def from_ort_profile(events: Any, warmup: int = 0) -> list[OpTime]:
    """ONNX Runtime's profile (the JSON list of trace events it writes): every node's mean
    kernel time over the profiled runs but the first `warmup` ones, in execution order."""
    if not isinstance(events, list):
        raise ValueError("an ONNX Runtime profile is a JSON list of events")
    times: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, tuple[str, str]] = {}
    for e in events:
        if not isinstance(e, dict) or e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(e["name"])[: -len("_kernel_time")]
        args = e.get("args") if isinstance(e.get("args"), dict) else {}
        times[name].append(float(e.get("dur", 0)) / 1e3)
        provider = str(args.get("provider", "CPUExecutionProvider")).removesuffix("ExecutionProvider")
        kinds.setdefault(name, (str(args.get("op_name", "")), "CPU" if provider == "CPU" else provider))
    return [OpTime(name, kinds[name][0], statistics.fmean(t[warmup:] or t), kinds[name][1])
            for name, t in times.items()]  # fmt: skip


def read_ort_profile(path: str | Path, warmup: int = 0) -> list[OpTime]:
    return from_ort_profile(json.loads(Path(path).read_text()), warmup)


def onnx_op_times(path: str | Path, x: np.ndarray, threads: int = 1, runs: int = 10) -> list[OpTime]:
    """ONNX Runtime's own profiler on this host: `runs` profiled inferences after one warm-up."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="coronet-ort-profile-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(1 + max(1, runs)):  # the first run allocates: not what a layer costs
            session.run(None, feed)
        return read_ort_profile(session.end_profiling(), warmup=1)


def litert_op_times(path: str | Path, threads: int = 1, runs: int = 10, xnnpack: bool = True) -> list[OpTime]:
    """Each op of a .tflite timed alone: the op in a one-op model with its own constants, given
    random inputs of its input tensors' types, run with the same delegate and threads; the
    median of `runs` after two warm-ups. LiteRT's Python API exposes no op profiler, so this is
    the host's LiteRT profile; an op measured alone misses what it shares with its neighbours
    in cache, so the sum is compared with the whole model's time on the page."""
    from export.litert import interpreter, single_ops

    rng = np.random.default_rng(0)
    ops = []
    for op in single_ops(path):
        it = interpreter(op.path, num_threads=threads, xnnpack=xnnpack)
        for detail in it.get_input_details():
            it.set_tensor(detail["index"], _random(rng, detail["shape"], detail["dtype"]))
        samples = []
        for i in range(runs + 2):
            t = time.perf_counter_ns()
            it.invoke()
            if i >= 2:
                samples.append((time.perf_counter_ns() - t) / 1e6)
        ops.append(OpTime(op.output, op.kind, statistics.median(samples)))
    return ops


def _random(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
    return rng.uniform(-1, 1, shape).astype(dtype)


@dataclass(frozen=True)
class LayerTime:
    """One row of the per-layer view: a conv of the plan (or "input") and the ops counted to it."""

    layer: str  # the module path, or "input"
    group: str  # its output channel group ("" for input)
    shape: str  # "C_in→C_out k3 s2" (transposed: "T")
    conv_ms: float
    other_ms: float
    other_ops: str  # what the other ops were, by type: "InstanceNormalization, Relu, Pad"

    @property
    def total_ms(self) -> float:
        return self.conv_ms + self.other_ms


def layer_shape(layer: dict[str, Any]) -> str:
    kind = "T" if layer.get("transposed") else "k"
    return f"{layer['in']}→{layer['out']} {kind}{layer['kernel']} s{layer['stride']}"


def per_layer(layers: list[dict[str, Any]], ops: list[OpTime]) -> list[LayerTime] | None:
    """`ops` (in execution order) laid against `layers` (the manifest's convs in forward order):
    one conv op per layer (ONNX), or a transposed layer's `phases` conv ops in a row (a TFLite
    file computes it as one conv per output phase); None when the profile's conv ops are
    neither. A layer's conv time sums its conv ops; its other ops are the non-conv ops after
    its first conv op, up to the next layer's."""
    convs = [i for i, op in enumerate(ops) if op.is_conv]
    if not layers:
        return None
    if len(convs) == len(layers):
        per = [1] * len(layers)
    elif len(convs) == sum(int(layer.get("phases", 1)) for layer in layers):
        per = [int(layer.get("phases", 1)) for layer in layers]
    else:
        return None
    firsts = [convs[sum(per[:k])] for k in range(len(layers))]
    rows = []
    bounds = [*firsts, len(ops)]
    if convs[0] > 0:
        before = ops[: convs[0]]
        rows.append(LayerTime("input", "", "", 0.0, sum(o.time_ms for o in before), _kinds(before)))
    for k, layer in enumerate(layers):
        span = ops[bounds[k] : bounds[k + 1]]
        rest = [o for o in span if not o.is_conv]
        rows.append(LayerTime(layer["name"], layer["group"], layer_shape(layer),
                              sum(o.time_ms for o in span if o.is_conv), sum(o.time_ms for o in rest),
                              _kinds(rest)))  # fmt: skip
    return rows


def by_type(ops: list[OpTime]) -> dict[str, float]:
    """Total time per op type, largest first."""
    totals: dict[str, float] = defaultdict(float)
    for op in ops:
        totals[op.type] += op.time_ms
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _kinds(ops: list[OpTime]) -> str:
    seen: dict[str, None] = {}
    for op in ops:
        seen.setdefault(op.type, None)
    return ", ".join(seen)
