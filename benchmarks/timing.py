"""Interleaved timing for the benchmarks: this machine is shared and drifts, so every setting is
timed in every round, in turn, rather than one after the other."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

import numpy as np


def time_interleaved(
    runners: Mapping[Hashable, Callable[[np.ndarray], object]],
    x: np.ndarray,
    rounds: int,
    runs: int,
    warmups: int = 2,
    settle_s: float = 0.05,
) -> dict[Hashable, list[float]]:
    """Each runner's samples in ms: `warmups` untimed calls each, then `rounds` rounds that time
    `runs` calls of every runner in turn, each runner's after a `settle_s` pause and one untimed
    call. ONNX Runtime's pool threads spin on for a while after a run and slow whatever runs
    next: a U-Net LiteRT run right after an ORT one took 85 ms, 59 ms after one untimed run; on
    a faster machine a U-Net 4x LiteRT file took 12.9 ms alone, 19.1 after an ORT run and one
    untimed run, 13.6 after a 50 ms pause too (10 ms: 18.0). Between runners of one runtime the
    pause changed nothing measurable."""
    for run in runners.values():
        for _ in range(warmups):
            run(x)
    samples: dict[Hashable, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(settle_s)
            run(x)
            for _ in range(runs):
                t = time.perf_counter()
                run(x)
                samples[name].append((time.perf_counter() - t) * 1e3)
    return samples


def time_jobs_interleaved(
    bundles: Mapping[Hashable, Path], runtime: str, threads: int, rounds: int, runs: int, warmup_s: float = 0.5
) -> dict[Hashable, list[float]]:
    """Each bundle's file timed as an ordinary host bench job (a fresh session, warmed up for
    `warmup_s`, then `runs` inferences: what the pipeline's bench stage and the search's checks
    measure), every bundle once per round in turn; each job's median, in ms."""
    from device_bench.records import BenchJob
    from device_bench.run import execute

    medians: dict[Hashable, list[float]] = {name: [] for name in bundles}
    for _ in range(rounds):
        for name, path in bundles.items():
            job = BenchJob(str(path), "host", runtime, threads=threads, runs=runs, warmup_s=warmup_s)
            medians[name].append(execute(job).stats.median_ms)
    return medians
