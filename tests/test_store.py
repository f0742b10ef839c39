import json
import multiprocessing
import sqlite3
import time

import pytest

from device_bench.records import BenchJob, BenchResult, LatencyStats
from device_bench.store import LeaseLost, ResultStore


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
        job = store.add_job({"bundle": "/b", "device": "host"})
        store.finish(job, _result())
        with pytest.raises(sqlite3.IntegrityError):
            store.finish(job, _result(99.0))  # a second result for one job: rolled back as a whole
        assert len(store.results()) == 1 and store.results()[0].stats.median_ms == 12.5
        assert json.loads(json.dumps(store.jobs()))[0]["status"] == "done"


# --- the job queue ---------------------------------------------------------------------------
def test_a_job_goes_to_an_agent_that_owns_its_device_and_to_one_agent_only(tmp_path):
    with ResultStore(tmp_path / "store.db") as store:
        phone = store.enqueue({"bundle": "b1"}, "10.0.0.5:5555", tag="nightly")
        host = store.enqueue({"bundle": "b1"}, "host")
        job = store.lease("agent-a", ["host"], lease_s=60, now=1000.0)
        assert job["id"] == host and job["agent"] == "agent-a" and job["attempts"] == 1
        assert BenchJob.from_dict(job["spec"]) == BenchJob("b1", "host")
        assert store.lease("agent-b", ["host"], lease_s=60, now=1001.0) is None  # held by a
        assert store.lease("agent-b", ["10.0.0.5:5555", "host"], 60, now=1001.0)["id"] == phone
        store.finish(host, _result(), agent="agent-a")
        assert store.job(host)["status"] == "done" and store.result_of(host) == _result()
        assert [j["id"] for j in store.jobs(tag="nightly")] == [phone]


def test_an_expired_lease_requeues_the_job_and_the_old_agent_is_refused(tmp_path):
    with ResultStore(tmp_path / "store.db") as store:
        job_id = store.enqueue({"bundle": "b"}, "host")
        store.lease("a", ["host"], lease_s=60, now=1000.0)
        store.renew(job_id, "a", lease_s=60, now=1050.0)  # now expires at 1110
        assert store.lease("b", ["host"], 60, now=1100.0) is None
        assert store.lease("b", ["host"], 60, now=1111.0)["attempts"] == 2
        with pytest.raises(LeaseLost, match="no longer leased to a"):
            store.finish(job_id, _result(), agent="a")
        with pytest.raises(LeaseLost):
            store.fail(job_id, "a's late failure", agent="a")
        assert store.result_of(job_id) is None and store.job(job_id)["agent"] == "b"
        store.finish(job_id, _result(), agent="b")
        assert store.job(job_id)["status"] == "done"


def test_a_job_that_keeps_losing_its_agent_fails_with_the_reason(tmp_path):
    with ResultStore(tmp_path / "store.db") as store:
        job_id = store.enqueue({"bundle": "b"}, "host")
        for attempt in range(3):
            assert store.lease(f"agent-{attempt}", ["host"], 10, max_attempts=3, now=1000.0 + 20 * attempt)
        assert store.lease("agent-3", ["host"], 10, max_attempts=3, now=1100.0) is None
        job = store.job(job_id)
        assert job["status"] == "failed"
        assert job["reason"] == "its lease expired 3 times (last agent: agent-2); the job may crash its agent"


def test_a_released_job_is_leased_again_without_counting_an_attempt(tmp_path):
    with ResultStore(tmp_path / "store.db") as store:
        job_id = store.enqueue({"bundle": "b"}, "host")
        store.lease("a", ["host"], 60, now=1000.0)
        store.release(job_id, "a")
        assert store.job(job_id)["status"] == "queued" and store.job(job_id)["attempts"] == 0
        assert store.lease("b", ["host"], 60, now=1001.0)["attempts"] == 1


def _lease_all(path, agent, out, start):
    with ResultStore(path) as store:
        start.wait(timeout=120)  # all agents start together, however slowly their processes spawned
        leased = []
        while (job := store.lease(agent, ["host"], lease_s=600)) is not None:
            leased.append(job["id"])
            time.sleep(0.005)  # "work" on it, so that the agents interleave
        out.put(leased)


def test_agents_in_separate_processes_never_lease_the_same_job(tmp_path):
    path = tmp_path / "store.db"
    with ResultStore(path) as store:
        ids = [store.enqueue({"bundle": f"b{n}"}, "host") for n in range(60)]
    ctx = multiprocessing.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(3)
    workers = [ctx.Process(target=_lease_all, args=(path, f"agent-{i}", out, start)) for i in range(3)]
    for w in workers:
        w.start()
    leased = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert sorted(i for ids_of_one in leased for i in ids_of_one) == ids  # every job once, none twice
    assert sum(1 for ids_of_one in leased if ids_of_one) >= 2  # they did compete


def test_a_store_written_before_the_queue_opens_and_queues(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, created TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL "
        "CHECK (status IN ('queued', 'running', 'done', 'failed')), reason TEXT);"
        "INSERT INTO jobs (created, spec, status) VALUES ('2026-11-01T00:00:00+00:00', '{\"bundle\": \"/b\"}', 'done');"
    )
    db.commit()
    db.close()
    with ResultStore(path) as store:
        assert store.jobs()[0]["spec"] == {"bundle": "/b"} and store.jobs()[0]["attempts"] == 0
        job_id = store.enqueue({"bundle": "/c"}, "host")
        assert store.lease("a", ["host"], 60)["id"] == job_id
