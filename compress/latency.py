"""Latency models: a plan's latency on one device with one runtime, predicted from its widths.

A generator's graph is fixed by its architecture; only the group widths change. So the latency
of a plan is modelled per convolution, with the ops on its output (norm, activation, the next
pad, layout reorders: what shrinks with its channel group, as the report's per-layer page
counts them), in three terms that each grow with the widths:

    t(plan) = t0 + Σ_conv  a_c · MACs  +  b · C_in·H_in·W_in  +  o · C_out·H_out·W_out

`a_c` prices the arithmetic per class `c` of conv (kernel, stride, transposed; true MACs: a
transposed conv at its real cost), `b` what scales with the input read (pads, im2col, layout
reorders before it), `o` what scales with the output written (norm, activation, bias, reorders
after it); `t0` is what no width changes (per-op dispatch, the fixed RGB ends). The element
terms are shared by all convs: one conv's output is the next one's input, so per-class element
terms would be nearly collinear and extrapolate badly (measured on exact synthetic data: 2 % off
on unseen plans with them, exact without). Channel counts
are taken rounded up to the device's `granularity` (the SIMD width its kernels pad to, chosen
in the fit), so widths between two multiples cost the same and the search rounds to them.

The coefficients are fitted, non-negative (so a prediction grows with every width), to the
measured medians of random plans timed through device_bench's ordinary job path (`calibrate`),
minimising the relative error. The file records what it was measured with: the device and its
profile, runtime, delegate, threads, precision, tool versions and the date; `check` refuses a
model used for anything else with one line.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ConfigError
from compress.macs import PlanCost
from compress.plan import ChannelPlan

FORMAT = "coronet-latency-model"
VERSION = 1
GRANULARITIES = (1, 4, 8, 16)


class LatencyModelError(ConfigError):
    """A latency model file that is unreadable, or made for another device, runtime or tool."""


@dataclass(frozen=True)
class LatencyKey:
    """What a latency model was measured on; it predicts for exactly this."""

    device: str
    runtime: str
    delegate: str
    threads: int
    precision: str = "fp32"

    def describe(self) -> str:
        return f"{self.device} {self.runtime}/{self.delegate} x{self.threads} {self.precision}"


def conv_class(kernel: int, stride: int, transposed: bool) -> str:
    return f"{'t' if transposed else 'k'}{kernel}s{stride}"


def _padded(channels: np.ndarray, granularity: int) -> np.ndarray:
    return np.ceil(channels / granularity) * granularity


def features(cost: PlanCost, widths: Mapping[str, int], granularity: int) -> dict[str, float]:
    """The model's terms of one plan, summed per conv class: {"k3s1:macs": ..., ...}."""
    out: dict[str, float] = {}
    for conv in cost.convs:
        spec = conv.spec
        c_in = float(_padded(np.array(sum(widths[g] for g in spec.in_groups)), granularity))
        c_out = float(_padded(np.array(widths[spec.out_group]), granularity))
        k2 = spec.kernel * spec.kernel
        macs = (conv.in_spatial if spec.transposed else conv.out_spatial) * c_in * c_out * k2
        cls = conv_class(spec.kernel, spec.stride, spec.transposed)
        for name, value in ((f"{cls}:macs", macs), ("in", c_in * conv.in_spatial), ("out", c_out * conv.out_spatial)):
            out[name] = out.get(name, 0.0) + value
    return out


@dataclass
class LatencyModel:
    key: LatencyKey
    plan: ChannelPlan  # the dense plan: the architecture and sizes it predicts for
    input_shape: tuple[int, ...]
    granularity: int
    intercept_ms: float
    coefficients: dict[str, float]  # "k3s1:macs", "in", "out" -> ms per unit
    tools: dict[str, Any] = field(default_factory=dict)  # tool versions measured with
    device_profile: dict[str, Any] = field(default_factory=dict)  # chip, CPU, phone model
    measured: str = ""  # ISO date of the calibration
    calibration: dict[str, Any] = field(default_factory=dict)  # points, fit errors, held-out errors

    def __post_init__(self) -> None:
        self._cost: PlanCost | None = None

    @property
    def cost(self) -> PlanCost:
        if self._cost is None:
            self._cost = PlanCost(self.plan, self.input_shape)
        return self._cost

    def predict(self, widths: Mapping[str, int]) -> float:
        """Predicted median latency in ms of the plan with these group widths."""
        f = features(self.cost, {**self.plan.widths, **widths}, self.granularity)
        return self.intercept_ms + sum(self.coefficients.get(k, 0.0) * v for k, v in f.items())

    @property
    def dense_ms(self) -> float:
        return self.predict(self.plan.widths)

    def ratio(self, widths: Mapping[str, int]) -> float:
        """Predicted latency as a fraction of the dense plan's (what the search's stop compares)."""
        return self.predict(widths) / self.dense_ms

    def channel_ms(self, widths: Mapping[str, int]) -> dict[str, float]:
        """Per prunable group, the predicted ms one channel of it costs at these widths (the
        latency removed by dropping a channel: its share in every conv that reads or writes it)."""
        widths = {**self.plan.widths, **widths}
        costs = dict.fromkeys(self.plan.prunable, 0.0)
        for conv in self.cost.convs:
            spec = conv.spec
            c_in = sum(widths[g] for g in spec.in_groups)
            c_out = widths[spec.out_group]
            k2 = spec.kernel * spec.kernel
            spatial = conv.in_spatial if spec.transposed else conv.out_spatial
            cls = conv_class(spec.kernel, spec.stride, spec.transposed)
            a, b, o = (self.coefficients.get(name, 0.0) for name in (f"{cls}:macs", "in", "out"))
            if spec.out_group in costs:
                costs[spec.out_group] += a * spatial * c_in * k2 + o * conv.out_spatial
            for g in spec.in_groups:
                if g in costs:
                    costs[g] += a * spatial * c_out * k2 + b * conv.in_spatial
        return costs

    def check(self, key: LatencyKey, tools: Mapping[str, Any] | None = None, plan: ChannelPlan | None = None,
              input_shape: tuple[int, ...] | None = None) -> None:  # fmt: skip
        """Refuse (one line) to predict for another device, runtime, delegate, threads or
        precision, other tool versions (a stale model) or another architecture or input."""
        if key != self.key:
            raise LatencyModelError(f"the latency model was measured on {self.key.describe()}, not {key.describe()}: "
                                    "calibrate one there (device-bench calibrate)")  # fmt: skip
        for name, version in (tools or {}).items():
            if name in self.tools and self.tools[name] != version:
                raise LatencyModelError(f"the latency model was measured with {name} {self.tools[name]}, this is "
                                        f"{version}: calibrate it again (device-bench calibrate)")  # fmt: skip
        if plan is not None and (plan.arch != self.plan.arch or dict(plan.sizes) != dict(self.plan.sizes)):
            raise LatencyModelError(f"the latency model is for {self.plan.arch} {dict(self.plan.sizes)}, not "
                                    f"{plan.arch} {dict(plan.sizes)}: calibrate it with this model")  # fmt: skip
        if input_shape is not None and tuple(input_shape) != tuple(self.input_shape):
            raise LatencyModelError(f"the latency model is for inputs of shape {list(self.input_shape)}, not "
                                    f"{list(input_shape)}: calibrate it at that image size")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "key": asdict(self.key), "plan": self.plan.to_dict(),
            "input_shape": list(self.input_shape), "granularity": self.granularity,
            "intercept_ms": self.intercept_ms, "coefficients": self.coefficients, "tools": self.tools,
            "device_profile": self.device_profile, "measured": self.measured, "calibration": self.calibration,
        }  # fmt: skip

    def save(self, path: str | Path) -> Path:
        from coronet.files import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, lambda f: f.write((json.dumps(self.to_dict(), indent=2) + "\n").encode()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        """A latency model file; one line for anything that is not one."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LatencyModelError(f"{path} does not exist; write one with device-bench calibrate") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LatencyModelError(f"{path} is not a latency model ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LatencyModelError(f'{path} is not a latency model (no "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise LatencyModelError(f"{path} is a version {data.get('version')} latency model; this CoroNet reads "
                                    f"version {VERSION}: calibrate it again")  # fmt: skip
        try:
            coefficients = {str(k): float(v) for k, v in data["coefficients"].items()}
            if not all(math.isfinite(v) and v >= 0 for v in coefficients.values()):
                raise ValueError("coefficients must be finite and non-negative")
            model = cls(
                key=LatencyKey(**data["key"]),
                plan=ChannelPlan.from_dict(data["plan"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                granularity=int(data["granularity"]),
                intercept_ms=float(data["intercept_ms"]),
                coefficients=coefficients,
                tools=dict(data.get("tools") or {}),
                device_profile=dict(data.get("device_profile") or {}),
                measured=str(data.get("measured", "")),
                calibration=dict(data.get("calibration") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LatencyModelError(f"{path} is a damaged latency model ({exc}); calibrate it again") from None
        if model.granularity not in GRANULARITIES:
            raise LatencyModelError(f"{path}: granularity must be one of {GRANULARITIES}")
        return model


def fit(cost: PlanCost, samples: list[tuple[Mapping[str, int], float]]) -> tuple[int, float, dict[str, float], float]:
    """(granularity, intercept ms, coefficients, leave-one-out median relative error) fitted to
    measured (widths, median ms) samples: non-negative least squares on the relative error, for
    each granularity; the one that predicts left-out plans best wins."""
    from scipy.optimize import nnls

    if len(samples) < 4:
        raise LatencyModelError("a latency model needs at least 4 timed plans")
    y = np.array([ms for _, ms in samples])
    best: tuple[float, int, np.ndarray, list[str]] | None = None
    for granularity in GRANULARITIES:
        rows = [features(cost, {**cost.full_plan.widths, **w}, granularity) for w, _ in samples]
        names = sorted({k for r in rows for k in r})
        x = np.array([[1.0] + [r.get(k, 0.0) for k in names] for r in rows])
        scale = x.max(axis=0)
        scale[scale == 0] = 1.0
        xs = x / scale / y[:, None]  # relative error, columns of order one
        errors = []
        for i in range(len(y)):  # leave one out: how it predicts a plan it was not fitted on
            keep = np.arange(len(y)) != i
            theta, _ = nnls(xs[keep], np.ones(keep.sum()))
            errors.append(abs(xs[i] @ theta - 1.0))
        score = float(np.median(errors))
        if best is None or score < best[0] - 1e-4:
            theta, _ = nnls(xs, np.ones(len(y)))
            best = (score, granularity, theta / scale, names)
    score, granularity, theta, names = best
    return granularity, float(theta[0]), {k: float(v) for k, v in zip(names, theta[1:], strict=True)}, score


def random_plans(plan: ChannelPlan, count: int, seed: int, low: float = 0.12) -> list[dict[str, int]]:
    """`count` random width settings of the plan's prunable groups: an overall scale drawn
    log-uniformly in [low, 1], and each group's own factor around it (log-normal, σ 0.6: about
    ×/÷ 1.8), so that the plans span from the dense latency to well under a tenth of it and
    the groups vary apart. (Groups that only ever shrink together cannot be told apart by the
    fit: with ±30 % jitter the ONNX Runtime model priced the stride-2 convs at zero and missed
    searched plans by 30 %.)"""
    rng = random.Random(seed)
    plans = []
    for _ in range(count):
        scale = math.exp(rng.uniform(math.log(low), 0.0))
        plans.append({g: max(1, min(plan[g], round(plan[g] * scale * math.exp(rng.gauss(0.0, 0.6)))))
                      for g in plan.prunable})  # fmt: skip
    return plans


class LatencyBudget:
    """What the search stops on and prices channels by when its target is a latency: the
    predicted latency as a fraction of the dense plan's, and each group's predicted ms per
    channel relative to the average channel's (the weights of a latency-weighted L1)."""

    def __init__(self, model: LatencyModel, target_ms: float) -> None:
        self.model, self.target_ms = model, target_ms
        self.target = target_ms / model.dense_ms

    def ratio(self, widths: Mapping[str, int]) -> float:
        return self.model.ratio(widths)

    def predict(self, widths: Mapping[str, int]) -> float:
        return self.model.predict(widths)

    def prices(self, widths: Mapping[str, int]) -> dict[str, float]:
        costs = self.model.channel_ms(widths)
        kept = {g: max(int(widths[g]), 1) for g in costs}
        mean = sum(costs[g] * kept[g] for g in costs) / max(sum(kept.values()), 1)
        if mean <= 0:
            return dict.fromkeys(costs, 1.0)
        return {g: max(c / mean, 1e-3) for g, c in costs.items()}  # a channel that costs nothing still shrinks


@dataclass
class CalibrationPoint:
    widths: dict[str, int]
    measured_ms: float
    predicted_ms: float = 0.0


def calibrate(
    plan: ChannelPlan,
    input_shape: tuple[int, ...],
    key: LatencyKey,
    time_plan: Callable[[ChannelPlan], tuple[float, dict[str, Any], dict[str, Any]]],
    plans: int = 24,
    held_out: int = 8,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyModel:
    """Time the dense plan and `plans` random ones with `time_plan` (a plan -> (median ms, tool
    versions, device profile): an export and a device_bench job), fit, and report the fit's
    error on `held_out` further random plans it was not fitted on."""
    settings = [dict(plan.widths), *random_plans(plan, plans + held_out, seed)]
    points, tools, profile = [], {}, {}
    for i, widths in enumerate(settings):
        ms, tools, profile = time_plan(plan.with_widths({g: widths[g] for g in plan.prunable}))
        points.append(CalibrationPoint(widths, ms))
        if progress is not None:
            progress(i + 1, len(settings))
    fitted, test = points[: plans + 1], points[plans + 1 :]
    cost = PlanCost(plan, input_shape)
    granularity, intercept, coefficients, loo = fit(cost, [(p.widths, p.measured_ms) for p in fitted])
    model = LatencyModel(key, plan, tuple(input_shape), granularity, intercept, coefficients, dict(tools),
                         dict(profile), datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip
    model._cost = cost
    for p in points:
        p.predicted_ms = model.predict(p.widths)

    def errors(ps: list[CalibrationPoint]) -> dict[str, float]:
        e = [abs(p.predicted_ms / p.measured_ms - 1) for p in ps]
        return {"median": float(np.median(e)), "max": float(np.max(e))} if e else {}

    model.calibration = {
        "fitted_plans": len(fitted), "held_out_plans": len(test), "leave_one_out_median": loo,
        "fit_error": errors(fitted), "held_out_error": errors(test),
        "points": [asdict(p) | {"held_out": i > plans} for i, p in enumerate(points)],
    }  # fmt: skip
    return model
