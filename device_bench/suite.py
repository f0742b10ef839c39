"""Benchmark several bundles on several devices and runtimes: the pipeline's bench stage.

Every job is stored (done, or failed with its reason) in the results store as it finishes, so
an interrupted or failing suite keeps what it measured. One device at a time, one connection
per device; the host device runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coronet.bundle import Bundle
from device_bench.records import BenchJob, BenchResult
from device_bench.run import execute
from device_bench.store import ResultStore


@dataclass(frozen=True)
class SuiteSettings:
    threads: int = 1
    runs: int = 20
    warmup_s: float = 1.0  # host
    warmup: int = 5  # phones
    cluster: str = "big"
    binaries: Path = Path("bench-binaries")
    profile: bool = False  # per-op times: the host's job records them; a phone gets one more job each


def _files(bundles: list[Bundle], runtimes: list[str]) -> list[tuple[Bundle, str, str]]:
    """(bundle, runtime, precision) of every file of the chosen runtimes, in bundle order."""
    return [(b, r, p) for b in bundles for r in runtimes for p in (b.precisions(r) if r in b.runtimes else ["fp32"])]


def _jobs(
    bundles: list[Bundle], runtimes: list[str], device: str, profile: bool
) -> list[tuple[Bundle, str, str, bool]]:
    """(bundle, runtime, precision, profile) of each job on `device`: with `profile`, the host
    profiles in its timed job (after the timing); a phone runs each file once more, profiled."""
    files = _files(bundles, runtimes)
    if not profile:
        return [(*f, False) for f in files]
    if device == "host":
        return [(*f, True) for f in files]
    return [(*f, False) for f in files] + [(*f, True) for f in files if f[1] != "executorch"]


def bench_bundles(
    bundles: list[Path],
    devices: list[str],
    runtimes: list[str],
    store_path: Path,
    settings: SuiteSettings = SuiteSettings(),
    progress: Callable[[str], None] | None = None,
) -> list[tuple[int, BenchResult]]:
    """Time every bundle × device × runtime file (each precision the bundle has); returns (job
    id, result) in order. A device that fails (unreachable, a crashing tool) stops the suite with
    its DeviceError after the job is stored as failed; the results before it stay in the store."""
    # absolute paths: the store outlives the working directory it was written from
    opened = [Bundle.open(Path(b).resolve()) for b in bundles]  # a clear error for an incomplete bundle, first
    done: list[tuple[int, BenchResult]] = []
    with ResultStore(store_path) as store:
        for device in devices:
            transport = None
            try:
                for bundle, runtime, precision, profile in _jobs(opened, runtimes, device, settings.profile):
                    name = bundle.manifest["model"].get("name", "") or bundle.path.name
                    job = BenchJob(str(bundle.path), device, runtime, threads=settings.threads, precision=precision,
                                   cluster=settings.cluster, warmup=settings.warmup, runs=settings.runs,
                                   warmup_s=settings.warmup_s, model=name, profile=profile)  # fmt: skip
                    job_id = store.add_job(job)
                    try:
                        if device != "host":
                            transport = transport or _connect(device)
                        result = execute(job, transport, settings.binaries)
                    except BaseException as exc:
                        store.fail(job_id, str(exc) or type(exc).__name__)
                        raise
                    store.finish(job_id, result)
                    done.append((job_id, result))
                    if progress is not None:
                        progress(f"{device} {job.file_key} {name}: "
                                 f"median {result.stats.median_ms:.2f} ms")  # fmt: skip
            finally:
                if transport is not None:
                    transport.close()
    return done


def _connect(device: str):
    from device_bench.adb import AdbTransport

    transport = AdbTransport(device)
    transport.connect()
    return transport
