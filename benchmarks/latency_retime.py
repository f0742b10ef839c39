"""The searched plans of benchmarks/latency_target.py timed again, two ways, in one run: does
the number depend on how it is measured?

latency_target.py times its seven models (dense + 3 targets x 2 stops) in one process, all seven
sessions alive, interleaved (every round `--runs` inferences of each in turn). The search's checks
and the calibration time a plan as an ordinary bench job, as the pipeline's bench stage does: a
fresh session, warmed up, then `--runs` inferences, nothing else loaded. Here the same plans
(widths from the JSON, random weights: timing only) are timed both ways, interleaved by rounds:
in-process rounds and bench-job rounds alternate, `--rounds` of each.

    python benchmarks/latency_retime.py [--runtimes onnx,tflite] [--rounds 4]
Writes benchmarks/results/latency_retime.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
import export
from benchmarks.timing import time_interleaved, time_jobs_interleaved
from coronet.bundle import tool_versions
from device_bench.host import host_state

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtimes", default="onnx,tflite")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--source", default=str(RESULTS / "latency_target.json"))
    p.add_argument("--out", default=str(RESULTS / "latency_retime.json"))
    args = p.parse_args()
    source = json.loads(Path(args.source).read_text())
    full = compress.full_plan("resnet", ngf=64, n_blocks=9)
    record: dict = {"settings": vars(args), "host": host_state(), "tools": tool_versions(), "runtimes": {}}
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)
    for runtime in args.runtimes.split(","):
        rows = source["runtimes"][runtime]["targets"]
        plans = {"dense": (full.widths, None)}
        for name, row in rows.items():
            for stop in ("prediction", "measured"):
                plans[f"{name} {stop}"] = (row[f"{stop}_stop"]["widths"], row["target_ms"])
        with tempfile.TemporaryDirectory(prefix="coronet-retime-") as tmp:
            bundles = {}
            for i, (name, (widths, _)) in enumerate(plans.items()):
                torch.manual_seed(0)
                model = compress.build_generator("resnet", full.with_widths(widths)).eval()
                bundles[name] = export.export_bundle(model, Path(tmp) / f"m{i}", (runtime,), image_size=256,
                                                     sample_images=0)  # fmt: skip
            runners = {name: b.runner(runtime, threads=args.threads) for name, b in bundles.items()}
            in_process: dict[str, list[float]] = {name: [] for name in plans}
            jobs: dict[str, list[float]] = {name: [] for name in plans}
            for r in range(args.rounds):
                for name, samples in time_interleaved(runners, x, 1, args.runs, warmups=1 if r else 3).items():
                    in_process[name].append(statistics.median(samples))
                paths = {name: b.path for name, b in bundles.items()}
                for name, medians in time_jobs_interleaved(paths, runtime, args.threads, 1, args.runs).items():
                    jobs[name].extend(medians)
                print(f"{runtime}: round {r + 1}/{args.rounds}", flush=True)
            table = {}
            for name, (_, target) in plans.items():
                a, b = statistics.median(in_process[name]), statistics.median(jobs[name])
                table[name] = {"target_ms": target, "in_process_ms": a, "bench_job_ms": b, "in_process_over_job": a / b,
                               "in_process_rounds": in_process[name], "bench_job_rounds": jobs[name],
                               **({"in_process_over_target": a / target, "bench_job_over_target": b / target}
                                  if target else {})}  # fmt: skip
                print(
                    f"  {name:<16} in-process {a:7.1f} ms, bench job {b:7.1f} ms ({a / b:.2f}x)"
                    + (f"; over target {a / target:.2f} / {b / target:.2f}" if target else ""),
                    flush=True,
                )
            record["runtimes"][runtime] = table
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
