"""Does a slim generator run faster in proportion to its MACs once exported?

The dense ResNet generator (ngf 64, 9 blocks, 256x256) and slim plans with 4x, 10x and 20x fewer
MACs are exported (ONNX + TFLite, export passes on) and timed on this CPU in one run: ONNX
Runtime with 1 and 2 threads, LiteRT/XNNPACK with 2 threads. The slim plans are deterministic
but irregular like a search result: every prunable group is scaled by a common factor times a
seeded per-group jitter (0.7-1.3), rounded to a multiple of 8; the factor is bisected to hit
the MACs reduction. Weights are random: latency does not depend on their values.

    python benchmarks/export_speedup.py [--runs 10] [--reductions 4 10 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
import export
from device_bench.host import host_state, run_host_benchmark
from export.bundle import tool_versions

SETTINGS = [("onnx", 1), ("onnx", 2), ("tflite", 2)]


def slim_plan(full: compress.ChannelPlan, cost: compress.PlanCost, reduction: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    jitter = {g: float(rng.uniform(0.7, 1.3)) for g in full.prunable}

    def widths(scale: float) -> dict[str, int]:
        return {g: int(max(8, min(full[g], 8 * round(full[g] * scale * jitter[g] / 8)))) for g in full.prunable}

    lo, hi = 0.01, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost.ratio({**full.widths, **widths(mid)}) < 1 / reduction else (lo, mid)
    return full.with_widths(widths(hi))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reductions", type=float, nargs="+", default=[4, 10, 20])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "export_speedup.json"))
    args = p.parse_args()
    full = compress.full_plan("resnet", ngf=args.ngf, n_blocks=9)
    shape = (1, 3, args.image_size, args.image_size)
    cost = compress.PlanCost(full, shape)
    plans = [("dense", full)] + [(f"{r:g}x", slim_plan(full, cost, r)) for r in args.reductions]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in plans:
            torch.manual_seed(0)
            model = compress.build_generator("resnet", plan).eval()
            print(f"exporting {name} ...", flush=True)
            bundle = export.export_bundle(model, Path(tmp) / name, image_size=args.image_size)
            count = cost.count(plan.widths)
            for runtime, threads in SETTINGS:
                result = run_host_benchmark(bundle, runtime, threads=threads, runs=args.runs, warmup_s=2.0)
                rows.append(
                    {
                        "model": name,
                        "plan": plan.to_dict(),
                        "macs": count.macs,
                        "true_macs": count.true_macs,
                        "params": count.params,
                        "xnnpack_partitions": bundle.manifest["files"]["tflite"]["xnnpack_partitions"],
                        "runtime": runtime,
                        "threads": threads,
                        "median_ms": result.stats.median_ms,
                        "p90_ms": result.stats.p90_ms,
                        "samples_ms": result.samples_ms,
                    }
                )
    dense = {(r["runtime"], r["threads"]): r for r in rows if r["model"] == "dense"}
    print(
        f"\n{'model':<7}{'GMACs':>7}{'true':>7}{'runtime':>9}{'thr':>4}{'median ms':>11}"
        f"{'speedup':>9}{'eff':>6}{'eff(true)':>10}"
    )
    for r in rows:
        d = dense[(r["runtime"], r["threads"])]
        r["speedup"] = d["median_ms"] / r["median_ms"]
        r["macs_reduction"] = d["macs"] / r["macs"]
        r["true_macs_reduction"] = d["true_macs"] / r["true_macs"]
        r["efficiency"] = r["speedup"] / r["macs_reduction"]
        r["efficiency_true"] = r["speedup"] / r["true_macs_reduction"]
        print(
            f"{r['model']:<7}{r['macs'] / 1e9:>7.2f}{r['true_macs'] / 1e9:>7.2f}{r['runtime']:>9}{r['threads']:>4}"
            f"{r['median_ms']:>11.1f}{r['speedup']:>9.2f}{r['efficiency']:>6.2f}{r['efficiency_true']:>10.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": host_state(), "tools": tool_versions(), "runs": args.runs, "results": rows}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
