"""Latency trends: the regression rule on hand-made histories, its false-alarm rate on noise,
and the grouping of stored results into series."""

import random

import pandas as pd
import pytest

from reports.trends import TrendRule, judge, trend_table


def test_a_clear_slowdown_is_a_regression_and_a_clear_speedup_is_faster():
    stable = [10.0, 10.2, 9.9, 10.1, 10.0]
    assert judge(stable, 12.0)["status"] == "regression"
    assert judge(stable, 10.3)["status"] == "ok"
    assert judge(stable, 8.0)["status"] == "faster"
    verdict = judge(stable, 12.0)
    assert verdict["baseline_ms"] == pytest.approx(10.04)
    assert 10.04 < verdict["bound_ms"] < 12.0 and verdict["p_value"] < 0.01
    assert verdict["change"] == pytest.approx(12.0 / 10.04 - 1)


def test_night_to_night_noise_absorbs_a_slower_run():
    noisy = [8.0, 12.0, 9.0, 13.0, 10.0]
    verdict = judge(noisy, 13.5)  # +29 % over the mean, but inside what these runs vary by
    assert verdict["status"] == "ok" and verdict["bound_ms"] > 13.5


def test_a_small_slowdown_is_not_flagged_even_when_significant():
    steady = [10.00, 10.01, 10.00, 10.01]
    verdict = judge(steady, 10.3)  # 3 %: far outside the spread, below min_slowdown
    assert verdict["p_value"] < 1e-4
    assert verdict["status"] == "ok"
    assert judge(steady, 10.3, TrendRule(min_slowdown=0.02))["status"] == "regression"


def test_identical_earlier_runs_and_short_histories():
    assert judge([5.0, 5.0, 5.0], 6.0)["status"] == "regression"
    assert judge([5.0, 5.0, 5.0], 5.0)["status"] == "ok"
    short = judge([5.0, 5.0], 50.0)
    assert short["status"] == "history < 3" and short["bound_ms"] is None


def test_false_alarm_rate_on_pure_noise_matches_the_confidence():
    rng = random.Random(0)
    rule = TrendRule(min_slowdown=0.0, confidence=0.99)
    trials = 3000
    alarms = 0
    for _ in range(trials):
        runs = [rng.gauss(100.0, 3.0) for _ in range(11)]  # the same speed every night
        alarms += judge(runs[:-1], runs[-1], rule)["status"] == "regression"
    # 1 % expected: 30 of 3000, binomial sd ~5.5
    assert 12 <= alarms <= 50, alarms


def test_only_the_last_window_of_runs_counts():
    old_and_slow = [20.0] * 5 + [10.0, 10.1, 9.9, 10.0]
    assert judge(old_and_slow, 12.0, TrendRule(window=4))["status"] == "regression"
    assert judge(old_and_slow, 12.0, TrendRule(window=9))["status"] == "ok"


def test_rule_validation():
    with pytest.raises(ValueError, match="min_history"):
        TrendRule(min_history=1)
    with pytest.raises(ValueError, match="window"):
        TrendRule(window=2, min_history=3)


def _row(model, runtime, median, created):
    return {"model": model, "device": "host", "runtime": runtime, "delegate": "cpu", "threads": 1,
            "median_ms": median, "created": created}  # fmt: skip


def test_trend_table_groups_series_and_orders_runs_by_time():
    rows = [_row("a", "onnx", m, f"2026-11-2{i}T01:00:00+00:00") for i, m in enumerate([10, 10.1, 9.9, 10])]
    rows.insert(0, _row("a", "onnx", 13.0, "2026-11-25T01:00:00+00:00"))  # stored first, ran last
    rows.append(_row("a", "tflite", 7.0, "2026-11-21T01:00:00+00:00"))  # one run: no trend
    rows += [_row("b", "onnx", 5.0, "2026-11-21T01:00:00+00:00"), _row("b", "onnx", 5.1, "2026-11-21T01:00:00+00:00")]
    table = trend_table(pd.DataFrame(rows))
    assert [(r.model, r.runtime, r.runs) for r in table.itertuples()] == [("a", "onnx", 5), ("b", "onnx", 2)]
    a = table.iloc[0]
    assert a["latest_ms"] == 13.0 and a["status"] == "regression" and a["created"].startswith("2026-11-25")
    b = table.iloc[1]
    assert b["latest_ms"] == 5.1 and b["status"] == "history < 3"  # same time: store order decides
    assert trend_table(pd.DataFrame(columns=list(rows[0]))).empty
