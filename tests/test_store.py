import json
import sqlite3

import pytest

from device_bench.records import BenchResult, LatencyStats
from device_bench.store import ResultStore


def _result(median=12.5):
    stats = LatencyStats(3, median, None, 14.0, 11.0, 12.6)
    return BenchResult("host", "tflite", "xnnpack", 2, "/b", "ab" * 32, [11.0, 12.5, 14.0], stats, 3.0, 2)


def test_results_round_trip_and_failures_keep_their_reason(tmp_path):
    with ResultStore(tmp_path / "store.db") as store:
        ok = store.add_job({"bundle": "/b", "device": "host"})
        store.finish(ok, _result())
        bad = store.add_job({"bundle": "/c", "device": "127.0.0.1:5555"})
        store.fail(bad, "127.0.0.1:5555: push failed: timeout")
        assert [j["status"] for j in store.jobs()] == ["done", "failed"]
        assert store.jobs("failed")[0]["reason"].endswith("push failed: timeout")
        assert store.results() == [_result()]
    mode = sqlite3.connect(tmp_path / "store.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_failed_insert_leaves_no_partial_result(tmp_path):
    with ResultStore(tmp_path / "store.db") as store:
        job = store.add_job({"bundle": "/b"})
        store.finish(job, _result())
        with pytest.raises(sqlite3.IntegrityError):
            store.finish(job, _result(99.0))  # a second result for one job: rolled back as a whole
        assert len(store.results()) == 1 and store.results()[0].stats.median_ms == 12.5
        assert json.loads(json.dumps(store.jobs()))[0]["status"] == "done"
