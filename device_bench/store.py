"""The results store: SQLite in WAL mode. Every job and its outcome is kept; a result and its
job's status change in one transaction, so a crash never leaves a half-stored result, and a
failed job keeps its reason."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device_bench.records import BenchResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    reason TEXT
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        with self.db:
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_job(self, spec: Any) -> int:
        data = asdict(spec) if hasattr(spec, "__dataclass_fields__") else dict(spec)
        with self.db:
            cur = self.db.execute(
                "INSERT INTO jobs (created, spec, status) VALUES (?, ?, 'running')",
                (_now(), json.dumps(data, default=str)),
            )
        return int(cur.lastrowid)

    def finish(self, job_id: int, result: BenchResult) -> None:
        with self.db:  # one transaction: the result and the job's status together
            self.db.execute(
                "INSERT INTO results (job_id, device, runtime, delegate, median_ms, record) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, result.device, result.runtime, result.delegate, result.stats.median_ms,
                 json.dumps(result.to_dict())),
            )  # fmt: skip
            self.db.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (job_id,))

    def fail(self, job_id: int, reason: str) -> None:
        with self.db:
            self.db.execute("UPDATE jobs SET status = 'failed', reason = ? WHERE id = ?", (reason, job_id))

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT id, created, spec, status, reason FROM jobs"
        rows = self.db.execute(
            query + (" WHERE status = ?" if status else "") + " ORDER BY id", (status,) if status else ()
        )
        return [{"id": r[0], "created": r[1], "spec": json.loads(r[2]), "status": r[3], "reason": r[4]} for r in rows]

    def results(self) -> list[BenchResult]:
        rows = self.db.execute("SELECT record FROM results ORDER BY id")
        return [BenchResult.from_dict(json.loads(r[0])) for r in rows]
