"""Parsers for the output of LiteRT's `benchmark_model` and ONNX Runtime's
`onnxruntime_perf_test`, every variant listed in shared/reference/tool_output.md.

Times from `benchmark_model` are microseconds (floats: large values come in e-notation, an
empty statistic is `nan`). A run that asked for an accelerator and fell back to the CPU, fully
or partly, is flagged with what actually ran; it is never reported as the accelerator.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
_PREFIX = re.compile(r"^(?:INFO|WARN|WARNING|ERROR|FATAL):\s?")
_PAIR = re.compile(rf"(\w+)=({NUMBER})")


def _num(text: str) -> float:
    return float(text)  # float() reads e-notation, "nan" and "inf"


@dataclass(frozen=True)
class ToolStats:
    """One `count=... first=... curr=... min=... max=... avg=... std=...` line (microseconds)."""

    count: int
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None
    all_same: bool = False

    @classmethod
    def parse(cls, line: str) -> ToolStats:
        values = {k: _num(v) for k, v in _PAIR.findall(line)}
        if "count" not in values:
            raise ValueError(f"not a statistics line: {line!r}")
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__ and k != "count"}
        stats = cls(count=int(values["count"]), all_same="(all same)" in line, **known)
        if stats.all_same and stats.curr is not None:  # every sample equals curr
            stats = cls(stats.count, stats.curr, stats.curr, stats.curr, stats.curr, stats.curr, 0.0,
                        stats.curr, stats.curr, stats.curr, True)  # fmt: skip
        return stats


@dataclass
class Delegation:
    """What the delegate lines say about where the graph ran."""

    name: str | None = None  # as the tool names it: "XNNPACK", "GPU", "NNAPI", ...
    full: bool | None = None  # True: whole graph; False: partly or not at all; None: no line
    executed: bool | None = None  # False: "will not be executed by the delegate"
    delegate_kernels: int | None = None
    replaced_nodes: int | None = None
    total_nodes: int | None = None
    partitions: int | None = None
    gpu_unsupported: list[str] = field(default_factory=list)
    gpu_ops: int | None = None
    cpu_ops: int | None = None


@dataclass
class BenchmarkModelResult:
    num_threads: int | None = None
    graph: str | None = None
    init_ms: float | None = None  # "Initialized session in <x>ms."
    init_us: float | None = None  # from the "Inference timings in us" line
    first_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    warmup: ToolStats | None = None
    runs: ToolStats | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    memory_status: dict[str, str] = field(default_factory=dict)
    delegation: Delegation = field(default_factory=Delegation)
    unconsumed_flags: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    op_profile: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    ran_on: str = "cpu"  # what actually ran, from the delegate lines
    flags: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.runs is not None and not self.errors


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.strip())


def _delegation_line(text: str, d: Delegation) -> bool:
    m = re.search(r"Explicitly applied (\S+) delegate, and the model graph will be completely executed", text)
    if m:
        d.name, d.full, d.executed = m.group(1), True, True
        return True
    m = re.search(
        r"Explicitly applied (\S+) delegate, and the model graph will be partially executed by the delegate "
        r"w/ (\d+) delegate kernels",
        text,
    )
    if m:
        d.name, d.full, d.executed, d.delegate_kernels = m.group(1), False, True, int(m.group(2))
        return True
    m = re.search(r"Though (\S+) delegate is explicitly applied, the model graph will not be executed", text)
    if m:
        d.name, d.full, d.executed = m.group(1), False, False
        return True
    if "Applied GPU delegate, and the model graph will be completely executed" in text:
        d.name, d.full, d.executed = "GPU", True, True
        return True
    m = re.search(
        r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node, yielding (\d+) partitions", text
    )
    m = m or re.search(r"Replacing (\d+) node\(s\) with delegate \(([^)]*)\) node, yielding (\d+) partitions", text)
    if m:
        groups = m.groups()
        d.replaced_nodes = int(groups[0])
        if len(groups) == 4:
            d.total_nodes, d.partitions = int(groups[1]), int(groups[3])
        else:
            d.partitions = int(groups[2])
        return True
    m = re.search(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU", text)
    if m:
        d.gpu_ops, d.cpu_ops = int(m.group(1)), int(m.group(2))
        return True
    return False


_SECTION = re.compile(r"^(Profiling Info for Benchmark Initialization|Operator-wise Profiling Info for .*):$")
_TABLE = re.compile(r"^=+\s*(.*?)\s*=+$")


def parse_benchmark_model(text: str, requested: str | None = None) -> BenchmarkModelResult:
    """Parse `benchmark_model` output; `requested` is the delegate asked for ("gpu", "nnapi",
    "xnnpack", "external") to judge fallbacks; None or "cpu" means plain CPU kernels."""
    r = BenchmarkModelResult()
    stats_lines: list[ToolStats] = []
    section = table = None
    header: list[str] | None = None
    in_gpu_list = False
    for raw in text.splitlines():
        line = _strip(raw)
        if not line:
            header = None if table else header
            continue
        if (m := _SECTION.match(line)) is not None:
            section, table, header = m.group(1), None, None
            r.op_profile.setdefault(section, {})
            continue
        if section is not None and (m := _TABLE.match(line)) is not None:
            table, header = m.group(1), None
            r.op_profile[section].setdefault(table, [])
            continue
        if section is not None and table is not None and "\t" in raw:
            cells = [c.strip() for c in raw.strip().split("\t") if c.strip() != ""]
            if header is None and cells and cells[0].startswith("["):
                header = [c.strip("[]") for c in cells]
            elif header is not None:
                r.op_profile[section][table].append(dict(zip(header, cells, strict=False)))
            continue
        if in_gpu_list:
            if re.match(r"^[A-Z0-9_]+: ", line):
                r.delegation.gpu_unsupported.append(line.split(":", 1)[0])
                continue
            in_gpu_list = False
        if line.startswith("Following operations are not supported by GPU delegate"):
            in_gpu_list = True
            continue
        if _delegation_line(line, r.delegation):
            continue
        if line.startswith(("Timings (microseconds):", "Memory (bytes):")):
            continue  # op-profiling summaries, not the run statistics
        if re.match(r"^(?:curr|count)=", line):
            stats_lines.append(ToolStats.parse(line))
            continue
        if m := re.match(r"^Num threads: \[(\d+)\]", line):
            r.num_threads = int(m.group(1))
        elif m := re.match(r"^Graph: \[(.*)\]", line):
            r.graph = m.group(1)
        elif m := re.match(rf"^Initialized session in ({NUMBER})ms", line):
            r.init_ms = _num(m.group(1))
        elif line.startswith("Inference timings in us:"):
            for key, value in re.findall(rf"([A-Za-z ()]+): ({NUMBER})", line.split(":", 1)[1]):
                key = key.strip()
                attr = {"Init": "init_us", "First inference": "first_us", "Warmup (avg)": "warmup_avg_us",
                        "Inference (avg)": "inference_avg_us"}.get(key)  # fmt: skip
                if attr:
                    setattr(r, attr, _num(value))
        elif line.startswith("Average inference timings in us:"):  # very old builds
            for key, value in re.findall(rf"(\w+): ({NUMBER})", line.split(":", 1)[1]):
                attr = {"Warmup": "warmup_avg_us", "Init": "init_us", "Inference": "inference_avg_us"}.get(key)
                if attr:
                    setattr(r, attr, _num(value))
        elif m := re.match(rf"^(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                           rf"init=({NUMBER}) overall=({NUMBER})", line):  # fmt: skip
            r.memory_init_mb, r.memory_overall_mb = _num(m.group(1)), _num(m.group(2))
        elif m := re.match(rf"^Overall peak memory footprint \(MB\) via periodic monitoring: ({NUMBER})", line):
            r.peak_memory_mb = _num(m.group(1))
        elif m := re.match(r"^- (\w+)\s*:\s*(.+)$", line):
            r.memory_status[m.group(1)] = m.group(2).strip()
        elif line.startswith("Unconsumed cmdline flags:"):
            r.unconsumed_flags = line.split(":", 1)[1].split()
        elif raw.strip().startswith(("ERROR:", "FATAL:")) or line.startswith(
            ("Benchmarking failed", "Failed to allocate tensors", "Disallowed CPU fallback")
        ):
            r.errors.append(line)
    if len(stats_lines) >= 2:
        r.warmup, r.runs = stats_lines[0], stats_lines[1]
    elif stats_lines:
        r.runs = stats_lines[0]
    _judge_fallback(r, (requested or "cpu").lower())
    if r.unconsumed_flags:
        r.flags.append("unconsumed-flags")
    return r


def _judge_fallback(r: BenchmarkModelResult, requested: str) -> None:
    d = r.delegation
    if requested == "cpu":
        r.ran_on = "xnnpack" if d.name and d.name.upper() == "XNNPACK" and d.full else "cpu"
        return
    partly = d.full is False and d.executed is not False
    cpu_ops = d.cpu_ops is not None and d.cpu_ops > 0
    multi = d.partitions is not None and d.partitions > 1
    if d.name is None and d.partitions is None and d.gpu_ops is None:
        r.ran_on, r.flags = "cpu", [*r.flags, "cpu-fallback"]  # asked for, never applied
    elif d.executed is False or (d.gpu_ops == 0 and cpu_ops):
        r.ran_on, r.flags = "cpu", [*r.flags, "cpu-fallback"]
    elif partly or cpu_ops or multi:
        r.ran_on, r.flags = f"{requested}+cpu", [*r.flags, "partial-fallback"]
    else:
        r.ran_on = requested


@dataclass
class PerfTestResult:
    """`onnxruntime_perf_test` output; latencies in milliseconds (the tool prints seconds)."""

    session_creation_s: float | None = None
    first_inference_ms: float | None = None
    total_inference_s: float | None = None
    requests: int | None = None
    avg_ms: float | None = None
    run_time_s: float | None = None
    per_second: float | None = None
    cpu_usage_pct: float | None = None
    peak_working_set_bytes: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # "min", "max", "p50", ...
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.avg_ms is not None and not self.errors and not math.isnan(self.avg_ms)


def parse_perf_test(text: str) -> PerfTestResult:
    r = PerfTestResult()
    # Both generations: "Avg CPU usage: 97 %" and, from older releases (and PerformanceResult::
    # DumpToFile without a result file), "Avg CPU usage:97", "Peak working set size:98765432",
    # "Runs:100", "Total iterations:100", with no space after the colon and no unit.
    patterns = [
        (rf"^Session creation time cost:\s*({NUMBER}) ?s", "session_creation_s", float),
        (rf"^First inference time cost:\s*({NUMBER}) ?ms", "first_inference_ms", float),
        (rf"^Total inference time cost:\s*({NUMBER}) ?s", "total_inference_s", float),
        (rf"^Total time cost:\s*({NUMBER})", "total_inference_s", float),
        (r"^(?:Total inference requests|Total iterations|Runs):\s*(\d+)", "requests", int),
        (rf"^Average (?:inference )?time cost:\s*({NUMBER}) ?ms", "avg_ms", float),
        (rf"^Total inference run time:\s*({NUMBER}) ?s", "run_time_s", float),
        (rf"^Number of inferences per second:\s*({NUMBER})", "per_second", float),
        (rf"^Avg CPU usage:\s*({NUMBER})(?: ?%)?\s*$", "cpu_usage_pct", float),
        (r"^Peak working set size:\s*(\d+)(?: ?bytes)?\s*$", "peak_working_set_bytes", int),
    ]
    for raw in text.splitlines():
        line = _strip(raw)
        for pattern, attr, kind in patterns:
            if m := re.match(pattern, line):
                setattr(r, attr, kind(float(m.group(1))) if kind is int else _num(m.group(1)))
                break
        else:
            if m := re.match(rf"^(Min|Max|P\d+) Latency(?::\s*| is\s+)({NUMBER}) ?s(?:ec)?", line):
                r.latency_ms[m.group(1).lower()] = _num(m.group(2)) * 1e3
            elif raw.strip().startswith(("ERROR", "FATAL")) or "Error" in line.split(":", 1)[0]:
                r.errors.append(line)
    return r


# ExecuTorch's ET_LOG lines: "I 00:00:00.012345 executorch:executor_runner.cpp:204] message"
_ET_LOG = re.compile(r"^([DIEF]) \d+:\d+:\d+\.\d+ executorch:[\w./-]+:\d+\] (.*)$")


@dataclass
class ExecutorRunnerResult:
    """ExecuTorch `executor_runner` output. It times each execution ("Iteration 3 of 10: 51.2 ms",
    recent releases) and all of them together ("Model executed successfully 10 time(s) in 512.3
    ms."; older releases print only "Model executed successfully."); it has no warm-up of its
    own, so the runner asks for warm-up + timed executions and the first `warmup` are dropped."""

    load_ms: float | None = None
    iterations_ms: list[float] = field(default_factory=list)
    executions: int | None = None
    total_ms: float | None = None
    threads: int | None = None  # "Resetting threadpool with num threads = 4"
    outputs_written: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and (bool(self.iterations_ms) or self.total_ms is not None)

    def timed_ms(self, warmup: int) -> list[float]:
        """The executions after the warm-up (all of them when fewer were logged)."""
        return self.iterations_ms[warmup:] if len(self.iterations_ms) > warmup else list(self.iterations_ms)


def parse_executor_runner(text: str) -> ExecutorRunnerResult:
    r = ExecutorRunnerResult()
    for raw in text.splitlines():
        m = _ET_LOG.match(raw.strip())
        if m is None:
            continue
        level, message = m.groups()
        if level in ("E", "F"):
            r.errors.append(message)
        elif n := re.match(rf"Model loaded in ({NUMBER}) ms", message):
            r.load_ms = _num(n.group(1))
        elif n := re.match(rf"Iteration (\d+) of (\d+): ({NUMBER}) ms", message):
            r.iterations_ms.append(_num(n.group(3)))
        elif n := re.match(rf"Model executed successfully (\d+) time\(s\) in ({NUMBER}) ms", message):
            r.executions, r.total_ms = int(n.group(1)), _num(n.group(2))
        elif message.startswith("Model executed successfully"):
            r.executions = r.executions or 1
        elif n := re.match(r"Resetting threadpool with num threads = (-?\d+)", message):
            r.threads = int(n.group(1))
        elif n := re.match(r"Writing output to file: (\S+)", message):
            r.outputs_written.append(n.group(1))
    if r.executions is None and not r.errors:
        r.errors.append("no 'Model executed successfully' line: the program did not run to the end")
    return r
