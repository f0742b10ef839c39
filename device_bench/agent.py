"""The lab agent: one per host, it owns the phones attached there (and the host itself), leases
queued jobs for them, runs each and reports the result or the failure.

The queue is the results store itself on a single machine (`StoreQueue`) or the lab service
over HTTP (`device_bench.service.ServiceClient`); both offer the same few calls. While a job
runs, a background thread renews its lease, so a long benchmark is not taken away; if the agent
dies, the lease expires and another agent gets the job. Ctrl-C gives the current job back to
the queue rather than failing it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coronet.bundle import Bundle
from coronet.errors import CoronetError
from device_bench.records import BenchJob, BenchResult, JobError
from device_bench.store import LeaseLost, ResultStore


class JobQueue(Protocol):
    def lease(self, agent: str, devices: list[str], lease_s: float) -> dict[str, Any] | None: ...
    def renew(self, job_id: int, agent: str, lease_s: float) -> None: ...
    def release(self, job_id: int, agent: str) -> None: ...
    def finish(self, job_id: int, agent: str, result: BenchResult) -> None: ...
    def fail(self, job_id: int, agent: str, reason: str) -> None: ...
    def bundle(self, ref: str) -> Path: ...


class StoreQueue:
    """The queue in a local results store; a job's bundle is a folder on this machine."""

    def __init__(self, store_path: str | Path) -> None:
        self.store_path = Path(store_path)

    def _store(self) -> ResultStore:
        return ResultStore(self.store_path)  # one connection per call: the renewer is another thread

    def lease(self, agent: str, devices: list[str], lease_s: float) -> dict[str, Any] | None:
        with self._store() as store:
            return store.lease(agent, devices, lease_s)

    def renew(self, job_id: int, agent: str, lease_s: float) -> None:
        with self._store() as store:
            store.renew(job_id, agent, lease_s)

    def release(self, job_id: int, agent: str) -> None:
        with self._store() as store:
            store.release(job_id, agent)

    def finish(self, job_id: int, agent: str, result: BenchResult) -> None:
        with self._store() as store:
            store.finish(job_id, result, agent=agent)

    def fail(self, job_id: int, agent: str, reason: str) -> None:
        with self._store() as store:
            store.fail(job_id, reason, agent=agent)

    def bundle(self, ref: str) -> Path:
        return Path(ref)


def default_agent_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Agent:
    queue: JobQueue
    devices: list[str]
    name: str = field(default_factory=default_agent_name)
    lease_s: float = 120.0
    poll_s: float = 5.0
    binaries: Path = Path("bench-binaries")
    log: Callable[[str], None] = print
    # "external:NAME" delegates this host allows: NAME -> the library's path on its phones
    external_delegates: dict[str, str] = field(default_factory=dict)
    _transports: dict[str, Any] = field(default_factory=dict, repr=False)

    def run(self, once: bool = False, stop: threading.Event | None = None) -> int:
        """Serve jobs until `stop` is set (or, with `once`, until none is queued for these
        devices); returns the number of jobs finished."""
        stop = stop or threading.Event()
        finished = 0
        try:
            while not stop.is_set():
                try:
                    job = self.queue.lease(self.name, self.devices, self.lease_s)
                except CoronetError as exc:
                    if once or not getattr(exc, "retryable", False):
                        raise
                    self.log(f"{exc}; trying again in {self.poll_s:g} s")  # the service restarting, say
                    stop.wait(self.poll_s)
                    continue
                if job is None:
                    if once:
                        break
                    stop.wait(self.poll_s)
                    continue
                finished += self._serve(job)
        finally:
            for transport in self._transports.values():
                transport.close()
            self._transports.clear()
        return finished

    def _serve(self, job: dict[str, Any]) -> int:
        job_id, spec = int(job["id"]), job["spec"]
        done = threading.Event()
        renewer = threading.Thread(target=self._keep_leased, args=(job_id, done), daemon=True)
        renewer.start()
        try:
            result = self._execute(spec)
        except KeyboardInterrupt:
            try:
                self.queue.release(job_id, self.name)
                self.log(f"job {job_id}: given back to the queue")
            except CoronetError as exc:  # its lease is gone already, or the service is
                self.log(f"job {job_id}: not given back ({exc}); its lease will expire")
            raise
        except Exception as exc:  # whatever broke this job is its reason; the agent goes on
            reason = str(exc) if isinstance(exc, CoronetError | OSError) else f"{type(exc).__name__}: {exc}"
            self._report(job_id, lambda: self.queue.fail(job_id, self.name, reason))
            self.log(f"job {job_id} failed: {reason}")
            return 0
        finally:
            done.set()
            renewer.join()
        if self._report(job_id, lambda: self.queue.finish(job_id, self.name, result)):
            self.log(f"job {job_id}: {result.device} {result.runtime}/{result.delegate} "
                     f"median {result.stats.median_ms:.2f} ms")  # fmt: skip
            return 1
        return 0

    def _report(self, job_id: int, send: Callable[[], None], tries: int = 5) -> bool:
        """Send a result or failure; a service that is briefly away gets a few more tries."""
        for attempt in range(1, tries + 1):
            try:
                send()
                return True
            except LeaseLost as exc:  # it ran too long unrenewed: another agent has it now
                self.log(f"job {job_id}: result dropped: {exc}")
                return False
            except CoronetError as exc:
                if not getattr(exc, "retryable", False) or attempt == tries:
                    raise
                self.log(f"job {job_id}: {exc}; trying again")
                time.sleep(min(self.poll_s, 2.0**attempt))
        return False

    def _keep_leased(self, job_id: int, done: threading.Event) -> None:
        while not done.wait(self.lease_s / 3):
            try:
                self.queue.renew(job_id, self.name, self.lease_s)
            except (CoronetError, OSError) as exc:  # LeaseLost included
                self.log(f"job {job_id}: lease not renewed: {exc}")

    def _execute(self, spec: dict[str, Any]) -> BenchResult:
        """The job as the queue gave it: validated into a BenchJob (a bad setting fails the job
        with the reason), its bundle fetched, run where it says."""
        from device_bench.run import execute

        job = BenchJob.from_dict(spec)
        bundle = Bundle.open(self.queue.bundle(job.bundle))
        job = dataclasses.replace(job, bundle=str(bundle.path))
        if job.device not in self.devices:
            raise JobError(f"bench job for {job.device}: this agent serves {', '.join(self.devices)} only")
        if job.device == "host":
            return execute(job)
        from device_bench.adb import AdbTransport

        transport = self._transports.get(job.device)
        if transport is None:
            transport = AdbTransport(job.device)
            transport.connect()
            self._transports[job.device] = transport
        try:
            return execute(job, transport, self.binaries, self.external_delegates)
        except BaseException:
            self._transports.pop(job.device).close()  # whatever broke, the next job starts on a new connection
            raise
