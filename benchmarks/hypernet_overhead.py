"""Time per training step of the hyper generator over the dense generator.

One step = (weight generation +) forward + backward + Adam step (+ proximal step for the hyper
generator), batch 1, L1 loss to a fixed random target. Dense and hyper steps are interleaved
in one run so that machine noise hits both alike; the median of the timed steps is reported.
Goal: hyper / dense <= 1.25.

    python benchmarks/hypernet_overhead.py                 # tiny and full configs on the CPU
    python benchmarks/hypernet_overhead.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
from compress.search import make_adam

CONFIGS = {
    "tiny": {"arch": "resnet", "sizes": {"ngf": 16, "n_blocks": 9}, "image_size": 64},
    "resnet-ngf16-256": {"arch": "resnet", "sizes": {"ngf": 16, "n_blocks": 9}, "image_size": 256},
    "resnet-ngf64-256": {"arch": "resnet", "sizes": {"ngf": 64, "n_blocks": 9}, "image_size": 256},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, hyper: bool):
    optimizer = make_adam(model.parameters(), 2e-4, (0.5, 0.999))  # the same Adam for both

    def step() -> None:
        loss = (model(x) - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if hyper:
            compress.proximal_step(model, lam=1.0, lr=2e-4)

    return step


def measure(name: str, steps: int, warmup: int, device: torch.device) -> dict:
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    plan = compress.full_plan(cfg["arch"], **cfg["sizes"])
    shape = compress.example_input_shape(plan, cfg["image_size"])
    x = torch.randn(shape, device=device)
    target = torch.rand(shape[0], 3, cfg["image_size"], cfg["image_size"], device=device) * 2 - 1
    dense = compress.build_generator(cfg["arch"], plan).to(device)
    hyper = compress.HyperGenerator(cfg["arch"], plan).to(device)
    runs = {"dense": _step_fn(dense, x, target, False), "hyper": _step_fn(hyper, x, target, True)}
    samples: dict[str, list[float]] = {"dense": [], "hyper": []}
    from tqdm import tqdm

    for i in tqdm(range(warmup + steps), desc=name, leave=False):
        for kind, step in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if i >= warmup:
                samples[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "config": name,
        **cfg,
        "macs": compress.count_macs(dense, shape).macs,
        "dense_params": sum(p.numel() for p in dense.parameters()),
        "hyper_params": sum(p.numel() for p in hyper.parameters()),
        "dense_step_s": med["dense"],
        "hyper_step_s": med["hyper"],
        "ratio": med["hyper"] / med["dense"],
        "samples_s": samples,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=5, help="timed steps per model (default 5)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "hypernet_overhead.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(name, args.steps, args.warmup, device) for name in args.configs]
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(f"device: {machine['device']}, torch {machine['torch']}, {machine['torch_threads']} threads")
    print(f"{'config':<18}{'GMACs':>8}{'dense ms':>11}{'hyper ms':>11}{'ratio':>8}{'goal':>7}")
    for r in rows:
        verdict = "ok" if r["ratio"] <= 1.25 else "MISS"
        print(
            f"{r['config']:<18}{r['macs'] / 1e9:>8.2f}{r['dense_step_s'] * 1e3:>11.1f}"
            f"{r['hyper_step_s'] * 1e3:>11.1f}{r['ratio']:>8.3f}{verdict:>7}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "steps": args.steps, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
