"""Does a slim generator run faster in proportion to its MACs once exported?

The dense ResNet generator (ngf 64, 9 blocks) with slim plans of 4x, 10x and 20x fewer MACs, and
the dense pix2pix U-Net-256 (ngf 64) with a 4x plan, all at 256x256, are exported (ONNX + TFLite,
export passes on) and timed on this CPU in one run, interleaved: after two warm-ups each,
every round runs `--runs` / `--rounds` inferences of each (model, runtime, threads) in turn,
each setting's after a 50 ms pause and one untimed inference (ONNX Runtime's pool threads spin
on for a while after a run and slow whatever runs next: see benchmarks/timing.py); the median
of all of a setting's samples. Settings: ONNX Runtime with 1 and 2 threads, LiteRT/XNNPACK
with 2 threads. The slim plans are deterministic but irregular like a search result: every
prunable group is scaled by a common factor times a seeded per-group jitter (0.7-1.3), rounded
to a multiple of 8; the factor is bisected to hit the MACs reduction. Weights are random:
latency does not depend on their values.

    python benchmarks/export_speedup.py [--runs 10] [--rounds 5] [--reductions 4 10 20] [--unet-reductions 4]
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
from benchmarks.timing import time_interleaved
from device_bench.host import host_state
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


def _plans(args: argparse.Namespace, shape: tuple[int, ...]) -> list[tuple[str, str, compress.ChannelPlan]]:
    """(arch, name, plan) of every model timed."""
    out = []
    for arch, reductions in (("resnet", args.reductions), ("unet", args.unet_reductions)):
        sizes = {"ngf": args.ngf, "n_blocks": 9} if arch == "resnet" else {"ngf": args.ngf}
        full = compress.full_plan(arch, **sizes)
        cost = compress.PlanCost(full, shape)
        out += [(arch, "dense", full)] + [(arch, f"{r:g}x", slim_plan(full, cost, r)) for r in reductions]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reductions", type=float, nargs="+", default=[4, 10, 20])
    p.add_argument("--unet-reductions", type=float, nargs="*", default=[4])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "export_speedup.json"))
    args = p.parse_args()
    shape = (1, 3, args.image_size, args.image_size)
    rows, runners = [], {}
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for arch, name, plan in _plans(args, shape):
            torch.manual_seed(0)
            model = compress.build_generator(arch, plan).eval()
            print(f"exporting {arch} {name} ...", flush=True)
            bundle = export.export_bundle(model, Path(tmp) / f"{arch}-{name}", image_size=args.image_size)
            count = compress.PlanCost(plan, shape).count(plan.widths)
            for runtime, threads in SETTINGS:
                runners[len(rows)] = bundle.runner(runtime, threads=threads)
                rows.append(
                    {
                        "arch": arch,
                        "model": name,
                        "plan": plan.to_dict(),
                        "macs": count.macs,
                        "true_macs": count.true_macs,
                        "params": count.params,
                        "xnnpack_partitions": bundle.manifest["files"]["tflite"]["xnnpack_partitions"],
                        "runtime": runtime,
                        "threads": threads,
                        "samples_ms": [],
                    }
                )
        print(f"timing {len(runners)} settings interleaved, {args.rounds} rounds ...", flush=True)
        for i, samples in time_interleaved(runners, x, args.rounds, max(1, args.runs // args.rounds)).items():
            rows[i]["samples_ms"] = samples
    for r in rows:
        r["median_ms"] = statistics.median(r["samples_ms"])
        r["p90_ms"] = float(np.percentile(r["samples_ms"], 90))
    dense = {(r["arch"], r["runtime"], r["threads"]): r for r in rows if r["model"] == "dense"}
    print(
        f"\n{'arch':<7}{'model':<7}{'GMACs':>7}{'true':>7}{'runtime':>9}{'thr':>4}{'median ms':>11}"
        f"{'speedup':>9}{'eff':>6}{'eff(true)':>10}"
    )
    for r in rows:
        d = dense[(r["arch"], r["runtime"], r["threads"])]
        r["speedup"] = d["median_ms"] / r["median_ms"]
        r["macs_reduction"] = d["macs"] / r["macs"]
        r["true_macs_reduction"] = d["true_macs"] / r["true_macs"]
        r["efficiency"] = r["speedup"] / r["macs_reduction"]
        r["efficiency_true"] = r["speedup"] / r["true_macs_reduction"]
        print(
            f"{r['arch']:<7}{r['model']:<7}{r['macs'] / 1e9:>7.2f}{r['true_macs'] / 1e9:>7.2f}"
            f"{r['runtime']:>9}{r['threads']:>4}"
            f"{r['median_ms']:>11.1f}{r['speedup']:>9.2f}{r['efficiency']:>6.2f}{r['efficiency_true']:>10.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": host_state(), "tools": tool_versions(), "runs": args.runs, "rounds": args.rounds,
               "timing": "interleaved rounds, two warm-ups per setting", "results": rows}  # fmt: skip
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
