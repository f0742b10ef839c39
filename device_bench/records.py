"""The lab's two records: a bench job (every setting of one benchmark, from the queue to the
report) and its result. Both are validated where they are built, so a job or a result that came
over the network with a string for a number, an absurd warm-up or a library path for a delegate
is refused with one line instead of being stored, run or plotted."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from coronet.bundle import PRECISIONS, file_key
from coronet.errors import ConfigError

RUNTIMES = ("tflite", "onnx", "executorch")
# What each runtime's tool may be asked to use; "external:NAME" delegates (TFLite) are looked up by
# NAME in the agent host's own allowlist, never given as a path by whoever queued the job.
DELEGATES = {"tflite": ("cpu", "xnnpack", "gpu", "nnapi"), "onnx": ("cpu", "nnapi", "qnn"), "executorch": ("xnnpack",)}
EXTERNAL = re.compile(r"^external:([A-Za-z0-9_.-]{1,64})$")
CLUSTERS = ("little", "big", "prime")
DEVICE_NAME = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,200}$")


RESULT = "bench result"


class JobError(ConfigError):
    """A bench job (or its result) with a setting outside what the lab runs."""


def default_delegate(runtime: str) -> str:
    return "cpu" if runtime == "onnx" else "xnnpack"


def _int(name: str, value: Any, low: int, high: int, what: str = "bench job") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobError(f"{what}: {name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _number(name: str, value: Any, low: float, high: float, what: str = "bench job") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JobError(f"{what}: {name} must be a number in [{low:g}, {high:g}], got {value!r}")
    if not low <= value <= high:
        raise JobError(f"{what}: {name} must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BenchJob:
    """One benchmark: which file, where, and how. `bundle` is a bundle folder (or, in the lab
    service's queue, a bundle id). The host uses threads, runs and warmup_s; phones use threads,
    cluster, warmup, runs and the thermal settings."""

    bundle: str
    device: str  # "host", HOST:PORT (adb over TCP), SERIAL or usb:SERIAL
    runtime: str = "tflite"
    delegate: str = ""  # "" is the runtime's default (xnnpack for tflite, cpu for onnx)
    threads: int = 1
    cluster: str = "big"
    warmup: int = 5  # untimed runs before timing (phones)
    runs: int = 20
    warmup_s: float = 1.0  # seconds of untimed runs before timing (host)
    max_temp_c: int = 45  # phones: wait for the SoC to cool below this
    max_wait_s: int = 300  # ... for at most this long
    poll_s: float = 2.0  # how often a phone is asked whether the job has finished
    unreachable_s: float = 30.0  # a phone unreachable this long while its job runs fails the job
    model: str = ""  # the bundle's model name, for listings
    precision: str = "fp32"  # which of the bundle's files of the runtime: fp32, fp16 or int8
    profile: bool = False  # also record per-op times (device_bench/op_profile.py)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.bundle, Path):
            set_(self, "bundle", str(self.bundle))
        for name in ("bundle", "device", "runtime", "delegate", "precision", "cluster", "model"):
            if not isinstance(getattr(self, name), str):
                raise JobError(f"bench job: {name} must be a string, got {getattr(self, name)!r}")
        if not self.bundle or len(self.bundle) > 4096 or "\0" in self.bundle:
            raise JobError("bench job: bundle must name a bundle folder or id")
        if self.device != "host" and not DEVICE_NAME.match(self.device):
            raise JobError(f"bench job: device {self.device!r} is not 'host', HOST:PORT or a serial")
        if self.runtime not in RUNTIMES:
            raise JobError(f"bench job: runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not self.delegate:
            set_(self, "delegate", default_delegate(self.runtime))
        external = EXTERNAL.match(self.delegate)
        if self.delegate not in DELEGATES[self.runtime] and not (external and self.runtime == "tflite"):
            allowed = ", ".join(DELEGATES[self.runtime]) + (", external:NAME" if self.runtime == "tflite" else "")
            raise JobError(f"bench job: {self.runtime} delegate {self.delegate!r} is not one of {allowed}")
        if self.cluster not in CLUSTERS:
            raise JobError(f"bench job: cluster must be little, big or prime, got {self.cluster!r}")
        if self.precision not in PRECISIONS:
            raise JobError(f"bench job: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.profile, bool):
            raise JobError(f"bench job: profile must be true or false, got {self.profile!r}")
        _int("threads", self.threads, 1, 64)
        _int("warmup", self.warmup, 0, 1000)
        _int("runs", self.runs, 1, 100_000)
        _int("max_temp_c", self.max_temp_c, 20, 110)
        _int("max_wait_s", self.max_wait_s, 0, 7200)
        set_(self, "warmup_s", _number("warmup_s", self.warmup_s, 0, 600))
        set_(self, "poll_s", _number("poll_s", self.poll_s, 0.05, 60))
        set_(self, "unreachable_s", _number("unreachable_s", self.unreachable_s, 1, 3600))

    @property
    def file_key(self) -> str:
        """The bundle file this job times: "tflite", "onnx-int8", ..."""
        return file_key(self.runtime, self.precision)

    @property
    def external_delegate(self) -> str | None:
        """NAME of an "external:NAME" delegate (None for the built-in ones)."""
        m = EXTERNAL.match(self.delegate)
        return m.group(1) if m else None

    @property
    def budget_s(self) -> float:
        """How long the job may take at most on a phone: the cool-down wait plus the runs."""
        return self.max_wait_s + 600.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> BenchJob:
        """A job from JSON (the store, the service, a plan); unknown keys are refused."""
        if not isinstance(data, dict):
            raise JobError(f"bench job: expected an object of settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise JobError(f"bench job: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("bundle", "device") if k not in data]
        if missing:
            raise JobError(f"bench job: {missing[0]} is required")
        return cls(**data)


@dataclass(frozen=True)
class LatencyStats:
    n: int
    median_ms: float
    p90_ms: float | None  # None where the tool does not report it (benchmark_model)
    p95_ms: float | None
    min_ms: float
    mean_ms: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        if not samples_ms:
            raise ValueError("no timed runs to summarise")
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            n=len(a),
            median_ms=float(np.median(a)),
            p90_ms=float(np.percentile(a, 90)),
            p95_ms=float(np.percentile(a, 95)),
            min_ms=float(a.min()),
            mean_ms=float(statistics.fmean(a)),
        )


@dataclass
class BenchResult:
    """One benchmark of one file on one device with one runtime/delegate/thread setting."""

    device: str  # "host" or an ADB serial / host:port
    runtime: str  # "onnx" | "tflite"
    delegate: str  # what actually ran: "cpu" (ORT), "xnnpack", "gpu", "nnapi", ...
    threads: int
    bundle: str
    model_sha256: str
    samples_ms: list[float]
    stats: LatencyStats
    init_ms: float
    warmup_runs: int
    device_state: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # e.g. "cpu-fallback", "throttled"
    created: str = ""
    precision: str = "fp32"  # the timed file's: fp32, fp16 or int8
    # the phone's output on the bundle's check input against the host's fp32 output
    # (device_bench/output_check.py); None where the tool hands no output back
    output_check: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> BenchResult:
        """A result from JSON (an agent's report, the store): every number a finite number,
        every name a string; anything else is refused with one line, never stored."""
        if not isinstance(data, dict) or not isinstance(data.get("stats"), dict):
            raise JobError("bench result: expected an object with stats")
        stat_fields = {f.name for f in fields(LatencyStats)}
        if set(data["stats"]) != stat_fields:
            raise JobError(f"bench result: stats must have exactly {', '.join(sorted(stat_fields))}")
        stats = data["stats"]
        _int("stats.n", stats["n"], 0, 10**9, RESULT)
        for name in ("median_ms", "min_ms", "mean_ms"):
            _number(f"stats.{name}", stats[name], 0, 1e9, RESULT)
        for name in ("p90_ms", "p95_ms"):
            if stats[name] is not None:
                _number(f"stats.{name}", stats[name], 0, 1e9, RESULT)
        own = {f.name for f in fields(cls)}
        if not set(data) <= own or not {"device", "runtime", "delegate", "threads", "bundle", "model_sha256",
                                         "samples_ms", "stats", "init_ms", "warmup_runs"} <= set(data):  # fmt: skip
            raise JobError(f"bench result: fields must be among {', '.join(sorted(own))}, the first ten required")
        for name in ("device", "runtime", "delegate", "bundle", "model_sha256", "created"):
            if not isinstance(data.get(name, ""), str):
                raise JobError(f"bench result: {name} must be a string, got {data[name]!r}")
        if data.get("precision", "fp32") not in PRECISIONS:
            raise JobError(f"bench result: precision must be one of {', '.join(PRECISIONS)}")
        _int("threads", data["threads"], 1, 1024, RESULT)
        _int("warmup_runs", data["warmup_runs"], 0, 10**6, RESULT)
        _number("init_ms", data["init_ms"], 0, 1e9, RESULT)
        if not isinstance(data["samples_ms"], list) or len(data["samples_ms"]) > 1_000_000:
            raise JobError("bench result: samples_ms must be a list of numbers")
        for sample in data["samples_ms"]:
            _number("samples_ms[]", sample, 0, 1e9, RESULT)
        for name, kind in (("device_state", dict), ("tool_versions", dict), ("flags", list)):
            if not isinstance(data.get(name, kind()), kind):
                raise JobError(f"bench result: {name} must be a JSON {kind.__name__}")
        if not all(isinstance(f, str) for f in data.get("flags", [])):
            raise JobError("bench result: flags must be strings")
        check = data.get("output_check")
        if check is not None:
            if not isinstance(check, dict) or not isinstance(check.get("ok"), bool):
                raise JobError("bench result: output_check must be an object with ok")
            for name in ("max_abs", "mean_abs", "channel_mean_abs", "psnr_db", "tolerance"):
                _number(f"output_check.{name}", check.get(name), 0, 1e9, RESULT)
            image = check.get("image_png")
            if image is not None and (not isinstance(image, str) or len(image) > 2_000_000):
                raise JobError("bench result: output_check.image_png must be a base64 PNG of at most 2 MB")
        return cls(**{**data, "stats": LatencyStats(**stats)})
