"""Qualcomm AI Hub profiles as lab results. A team with AI Hub access downloads a profile job's
results (`ProfileJob.download_profile()`, saved as JSON) and stores them beside the lab's own:
`execution_summary.all_inference_times` (µs) become the latency samples, `execution_detail`
(per layer: `name`, `type`, `compute_unit`, `execution_time` in µs) the per-op rows, and the
device is named after the profiled phone and its chipset (AI Hub has no MediaTek phones)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coronet.bundle import Bundle, tool_versions
from coronet.errors import ConfigError
from device_bench.op_profile import OpTime
from device_bench.records import BenchResult, LatencyStats

# AI Hub's device names (hub.get_devices()) -> the chipset; others need --chipset
CHIPSETS = {
    "Samsung Galaxy S22 (Family)": "SM8450",
    "Samsung Galaxy S22 Ultra 5G": "SM8450",
    "Samsung Galaxy S22 5G": "SM8450",
    "Samsung Galaxy S23 (Family)": "SM8550",
    "Samsung Galaxy S24 (Family)": "SM8650",
    "Snapdragon 8 Gen 1 QRD": "SM8450",
    "Snapdragon 8 Gen 2 QRD": "SM8550",
    "Snapdragon 8 Gen 3 QRD": "SM8650",
}


class ProfileError(ConfigError):
    """An AI Hub profile file that is not one."""


@dataclass(frozen=True)
class AiHubProfile:
    estimated_us: float
    times_us: list[float]  # every timed inference
    peak_memory_bytes: int | None
    load_us: float | None  # warm load, else first load
    ops: list[OpTime] = field(default_factory=list)

    @property
    def compute_units(self) -> dict[str, int]:
        return dict(Counter(op.compute_unit for op in self.ops))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ProfileError(f"AI Hub profile: {where} must be a non-negative number, got {value!r}")
    return float(value)


def read_profile(path: str | Path) -> AiHubProfile:
    """A downloaded profile (the dict `download_profile()` returns, as JSON); one line on a bad file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path} does not exist; save ProfileJob.download_profile() as JSON there") from None
    except OSError as exc:
        raise ProfileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path} is not JSON ({exc}); save ProfileJob.download_profile() with json.dump") from None
    summary = data.get("execution_summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict) or "estimated_inference_time" not in summary:
        raise ProfileError(f"{path} has no execution_summary.estimated_inference_time: not an AI Hub profile")
    estimated = _number(summary["estimated_inference_time"], "execution_summary.estimated_inference_time")
    times = summary.get("all_inference_times") or [estimated]
    if not isinstance(times, list):
        raise ProfileError("AI Hub profile: execution_summary.all_inference_times must be a list")
    times = [_number(t, "execution_summary.all_inference_times[]") for t in times]
    peak = summary.get("estimated_inference_peak_memory")
    load = summary.get("warm_load_time", summary.get("first_load_time"))
    ops = []
    for i, row in enumerate(data.get("execution_detail") or []):
        if not isinstance(row, dict):
            raise ProfileError(f"AI Hub profile: execution_detail[{i}] is not an object")
        time_us = _number(row.get("execution_time", 0), f"execution_detail[{i}].execution_time")
        ops.append(OpTime(str(row.get("name", "")), str(row.get("type", "")), time_us / 1e3,
                          str(row.get("compute_unit", "?"))))  # fmt: skip
    return AiHubProfile(estimated, times, int(_number(peak, "peak memory")) if peak is not None else None,
                        _number(load, "load time") if load is not None else None, ops)  # fmt: skip


def device_name(device: str, chipset: str | None) -> tuple[str, str]:
    """The store's name for an AI Hub device ("aihub:SM8450:Samsung_Galaxy_S22_Family") and its chipset."""
    chipset = chipset or CHIPSETS.get(device)
    if not chipset:
        raise ProfileError(f"which chipset is {device!r}? pass --chipset (e.g. SM8450)")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", chipset):
        raise ProfileError(f"--chipset must be a chip name like SM8450, got {chipset!r}")
    phone = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_")[:120] or "device"
    return f"aihub:{chipset}:{phone}", chipset


def to_result(profile: AiHubProfile, bundle: Bundle, key: str, device: str, chipset: str, phone: str) -> BenchResult:
    """The profile as the lab's result record for the bundle's file `key` (what AI Hub compiled)."""
    from coronet.bundle import key_parts

    runtime, precision = key_parts(key)
    units = profile.compute_units
    ran_on = "+".join(u.lower() for u, _ in sorted(units.items(), key=lambda kv: -kv[1])) or "aihub"
    ops = [op.to_dict() for op in profile.ops]
    state = {"source": "Qualcomm AI Hub", "soc": chipset, "model": phone, "compute_units": units,
             "estimated_inference_ms": profile.estimated_us / 1e3, "peak_memory_bytes": profile.peak_memory_bytes,
             "op_profile": ops}  # fmt: skip
    return BenchResult(
        device=device,
        runtime=runtime,
        delegate=ran_on,
        threads=1,  # AI Hub does not say; the NPU has no thread count
        bundle=str(bundle.path),
        model_sha256=bundle.manifest["files"][key]["sha256"],
        samples_ms=[t / 1e3 for t in profile.times_us],
        stats=LatencyStats.from_samples([t / 1e3 for t in profile.times_us]),
        init_ms=(profile.load_us or 0.0) / 1e3,
        warmup_runs=0,
        device_state=state,
        tool_versions={"host": tool_versions(), "aihub": "download_profile"},
        flags=["aihub"],
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        precision=precision,
    )
