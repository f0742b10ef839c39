"""Latency trends over repeated runs (the nightly lab runs) and the regressions among them.

A series is one model file on one device with one runtime, delegate and thread count. Each
stored result is one run of its series, summarised by its median. The newest run is a
regression when it is slower than a one-sided prediction bound of the runs before it (Student's
t, from the mean and spread of the last `window` runs) *and* slower by at least `min_slowdown`:
night-to-night spread (thermal state, background load) is the noise that matters here, so the
run, not the single inference, is the unit of the test; and a statistically clear 1 % change is
not worth a morning's attention. A series with fewer than `min_history` earlier runs is not
judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

SERIES = ["model", "device", "runtime", "delegate", "threads"]
TREND_COLUMNS = [*SERIES, "runs", "latest_ms", "baseline_ms", "bound_ms", "change", "p_value", "status", "created"]


@dataclass(frozen=True)
class TrendRule:
    window: int = 10  # earlier runs the newest one is compared with
    min_history: int = 3
    confidence: float = 0.99  # of the one-sided prediction bound
    min_slowdown: float = 0.05  # relative; smaller slowdowns are never flagged

    def __post_init__(self) -> None:
        if self.min_history < 2:
            raise ValueError("min_history must be >= 2 (a spread needs two runs)")
        if self.window < self.min_history:
            raise ValueError("window must be >= min_history")
        if not 0.5 < self.confidence < 1:
            raise ValueError("confidence must be in (0.5, 1)")


def judge(history: list[float], latest: float, rule: TrendRule = TrendRule()) -> dict[str, float | str | None]:
    """Compare the newest median with the earlier ones (oldest first)."""
    from scipy import stats

    earlier = history[-rule.window :]
    n = len(earlier)
    if n < rule.min_history:
        return {"baseline_ms": None, "bound_ms": None, "change": None, "p_value": None,
                "status": f"history < {rule.min_history}"}  # fmt: skip
    mean = sum(earlier) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in earlier) / (n - 1))
    scale = sd * math.sqrt(1 + 1 / n)  # the spread of one new run around the earlier mean
    bound = mean + stats.t.ppf(rule.confidence, n - 1) * scale
    change = latest / mean - 1
    # identical earlier runs (no spread): any slower run is beyond them
    p_value = float(stats.t.sf((latest - mean) / scale, n - 1)) if scale > 0 else float(latest <= mean)
    if latest > bound and change >= rule.min_slowdown:
        status = "regression"
    elif p_value > rule.confidence and change <= -rule.min_slowdown:  # as clear, the other way
        status = "faster"
    else:
        status = "ok"
    return {"baseline_ms": mean, "bound_ms": bound, "change": change, "p_value": p_value, "status": status}


def trend_table(latency: pd.DataFrame, rule: TrendRule = TrendRule()) -> pd.DataFrame:
    """One row per series that has run more than once: its newest run judged against the earlier ones."""
    rows = []
    if latency.empty:
        return pd.DataFrame(columns=TREND_COLUMNS)
    ordered = latency.sort_values("created", kind="stable")  # store order breaks ties
    for key, runs in ordered.groupby(SERIES, sort=True):
        if len(runs) < 2:
            continue
        medians = runs["median_ms"].astype(float).tolist()
        verdict = judge(medians[:-1], medians[-1], rule)
        rows.append({**dict(zip(SERIES, key, strict=True)), "runs": len(runs), "latest_ms": medians[-1],
                     **verdict, "created": runs["created"].iloc[-1]})  # fmt: skip
    return pd.DataFrame(rows, columns=TREND_COLUMNS)
