"""Where does ONNX Runtime spend its time on a generator? Op-type shares from ORT's profiler.

    python benchmarks/ort_profile.py --reduction 10 --threads 2
Exports the deterministic slim plan of export_speedup.py (or the dense model with --reduction 1)
and prints the share of each op type in the node time of N profiled runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
from benchmarks.export_speedup import slim_plan
from export.onnx_export import to_onnx


def profile(path: Path, threads: int, runs: int, shape) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    for _ in range(runs + 2):
        session.run(None, {session.get_inputs()[0].name: x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / (runs + 2)
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reduction", type=float, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--image-size", type=int, default=256)
    args = p.parse_args()
    full = compress.full_plan("resnet", ngf=64, n_blocks=9)
    shape = (1, 3, args.image_size, args.image_size)
    plan = full if args.reduction == 1 else slim_plan(full, compress.PlanCost(full, shape), args.reduction)
    torch.manual_seed(0)
    model = compress.build_generator("resnet", plan).eval()
    with tempfile.TemporaryDirectory() as tmp:
        out = to_onnx(model, tmp, shape)
        per_op = profile(out.path, args.threads, args.runs, shape)
    total = sum(per_op.values())
    print(f"reduction {args.reduction:g}x, {args.threads} threads: {total:.1f} ms of node time per run")
    for op, ms in per_op.items():
        print(f"  {op:<24}{ms:>9.2f} ms {100 * ms / total:>6.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
