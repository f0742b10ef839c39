"""Quality at equal measured latency: a latency-targeted CoroNet search against a MACs-targeted one.

(c) of the latency-target issue. The task and training are benchmarks/compression_quality.py's
(built-in pix2pix pairs, ResNet ngf 16 / 3 blocks, trained at 64x64, `--steps` GAN steps, search
then converge, held-out paired L1 / PSNR); the models are deployed, and timed, at `--deploy-size`
(fully convolutional: the same weights) with ONNX Runtime on this host, `--threads` threads.

1. A latency model of that generator is calibrated on the host (`device-bench calibrate`'s code:
   `--plans` random plans, `--held-out` more, every plan timed in two passes of at least
   `--min-seconds` each, the dense plan timed again after every 4 as the machine's speed).
2. Per seed: (A) CoroNet with a latency target of `--fraction` of the dense model's predicted
   latency (the search prices channels by their predicted ms, widths rounded to the model's
   granularity; stopped as the pipeline stops it: its plans timed on the host as it goes,
   `--latency-timings`, re-aimed by the model's error); (B) CoroNet with a MACs target equal to
   A's MACs ratio; A and B are exported and timed interleaved; (B2) CoroNet with the MACs target
   scaled by A's latency over B's, so that B and B2 bracket A's latency; all three timed
   interleaved again (`--rounds` rounds of `--runs` inferences each). B's quality at A's latency
   is interpolated linearly between B and B2 (where they do not bracket it: the nearer one's,
   and the seed says `bracketed: false`).
3. Goal: A's held-out PSNR at least the MACs-targeted search's at A's latency (mean of seeds).

    python benchmarks/latency_quality.py [--steps 400] [--seeds 0 1 2 3] [--fraction 0.5]
Writes benchmarks/results/latency_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
from benchmarks.compression_quality import IMAGE, SIZES, _coronet, _quality
from benchmarks.timing import time_interleaved
from compress.data import builtin_paired
from compress.latency import LatencyBudget, LatencyKey, MeasuredStop, calibrate, check_runs
from coronet.bundle import tool_versions
from device_bench.calibrate import plan_timer
from device_bench.host import host_state
from export.onnx_export import to_onnx
from export.runtimes import OnnxRunner


def _time_interleaved(paths: dict[str, Path], shape, threads: int, rounds: int, runs: int) -> dict[str, float]:
    runners = {name: OnnxRunner(path, threads) for name, path in paths.items()}
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    return {name: statistics.median(v) for name, v in time_interleaved(runners, x, rounds, runs).items()}


def _interpolate(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    """y at x on the line through (x0, y0) and (x1, y1) where x lies between x0 and x1; else
    (no extrapolation) the y of the nearer point."""
    if min(x0, x1) <= x <= max(x0, x1) and abs(x1 - x0) > 1e-9:
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return y0 if abs(x - x0) <= abs(x - x1) else y1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    # widths round to 8 on ORT (latency model v2), and all at 8 this generator predicts ~0.34 of dense
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--deploy-size", type=int, default=256)
    p.add_argument("--plans", type=int, default=16)
    p.add_argument("--held-out", type=int, default=6)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="each calibration timing runs at least this long (as device-bench calibrate's)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--latency-timings", type=int, default=3,
                   help="A's measured stop: plans timed on the host (search.latency_timings)")  # fmt: skip
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "latency_quality.json"))
    args = p.parse_args()
    full = compress.full_plan("resnet", **SIZES)
    cost = compress.PlanCost(full, (1, 3, IMAGE, IMAGE))  # MACs ratios do not depend on the image size
    deploy = (1, 3, args.deploy_size, args.deploy_size)
    data = builtin_paired(64, IMAGE, seed=0)
    held_out = builtin_paired(32, IMAGE, seed=1)
    key = LatencyKey("host", "onnx", "cpu", args.threads)
    record: dict = {"settings": vars(args), "host": host_state(), "tools": tool_versions(),
                    "platform": platform.platform(), "seeds": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="coronet-latency-quality-") as tmp:
        scratch = Path(tmp)
        print(f"calibrating host onnx x{args.threads} at {args.deploy_size}² ...", flush=True)
        timer = plan_timer(key, args.deploy_size, scratch / "calibration", args.runs, min_s=args.min_seconds)
        model = calibrate(full, deploy, key, timer, args.plans, args.held_out, seed=0, repeats=2, reference_every=4)
        held = model.calibration["held_out_error"]
        print(f"  dense {model.dense_ms:.1f} ms predicted; held-out error median {held['median']:.1%}, "
              f"max {held['max']:.1%}; {model.layout.describe()}", flush=True)  # fmt: skip
        fastest = model.ratio(model.group_round_to())  # every group at its rounding's least
        if args.fraction <= fastest:
            sys.exit(f"--fraction {args.fraction} is under the fastest plan's predicted {fastest:.2f} of the dense "
                     f"latency (widths rounded to {model.group_round_to()}); pick a larger one")  # fmt: skip
        budget = LatencyBudget(model, model.dense_ms * args.fraction)
        record["latency_model"] = {"dense_ms": model.dense_ms, "layout": asdict(model.layout),
                                   "held_out_error": held, "target_ms": budget.target_ms}  # fmt: skip

        timers: dict = {}  # by run count, as the pipeline's checks keep them: each exports a plan once

        def measure(widths) -> float:  # a plan of the search, timed as the pipeline times a check
            runs = check_runs(model.predict(widths), args.runs)
            if runs not in timers:
                timers[runs] = plan_timer(key, args.deploy_size, scratch / f"check-{runs}", runs)
            return timers[runs](full.with_widths(widths), profile=False).median_ms

        def train(name: str, seed: int, target: float, latency: bool = False) -> tuple[Path, dict]:
            """One CoroNet run: its ONNX file at the deploy size and its record."""
            stop = MeasuredStop(budget, measure, args.latency_timings) if latency and args.latency_timings else None
            slim, times = _coronet(full, cost, target, args.steps, seed, data, budget=budget if latency else None,
                                   stop=stop)  # fmt: skip
            path = to_onnx(slim.eval(), scratch / f"{name}-{seed}", deploy).path
            return path, {"macs_target": None if latency else target, "macs_ratio": cost.ratio(slim.plan.widths),
                          "predicted_ms": model.predict(slim.plan.widths), "widths": dict(slim.plan.widths),
                          **_quality(slim, held_out), **times}  # fmt: skip

        for seed in args.seeds:
            print(f"seed {seed}", flush=True)
            runs: dict[str, dict] = {}
            paths: dict[str, Path] = {}
            paths["latency"], runs["latency"] = train("latency", seed, args.fraction, latency=True)
            paths["macs"], runs["macs"] = train("macs", seed, runs["latency"]["macs_ratio"])
            first = _time_interleaved(paths, deploy, args.threads, args.rounds, args.runs)
            scaled = runs["macs"]["macs_ratio"] * first["latency"] / first["macs"]
            paths["macs_scaled"], runs["macs_scaled"] = train("macs_scaled", seed, scaled)
            measured = _time_interleaved(paths, deploy, args.threads, args.rounds, args.runs)
            for name, row in runs.items():
                row["measured_ms"] = measured[name]
                print(f"  {name:<12} MACs {row['macs_ratio']:.3f} of dense, predicted {row['predicted_ms']:.1f} ms, "
                      f"measured {row['measured_ms']:.1f} ms, PSNR {row['psnr']:.2f} dB, L1 {row['l1']:.4f}",
                      flush=True)  # fmt: skip
            a, b, b2 = runs["latency"], runs["macs"], runs["macs_scaled"]
            at_equal = {m: _interpolate(a["measured_ms"], b["measured_ms"], b[m], b2["measured_ms"], b2[m])
                        for m in ("psnr", "l1")}  # fmt: skip
            print(f"  MACs-targeted at {a['measured_ms']:.1f} ms: PSNR {at_equal['psnr']:.2f} dB, "
                  f"L1 {at_equal['l1']:.4f}", flush=True)  # fmt: skip
            low, high = sorted((b["measured_ms"], b2["measured_ms"]))
            bracketed = low <= a["measured_ms"] <= high
            record["seeds"].append({"seed": seed, "runs": runs, "macs_targeted_at_equal_latency": at_equal,
                                    "bracketed": bracketed, "psnr_gain_db": a["psnr"] - at_equal["psnr"]})  # fmt: skip
    gains = [s["psnr_gain_db"] for s in record["seeds"]]
    record["summary"] = {
        "psnr_gain_db_mean": statistics.fmean(gains), "psnr_gain_db_min": min(gains),
        "latency_over_target_mean": statistics.fmean(s["runs"]["latency"]["measured_ms"] for s in record["seeds"])
        / budget.target_ms,
        "goal_met": statistics.fmean(gains) >= 0.0,
    }  # fmt: skip
    print(f"\nlatency-targeted minus MACs-targeted PSNR at equal measured latency: mean {statistics.fmean(gains):+.2f} "
          f"dB, per seed {', '.join(f'{g:+.2f}' for g in gains)}")  # fmt: skip
    out = Path(args.out)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
