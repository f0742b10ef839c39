"""The results store: SQLite in WAL mode. Every job and its outcome is kept; a result and its
job's status change in one transaction, so a crash never leaves a half-stored result, and a
failed job keeps its reason.

It is also the lab's job queue: `enqueue` adds a job for a device, `lease` hands the oldest
queued job of the asking agent's devices to that agent alone until its lease expires (agents
renew it while they work); a job whose lease expired goes back to the queue, and after
`max_attempts` expired leases it fails with the reason, so one job that kills its agent cannot
loop for ever. A result or failure from an agent that no longer holds the lease is refused
(`LeaseLost`): the job is someone else's by then.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coronet.errors import CoronetError
from device_bench.records import BenchJob, BenchResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    reason TEXT,
    device TEXT,
    tag TEXT,
    agent TEXT,
    lease_expires REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL UNIQUE REFERENCES jobs(id),
    device TEXT NOT NULL,
    runtime TEXT NOT NULL,
    delegate TEXT NOT NULL,
    median_ms REAL NOT NULL,
    record TEXT NOT NULL
);
"""


# Columns added after the first stores were written: opening an older store adds them.
QUEUE_COLUMNS = {"device": "TEXT", "tag": "TEXT", "agent": "TEXT", "lease_expires": "REAL",
                 "attempts": "INTEGER NOT NULL DEFAULT 0"}  # fmt: skip
JOB_FIELDS = "id, created, spec, status, reason, device, tag, agent, lease_expires, attempts"


class StoreError(CoronetError):
    """A file that is not a results store."""


class LeaseLost(CoronetError):
    """The agent reports on a job it no longer holds (its lease expired and it was re-queued)."""

    def __init__(self, job_id: int, agent: str) -> None:
        super().__init__(f"job {job_id} is no longer leased to {agent}: its lease expired and it was re-queued")
        self.job_id, self.agent = job_id, agent


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _job(row: tuple) -> dict[str, Any]:
    keys = [k.strip() for k in JOB_FIELDS.split(",")]
    job = dict(zip(keys, row, strict=True))
    job["spec"] = json.loads(job["spec"])
    return job


class ResultStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        try:
            for table, needed in (("jobs", {"id", "created", "spec", "status"}), ("results", {"job_id", "record"})):
                present = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                if present and not needed <= present:  # someone else's database: not changed in any way
                    raise sqlite3.DatabaseError(f"its {table} table is not ours")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            with self.db:
                self.db.executescript(SCHEMA)
                present = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
                for column, kind in QUEUE_COLUMNS.items():
                    if column not in present:
                        self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as exc:  # not SQLite, or SQLite with other tables
            self.db.close()
            raise StoreError(f"{self.path} is not a results store ({exc}); pass a store device-bench wrote") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        """A write transaction that holds the write lock from its first read, so that a lease
        checked inside it cannot change before the write."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.rollback()
            raise
        self.db.commit()

    def add_job(self, job: BenchJob | dict[str, Any]) -> int:
        """Record a job that this process runs now (status running); a dict is validated first."""
        job = job if isinstance(job, BenchJob) else BenchJob.from_dict(job)
        with self.db:
            cur = self.db.execute(
                "INSERT INTO jobs (created, spec, status, device) VALUES (?, ?, 'running', ?)",
                (_now(), json.dumps(job.to_dict()), job.device),
            )
        return int(cur.lastrowid)

    def enqueue(self, job: BenchJob | dict[str, Any], device: str | None = None, tag: str = "") -> int:
        """Queue a job (for `device`, when given: it overrides the job's); an agent that owns the
        device will lease it. A dict is validated into a BenchJob first: a bad setting is refused
        here, with one line, and never reaches an agent."""
        data = job.to_dict() if isinstance(job, BenchJob) else dict(job)
        job = BenchJob.from_dict({**data, "device": device} if device is not None else data)
        with self.db:
            cur = self.db.execute(
                "INSERT INTO jobs (created, spec, status, device, tag) VALUES (?, ?, 'queued', ?, ?)",
                (_now(), json.dumps(job.to_dict()), job.device, tag),
            )
        return int(cur.lastrowid)

    def lease(
        self, agent: str, devices: list[str], lease_s: float, max_attempts: int = 3, now: float | None = None
    ) -> dict[str, Any] | None:
        """The oldest queued job for one of `devices`, now leased to `agent`; None when there is none."""
        now = time.time() if now is None else now
        with self._immediate():  # one writer: two agents never lease the same job
            self._expire(now, max_attempts)
            marks = ",".join("?" * len(devices))
            row = self.db.execute(
                f"SELECT id FROM jobs WHERE status = 'queued' AND device IN ({marks}) ORDER BY id LIMIT 1", devices
            ).fetchone()
            if row is not None:
                self.db.execute(
                    "UPDATE jobs SET status = 'running', agent = ?, lease_expires = ?, attempts = attempts + 1 "
                    "WHERE id = ?",
                    (agent, now + lease_s, row[0]),
                )
        return self.job(row[0]) if row is not None else None

    def _expire(self, now: float, max_attempts: int) -> None:
        expired = "status = 'running' AND lease_expires IS NOT NULL AND lease_expires < ?"
        self.db.execute(
            f"UPDATE jobs SET status = 'failed', reason = 'its lease expired ' || attempts || ' times (last agent: ' "
            f"|| agent || '); the job may crash its agent' WHERE {expired} AND attempts >= ?",
            (now, max_attempts),
        )
        requeue = "UPDATE jobs SET status = 'queued', agent = NULL, lease_expires = NULL"
        self.db.execute(f"{requeue} WHERE {expired}", (now,))

    def renew(self, job_id: int, agent: str, lease_s: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._immediate():
            self._check_lease(job_id, agent)
            self.db.execute("UPDATE jobs SET lease_expires = ? WHERE id = ?", (now + lease_s, job_id))

    def release(self, job_id: int, agent: str) -> None:
        """Give a leased job back to the queue (an agent stopping), not counting the attempt."""
        with self._immediate():
            self._check_lease(job_id, agent)
            self.db.execute(
                "UPDATE jobs SET status = 'queued', agent = NULL, lease_expires = NULL, attempts = attempts - 1 "
                "WHERE id = ?",
                (job_id,),
            )

    def _check_lease(self, job_id: int, agent: str | None) -> None:
        """Inside a transaction: refuse an agent that does not hold the job's lease."""
        if agent is None:
            return
        row = self.db.execute("SELECT status, agent FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row[0] != "running" or row[1] != agent:
            raise LeaseLost(job_id, agent)

    def finish(self, job_id: int, result: BenchResult, agent: str | None = None) -> None:
        with self._immediate():  # one transaction: the result and the job's status together
            self._check_lease(job_id, agent)
            self.db.execute(
                "INSERT INTO results (job_id, device, runtime, delegate, median_ms, record) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, result.device, result.runtime, result.delegate, result.stats.median_ms,
                 json.dumps(result.to_dict())),
            )  # fmt: skip
            self.db.execute("UPDATE jobs SET status = 'done', lease_expires = NULL WHERE id = ?", (job_id,))

    def fail(self, job_id: int, reason: str, agent: str | None = None) -> None:
        with self._immediate():
            self._check_lease(job_id, agent)
            self.db.execute(
                "UPDATE jobs SET status = 'failed', reason = ?, lease_expires = NULL WHERE id = ?", (reason, job_id)
            )

    def job(self, job_id: int) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT {JOB_FIELDS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def jobs(self, status: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        where = [(c, v) for c, v in (("status", status), ("tag", tag)) if v is not None]
        query = f"SELECT {JOB_FIELDS} FROM jobs"
        if where:
            query += " WHERE " + " AND ".join(f"{c} = ?" for c, _ in where)
        rows = self.db.execute(query + " ORDER BY id", [v for _, v in where])
        return [_job(r) for r in rows]

    def results(self) -> list[BenchResult]:
        rows = self.db.execute("SELECT record FROM results ORDER BY id")
        return [BenchResult.from_dict(json.loads(r[0])) for r in rows]

    def result_of(self, job_id: int) -> BenchResult | None:
        row = self.db.execute("SELECT record FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return BenchResult.from_dict(json.loads(row[0])) if row is not None else None
