"""Which plan should a search's check be timed beside? A check (compress.latency.MeasuredStop)
times the plan the search stopped at as a bench job and scales it by a reference plan's latency
in calibration over its time now, so that a busier machine does not read as a slower plan. The
reference has been the dense plan; latency_target.py run 4 saw a small LiteRT plan slow down 30 %
under load where the dense plan slowed 18 %. Here: do small plans slow down alike, so that a
calibration plan of about the checked plan's latency corrects better than the dense one?

The searched plans of benchmarks/latency_target.py (widths from its JSON, random weights) are
timed as bench jobs (each >= 2 s of runs, as a check times them) with the dense plan and, per
target, the calibration plan measured nearest the target; `--rounds` rounds, every plan once per
round, alternating a quiet round and one with a busy-loop process beside it (a neighbour taking
a core). For each searched plan, three estimates of its latency per round: raw, scaled by the
dense plan (its quiet median over its time in that round), scaled by the near plan. The better
reference gives the same estimate loaded and quiet: reported as the loaded / quiet ratio of each
estimate's medians, and each estimate's spread over rounds.

    python benchmarks/check_reference.py [--runtimes onnx,tflite] [--rounds 6]
Writes benchmarks/results/check_reference.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
import export
from compress.latency import check_runs
from coronet.bundle import tool_versions
from device_bench.host import host_state
from device_bench.records import BenchJob
from device_bench.run import execute

RESULTS = Path(__file__).resolve().parent / "results"


def _spread(values: list[float]) -> float:
    """Relative spread: the standard deviation over the mean."""
    return statistics.pstdev(values) / statistics.fmean(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtimes", default="onnx,tflite")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--source", default=str(RESULTS / "latency_target.json"))
    p.add_argument("--out", default=str(RESULTS / "check_reference.json"))
    args = p.parse_args()
    source = json.loads(Path(args.source).read_text())
    full = compress.full_plan("resnet", ngf=64, n_blocks=9)
    record: dict = {"settings": vars(args), "host": host_state(), "tools": tool_versions(), "runtimes": {}}
    for runtime in args.runtimes.split(","):
        result = source["runtimes"][runtime]
        calibration = [pt for pt in result["points"] if pt["widths"] != dict(full.widths)]
        plans = {"dense": (dict(full.widths), result["dense_measured_ms"])}
        searched, near_of = [], {}
        for name, row in result["targets"].items():
            near = min(calibration, key=lambda pt: abs(pt["measured_ms"] / row["target_ms"] - 1))
            plans[f"{name} near"] = (near["widths"], near["measured_ms"])
            for stop in ("prediction", "measured"):
                plans[f"{name} {stop}"] = (row[f"{stop}_stop"]["widths"], row["target_ms"])
                searched.append(f"{name} {stop}")
                near_of[f"{name} {stop}"] = f"{name} near"
        times: dict[str, list[float]] = {name: [] for name in plans}
        loaded: list[bool] = []
        with tempfile.TemporaryDirectory(prefix="coronet-checkref-") as tmp:
            paths = {}
            for i, (name, (widths, _)) in enumerate(plans.items()):
                torch.manual_seed(0)
                model = compress.build_generator("resnet", full.with_widths(widths)).eval()
                paths[name] = export.export_bundle(model, Path(tmp) / f"m{i}", (runtime,), image_size=256,
                                                   sample_images=0).path  # fmt: skip
            for r in range(args.rounds):
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if r % 2 else None
                try:
                    for name, path in paths.items():
                        runs = check_runs(plans[name][1], 10)
                        job = BenchJob(str(path), "host", runtime, threads=args.threads, runs=runs, warmup_s=0.5)
                        times[name].append(execute(job).stats.median_ms)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                loaded.append(busy is not None)
                print(f"{runtime}: round {r + 1}/{args.rounds} ({'loaded' if loaded[-1] else 'quiet'}): "
                      f"dense {times['dense'][-1]:.1f} ms", flush=True)  # fmt: skip

        rows = {}
        print(f"{runtime}: loaded / quiet of each estimate (1.00 = the reference carried the load); spread over rounds")
        for name in searched:
            estimates = {"raw": times[name]}
            for how, reference in (("dense", times["dense"]), ("near", times[near_of[name]])):
                base = statistics.median(t for t, busy in zip(reference, loaded, strict=True) if not busy)
                estimates[how] = [t * base / ref for t, ref in zip(times[name], reference, strict=True)]
            row = {}
            for how, values in estimates.items():
                on = [v for v, busy in zip(values, loaded, strict=True) if busy]
                off = [v for v, busy in zip(values, loaded, strict=True) if not busy]
                row[how] = {"loaded_over_quiet": statistics.median(on) / statistics.median(off),
                            "spread_quiet": _spread(off), "spread_loaded": _spread(on)}  # fmt: skip
            rows[name] = row
            print(f"  {name:16s} " + "  ".join(
                f"{how} {v['loaded_over_quiet']:.2f} ({v['spread_quiet']:.1%}/{v['spread_loaded']:.1%})"
                for how, v in row.items()), flush=True)  # fmt: skip
        record["runtimes"][runtime] = {"plans": {n: {"widths": w, "ms": ms} for n, (w, ms) in plans.items()},
                                       "loaded": loaded, "times": times, "estimates": rows}  # fmt: skip
    out = Path(args.out)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
