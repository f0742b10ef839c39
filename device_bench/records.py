"""Job results: the one record shape for the host benchmark and the phones."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        return cls(**{**data, "stats": LatencyStats(**data["stats"])})
