"""Time per training step of the hyper generator over the dense generator.

One step = (weight generation +) forward + backward + Adam step (+ proximal step for the hyper
generator), batch 1, L1 loss to a fixed random target. The hyper step is timed twice: with the
eager weight generation (the default) and with `Hypernetwork.use_compiled()` (torch.compile;
its one-off compile is not timed). Dense and hyper steps are interleaved
in one run so that machine noise hits both alike; the step times are medians, and each ratio is
the median of the per-round ratios (a hyper step over the dense step timed just before it),
which cancels the slow drifts of a shared machine.
Goal: hyper / dense <= 1.25.

The "floor" column is the least a hyper step can cost on this machine, over the dense step: the
dense step with the hypernetwork's Adam step in place of the generator's (both timed inside the
steps above), plus one read of the hypernetwork's parameters to generate the weights and one
read and one gradient write for their backward, at the copy bandwidth measured here. The
hypernetwork's size is fixed (C_in*C_out*(1 + 2m + k*k*m + k*k) per conv), so where the floor is
above the goal no implementation of this parameterisation can meet it.

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


def _step_fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, hyper: bool, device: torch.device):
    """One training step; it returns the seconds its Adam step took."""
    optimizer = make_adam(model.parameters(), 2e-4, (0.5, 0.999))  # the same Adam for both

    def step() -> float:
        loss = (model(x) - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t0 = time.perf_counter()
        optimizer.step()
        _sync(device)
        adam_s = time.perf_counter() - t0
        if hyper:
            compress.proximal_step(model, lam=1.0, lr=2e-4)
        return adam_s

    return step


def _paired_ratio(hyper: list[float], dense: list[float]) -> float:
    return statistics.median(h / d for h, d in zip(hyper, dense, strict=True))


def copy_bandwidth(numel: int, device: torch.device, repeats: int = 9) -> float:
    """Bytes per second of an elementwise add over `numel` floats (two reads, one write)."""
    a, b = torch.randn(numel, device=device), torch.randn(numel, device=device)
    out = torch.empty_like(a)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        torch.add(a, b, out=out)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 3 * 4 * numel / statistics.median(times[2:])


def measure(name: str, steps: int, warmup: int, device: torch.device, compiled: bool) -> dict:
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    plan = compress.full_plan(cfg["arch"], **cfg["sizes"])
    shape = compress.example_input_shape(plan, cfg["image_size"])
    x = torch.randn(shape, device=device)
    target = torch.rand(shape[0], 3, cfg["image_size"], cfg["image_size"], device=device) * 2 - 1
    dense = compress.build_generator(cfg["arch"], plan).to(device)
    hyper = compress.HyperGenerator(cfg["arch"], plan).to(device)
    runs = {"dense": _step_fn(dense, x, target, False, device), "hyper": _step_fn(hyper, x, target, True, device)}
    if compiled:
        hyper_compiled = compress.HyperGenerator(cfg["arch"], plan).to(device)
        hyper_compiled.load_state_dict(hyper.state_dict())
        if not hyper_compiled.hypernet.use_compiled():
            raise SystemExit("torch.compile is not usable here (see the warning); run without --compiled")
        runs["hyper_compiled"] = _step_fn(hyper_compiled, x, target, True, device)
    samples: dict[str, list[float]] = {k: [] for k in runs}
    adam: dict[str, list[float]] = {k: [] for k in runs}
    from tqdm import tqdm

    for i in tqdm(range(warmup + steps), desc=name, leave=False):
        for kind, step in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            adam_s = step()
            _sync(device)
            if i >= warmup:
                samples[kind].append(time.perf_counter() - t0)
                adam[kind].append(adam_s)
    med = {k: statistics.median(v) for k, v in samples.items()}
    adam_med = {k: statistics.median(v) for k, v in adam.items()}
    hyper_params = sum(p.numel() for p in hyper.parameters())
    bandwidth = copy_bandwidth(hyper_params, device)
    floor_s = med["dense"] - adam_med["dense"] + adam_med["hyper"] + 3 * 4 * hyper_params / bandwidth
    return {
        "config": name,
        **cfg,
        "macs": compress.count_macs(dense, shape).macs,
        "dense_params": sum(p.numel() for p in dense.parameters()),
        "hyper_params": hyper_params,
        "dense_step_s": med["dense"],
        "hyper_step_s": med["hyper"],
        "ratio": _paired_ratio(samples["hyper"], samples["dense"]),
        "dense_adam_s": adam_med["dense"],
        "hyper_adam_s": adam_med["hyper"],
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "floor_ratio": floor_s / med["dense"],
        "hyper_compiled_step_s": med.get("hyper_compiled"),
        "ratio_compiled": _paired_ratio(samples["hyper_compiled"], samples["dense"]) if compiled else None,
        "samples_s": samples,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=5, help="timed steps per model (default 5)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--no-compiled", action="store_true", help="skip the hyper step with torch.compile'd weight generation"
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "hypernet_overhead.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(name, args.steps, args.warmup, device, not args.no_compiled) for name in args.configs]
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(f"device: {machine['device']}, torch {machine['torch']}, {machine['torch_threads']} threads")
    print(
        f"{'config':<18}{'GMACs':>7}{'dense ms':>10}{'hyper ms':>10}{'compiled':>10}{'Adam d/h ms':>13}{'GB/s':>6}"
        f"{'ratio':>7}{'compiled':>10}{'floor':>7}  goal <= 1.25"
    )
    for r in rows:
        best = min(r["ratio"], r["ratio_compiled"] or r["ratio"])
        verdict = "ok" if best <= 1.25 else "MISS" + (" (floor above goal)" if r["floor_ratio"] > 1.25 else "")
        adam_ms = f"{r['dense_adam_s'] * 1e3:.1f}/{r['hyper_adam_s'] * 1e3:.1f}"
        compiled_ms = f"{r['hyper_compiled_step_s'] * 1e3:.1f}" if r["hyper_compiled_step_s"] else "-"
        compiled_ratio = f"{r['ratio_compiled']:.3f}" if r["ratio_compiled"] else "-"
        print(
            f"{r['config']:<18}{r['macs'] / 1e9:>7.2f}{r['dense_step_s'] * 1e3:>10.1f}{r['hyper_step_s'] * 1e3:>10.1f}"
            f"{compiled_ms:>10}{adam_ms:>13}{r['copy_bandwidth_gb_s']:>6.1f}"
            f"{r['ratio']:>7.3f}{compiled_ratio:>10}{r['floor_ratio']:>7.3f}  {verdict}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "steps": args.steps, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
