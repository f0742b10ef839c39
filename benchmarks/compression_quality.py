"""CoroNet against the dense model and two baselines at equal MACs, on the built-in task.

Task: built-in pix2pix pairs (outlines → filled, shaded shapes), ResNet generator ngf 16,
3 blocks, 64x64, batch 4, widths not rounded (at ngf 16 a floor of 8 channels per group
would stop every method short of 10x); quality = paired L1 and PSNR of held-out images against their ground
truth (FID needs the Inception weights file, which is not on this machine). Every method gets
the same number of GAN steps (`--steps`):

- dense: the full generator trained for all steps;
- CoroNet: search (until the MACs target; hyper generator) + converge (the remaining steps);
- (a) uniform: the uniformly scaled plan at the same MACs, trained from scratch;
- (b) L1 prune: the dense generator trained for half the steps, L1-norm pruned to the same
  MACs, fine-tuned for the other half;
- teacher + distillation: a dense teacher (the dense run) and a uniform student trained with
  an L1 distillation loss for all steps; its wall time is teacher + student;
- CoroNet from dense: the half-trained dense generator of (b) as the hypernetwork's start
  (`search.init_from`), then search + converge for the other half: (b)'s budget and start.

`--search-lr-scales 1 0.3` adds a CoroNet row per scale of the hyper generator's Adam lr during
the search (`search.lr` = scale x `train.lr`; the proximal step shrinks by lam x that lr, so a
smaller lr also searches longer). `--methods` runs a subset of the rows.

    python benchmarks/compression_quality.py [--steps 400] [--seeds 0 1] [--targets 0.25 0.1] [--device cuda]
    python benchmarks/compression_quality.py --steps 1600 --targets 0.1 --seeds 0 1 2 3 \
        --methods coronet l1_prune --search-lr-scales 1 0.3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
from compress.baselines import l1_prune, uniform_plan
from compress.data import builtin_paired, random_batches
from compress.hyper import init_from_dense
from compress.metrics import paired_metrics
from compress.search import SearchConfig, run_search
from compress.train import GanTrainer, TrainConfig, linear_decay

SIZES = {"ngf": 16, "n_blocks": 3}
METHODS = ["dense", "coronet", "coronet_from_dense", "uniform", "l1_prune", "distill"]
IMAGE = 64
DEVICE = torch.device("cpu")  # --device


def _train_config(steps: int, **extra) -> TrainConfig:
    return TrainConfig(setup="pix2pix", lr=1e-3, ndf=32, n_layers_d=2, converge_steps=steps, decay_steps=steps // 2,
                       **extra)  # fmt: skip


def _train(model, steps: int, seed: int, data, teacher=None) -> float:
    """Plain GAN training with linear decay over the second half; returns the wall time."""
    torch.manual_seed(seed)
    config = _train_config(steps, teacher="t" if teacher is not None else "", distill_weight=10.0 if teacher else 0.0)
    trainer = GanTrainer(model.train(), model.plan, config, DEVICE)
    trainer.teacher = teacher
    batches = random_batches(*data, 4, seed)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.set_lr(linear_decay(step, steps, steps // 2, config.lr))
        trainer.step(next(batches))
    return time.perf_counter() - t0


def _quality(model, held_out) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        return paired_metrics(model(held_out[0].to(DEVICE)).cpu(), held_out[1])


def _coronet(
    full, cost, target: float, steps: int, seed: int, data, start=None, lr_scale: float = 1.0, budget=None, stop=None
) -> tuple[torch.nn.Module, dict]:
    """CoroNet to a MACs ratio `target`, or with `budget` (compress.latency.LatencyBudget) to its
    predicted latency, widths rounded as the budget says (per group), as the pipeline does
    (and with `stop`, compress.latency.MeasuredStop, to the device's timing of its plans)."""
    torch.manual_seed(seed)
    hyper = compress.HyperGenerator("resnet", full, embedding_dim=8)
    if start is not None:
        init_from_dense(hyper, start)
    hyper.to(DEVICE)
    config = _train_config(steps)
    trainer = GanTrainer(hyper, full, config, DEVICE)
    for group in trainer.opt_g.param_groups:  # search.lr, as the pipeline's search stage sets it
        group["lr"] = config.lr * lr_scale
    batches = random_batches(*data, 4, seed)
    # lam shrinks the latents by 2.0 (beyond almost every |z| of N(0, 1)) within 40 % of the budget
    # at lr_scale 1, so the search leaves at least 60 % of the steps to converging.
    lam = 2.0 / (0.4 * steps * config.lr)
    search = SearchConfig(target_macs=target, tolerance=0.02, lam=lam, lr=config.lr * lr_scale, max_steps=steps)
    if budget is not None:
        # round_to left at 1: each group rounds to the budget's multiple, as in the pipeline
        search = replace(search, target_latency_ms=budget.target_ms, latency_model="(in memory)")
    t0 = time.perf_counter()
    result = run_search(hyper, lambda _: trainer.step(next(batches)), search, cost, progress=False, budget=budget,
                        stop=stop)  # fmt: skip
    t_search = time.perf_counter() - t0
    slim = compress.slim_generator(hyper).train()
    trainer.g = slim
    trainer.opt_g = torch.optim.Adam(slim.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    remaining = steps - result.steps
    t0 = time.perf_counter()
    for step in range(1, remaining + 1):
        trainer.set_lr(linear_decay(step, remaining, remaining // 2, config.lr))
        trainer.step(next(batches))
    return slim, {"search_s": t_search, "converge_s": time.perf_counter() - t0, "search_steps": result.steps,
                  **({"search_timings": result.latency_checks} if stop is not None else {})}  # fmt: skip


def run(steps: int, seeds: list[int], targets: list[float], methods: list[str] = METHODS,
        lr_scales: list[float] = (1.0,)) -> list[dict]:  # fmt: skip
    full = compress.full_plan("resnet", **SIZES)
    cost = compress.PlanCost(full, (1, 3, IMAGE, IMAGE))
    data = builtin_paired(64, IMAGE, seed=0)
    held_out = builtin_paired(32, IMAGE, seed=1)
    rows = []

    def record(method, seed, model, times, target=1.0):
        count = cost.count(model.plan.widths)
        wall = sum(v for k, v in times.items() if k.endswith("_s"))
        rows.append({"method": method, "target": target, "seed": seed, "macs": count.macs, "params": count.params,
                     **_quality(model, held_out), **times, "wall_s": wall})  # fmt: skip
        r = rows[-1]
        print(f"  {method:<20} target {target:<5} seed {seed}: {r['macs'] / 1e6:7.1f} M MACs  L1 {r['l1']:.4f}  "
              f"PSNR {r['psnr']:5.2f}  {r['wall_s']:6.1f} s", flush=True)  # fmt: skip

    for seed in seeds:
        if {"dense", "distill"} & set(methods):
            torch.manual_seed(seed)
            dense = compress.build_generator("resnet", full).to(DEVICE)
            record("dense", seed, dense, {"train_s": _train(dense, steps, seed, data)})
        if {"l1_prune", "coronet_from_dense"} & set(methods):
            torch.manual_seed(seed)
            half = compress.build_generator("resnet", full).to(DEVICE)
            t_half = _train(half, steps // 2, seed, data)
        for target in targets:
            if "coronet" in methods:
                for scale in lr_scales:
                    slim, times = _coronet(full, cost, target, steps, seed, data, lr_scale=scale)
                    record("coronet" if scale == 1 else f"coronet search lr x{scale:g}", seed, slim, times, target)
            if "coronet_from_dense" in methods:
                slim, times = _coronet(full, cost, target, steps - steps // 2, seed, data, start=half.cpu())
                half.to(DEVICE)
                record("coronet_from_dense", seed, slim, {"dense_s": t_half, **times}, target)
            if "uniform" in methods:
                torch.manual_seed(seed)
                small = compress.build_generator("resnet", uniform_plan(full, cost, target)).to(DEVICE)
                record("uniform", seed, small, {"train_s": _train(small, steps, seed, data)}, target)
            if "l1_prune" in methods:
                pruned = l1_prune(half, cost, target).to(DEVICE)
                t_ft = _train(pruned, steps - steps // 2, seed, data)
                record("l1_prune", seed, pruned, {"dense_s": t_half, "finetune_s": t_ft}, target)
            if "distill" in methods:
                torch.manual_seed(seed)
                student = compress.build_generator("resnet", uniform_plan(full, cost, target)).to(DEVICE)
                teacher_s = next(r["wall_s"] for r in rows if r["method"] == "dense" and r["seed"] == seed)
                t_student = _train(student, steps, seed, data, teacher=dense.eval())
                record("distill", seed, student, {"teacher_s": teacher_s, "student_s": t_student}, target)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.1])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, help="rows to run (default: all)")
    p.add_argument("--search-lr-scales", type=float, nargs="+", default=[1.0],
                   help="CoroNet rows with search.lr = SCALE x train.lr (default: 1)")  # fmt: skip
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "compression_quality.json"))
    args = p.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(torch.get_num_threads())
    rows = run(args.steps, args.seeds, args.targets, args.methods, args.search_lr_scales)
    print(f"\n{'method':<20}{'target':>7}{'GMACs':>8}{'params M':>9}{'L1':>14}{'PSNR':>16}{'wall s':>9}")
    keys = sorted({(r["method"], r["target"]) for r in rows}, key=lambda k: (-k[1], k[0]))
    summary = []
    for method, target in keys:
        group = [r for r in rows if r["method"] == method and r["target"] == target]
        l1 = [r["l1"] for r in group]
        psnr = [r["psnr"] for r in group]
        entry = {
            "method": method,
            "target": target,
            "macs": group[0]["macs"],
            "params": group[0]["params"],
            "l1_mean": statistics.fmean(l1),
            "l1_spread": max(l1) - min(l1),
            "psnr_mean": statistics.fmean(psnr),
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in group),
        }
        summary.append(entry)
        print(f"{method:<20}{target:>7}{entry['macs'] / 1e9:>8.3f}{entry['params'] / 1e6:>9.3f}"
              f"{entry['l1_mean']:>9.4f}±{entry['l1_spread'] / 2:.4f}{entry['psnr_mean']:>10.2f} dB"
              f"{entry['wall_s_mean']:>9.1f}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"steps": args.steps, "seeds": args.seeds, "device": str(DEVICE), "methods": args.methods,
              "search_lr_scales": args.search_lr_scales, "summary": summary, "runs": rows}  # fmt: skip
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
