"""From one pretrained generator, with equal budgets: CoroNet against pruning and distillation.

Task: built-in pix2pix pairs (outlines → filled, shaded shapes), ResNet generator ngf 16,
3 blocks, 64x64, batch 4; quality = paired L1 / PSNR of 32 held-out images against their ground
truth (FID/KID need the Inception weights file, absent here). Per seed a dense generator is
trained for `--dense-steps` (the pretrained start, shared by every method); then every method
gets `--steps` GAN steps from there:

- coronet_pre[S:M:F]: CoroNet from the pretrained generator: latents from saliency S (`in`,
  `out`, `inout`; `none`: N(0, 1), or 1 with the scale fit), the hypernetwork fitted to
  reproduce it (F: `scale` or `offset`, see `compress.hyper.init_from_dense`), proximal step M
  (`all` / `below_cut`), search until the MACs target, then the slim generator converges for
  the remaining steps;
- l1_prune: L1-norm pruning of the pretrained generator at the same MACs + fine-tuning;
- distill: the uniformly scaled plan at the same MACs trained from scratch with an L1
  distillation loss (weight 10) to the pretrained teacher;
- coronet_scratch: CoroNet from scratch (N(0, 1) latents, random hypernetwork).

"after search" is each pruned model's quality before any fine-tuning (CoroNet: the slim
generator right after the search; l1_prune: right after slicing). The search's generator lr is
0.3 x the training lr (as the shipped configs); lam is set so that the latents shrink by 1.5
within 40 % of the budget.

    python benchmarks/pretrained_quality.py [--seeds 0 1 2 3] [--targets 0.25 0.1] [--steps 400]
        [--dense-steps 1600] [--variants in:below_cut:scale none:all:offset ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
from compress.baselines import l1_prune, uniform_plan
from compress.data import builtin_paired, random_batches
from compress.hyper import init_from_dense
from compress.metrics import paired_metrics
from compress.saliency import channel_saliency, latents_from_saliency
from compress.search import SearchConfig, run_search
from compress.train import GanTrainer, TrainConfig, linear_decay

SIZES = {"ngf": 16, "n_blocks": 3}
IMAGE = 64
LR = 1e-3
SEARCH_LR = 0.3 * LR
BASELINES = ("l1_prune", "distill", "coronet_scratch")
DEVICE = torch.device("cpu")


def _config(steps: int, **extra) -> TrainConfig:
    return TrainConfig(setup="pix2pix", lr=LR, ndf=32, n_layers_d=2, converge_steps=max(steps, 1),
                       decay_steps=max(steps, 1) // 2, **extra)  # fmt: skip


def _train(model, steps: int, seed: int, data, teacher=None, trainer=None) -> float:
    """GAN training with linear decay over the second half; returns the wall time."""
    torch.manual_seed(seed)
    config = _config(steps, teacher="t" if teacher is not None else "", distill_weight=10.0 if teacher else 0.0)
    if trainer is None:
        trainer = GanTrainer(model.train(), model.plan, config, DEVICE)
    else:  # keep the search's discriminator, fresh generator optimizer (as the converge stage)
        trainer.g = model.train()
        trainer.opt_g = torch.optim.Adam(model.parameters(), lr=LR, betas=(config.beta1, config.beta2))
    trainer.teacher = teacher
    batches = random_batches(*data, 4, seed + 100)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.set_lr(linear_decay(step, steps, steps // 2, LR))
        trainer.step(next(batches))
    return time.perf_counter() - t0


def _quality(model, held_out) -> dict[str, float]:
    was = model.training
    model.eval()
    with torch.no_grad():
        q = paired_metrics(model(held_out[0].to(DEVICE)).cpu(), held_out[1])
    model.train(was)
    return q


def _coronet(full, cost, target, steps, seed, data, held_out, start=None, saliency="in", shrink="all", fit="scale"):
    torch.manual_seed(seed)
    hyper = compress.HyperGenerator("resnet", full, embedding_dim=8)
    fit_error = None
    if start is not None:
        latents = None if saliency == "none" else latents_from_saliency(channel_saliency(start, saliency))
        init_from_dense(hyper, start, latents, fit=fit)
        x = held_out[0][:4]
        with torch.no_grad():
            fit_error = float((hyper.eval()(x) - start.eval()(x)).abs().max())
    hyper.to(DEVICE).train()
    config = _config(steps)
    trainer = GanTrainer(hyper, full, config, DEVICE)
    for group in trainer.opt_g.param_groups:
        group["lr"] = SEARCH_LR
    batches = random_batches(*data, 4, seed + 100)
    search = SearchConfig(target_macs=target, tolerance=0.02, lam=1.5 / (0.4 * steps * SEARCH_LR), lr=SEARCH_LR,
                          max_steps=steps, shrink=shrink, allow_miss=True)  # fmt: skip
    t0 = time.perf_counter()
    result = run_search(hyper, lambda _: trainer.step(next(batches)), search, cost, progress=False)
    t_search = time.perf_counter() - t0
    slim = compress.slim_generator(hyper.eval())
    after = _quality(slim, held_out)
    t_conv = _train(slim, steps - result.steps, seed, data, trainer=trainer)
    times = {"search_s": t_search, "converge_s": t_conv, "search_steps": result.steps, "reached": result.reached}
    return slim, after, {**times, "step0_max_abs": fit_error}


def _write(path: Path, args, rows: list[dict], started: float, done: bool) -> None:
    """The JSON record, rewritten after every row: an interrupted run keeps what it measured."""
    meta = {"args": vars(args), "machine": platform.processor() or platform.machine(), "threads": args.threads,
            "torch": torch.__version__, "total_s": time.perf_counter() - started, "complete": done}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "summary": summarize(rows), "runs": rows}, indent=2))


def run(args) -> list[dict]:
    full = compress.full_plan("resnet", **SIZES)
    cost = compress.PlanCost(full, (1, 3, IMAGE, IMAGE))
    data = builtin_paired(64, IMAGE, seed=0)
    held_out = builtin_paired(32, IMAGE, seed=1)
    rows: list[dict] = []
    started = time.perf_counter()

    def record(method, seed, model, extra, target=1.0, after=None):
        count = cost.count(model.plan.widths)
        wall = sum(v for k, v in extra.items() if k.endswith("_s") and isinstance(v, float))
        ratio = count.macs / cost.full.macs
        row = {"method": method, "target": target, "seed": seed, "macs": count.macs, "ratio": ratio,
               **_quality(model, held_out), **extra, "wall_s": wall}  # fmt: skip
        if after is not None:
            row["after_search_l1"], row["after_search_psnr"] = after["l1"], after["psnr"]
        rows.append(row)
        tail = f"  after search L1 {after['l1']:.4f}" if after else ""
        print(f"  {method:<26} {target:<5} seed {seed}: ratio {row['ratio']:.3f}  L1 {row['l1']:.4f}  "
              f"PSNR {row['psnr']:5.2f}  {wall:6.1f} s{tail}", flush=True)  # fmt: skip
        _write(Path(args.out), args, rows, started, done=False)

    for seed in args.seeds:
        torch.manual_seed(seed)
        dense = compress.build_generator("resnet", full).to(DEVICE)
        record("dense (pretrained)", seed, dense, {"train_s": _train(dense, args.dense_steps, seed, data)})
        dense.eval()
        for target in args.targets:
            for variant in args.variants:
                saliency, shrink, fit = variant.split(":")
                slim, after, extra = _coronet(full, cost, target, args.steps, seed, data, held_out,
                                              start=dense, saliency=saliency, shrink=shrink, fit=fit)  # fmt: skip
                record(f"coronet_pre[{variant}]", seed, slim, extra, target, after)
            if "l1_prune" in args.baselines:
                pruned = l1_prune(dense, cost, target).to(DEVICE)
                after = _quality(pruned, held_out)
                record("l1_prune", seed, pruned, {"finetune_s": _train(pruned, args.steps, seed, data)}, target, after)
            if "distill" in args.baselines:
                torch.manual_seed(seed)
                student = compress.build_generator("resnet", uniform_plan(full, cost, target)).to(DEVICE)
                wall = _train(student, args.steps, seed, data, teacher=dense)
                record("distill", seed, student, {"student_s": wall}, target)
            if "coronet_scratch" in args.baselines:
                slim, after, extra = _coronet(full, cost, target, args.steps, seed, data, held_out)
                record("coronet_scratch", seed, slim, extra, target, after)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    summary = []
    keys = sorted({(r["method"], r["target"]) for r in rows}, key=lambda k: (-k[1], k[0]))
    for method, target in keys:
        group = [r for r in rows if r["method"] == method and r["target"] == target]
        l1 = [r["l1"] for r in group]
        entry = {"method": method, "target": target, "n": len(group),
                 "ratio_mean": statistics.fmean(r["ratio"] for r in group),
                 "l1_mean": statistics.fmean(l1), "l1_min": min(l1), "l1_max": max(l1),
                 "psnr_mean": statistics.fmean(r["psnr"] for r in group),
                 "wall_s_mean": statistics.fmean(r["wall_s"] for r in group)}  # fmt: skip
        if "after_search_l1" in group[0]:
            entry["after_search_l1_mean"] = statistics.fmean(r["after_search_l1"] for r in group)
        summary.append(entry)
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.1])
    p.add_argument("--steps", type=int, default=400, help="GAN steps every method gets after the pretrained start")
    p.add_argument("--dense-steps", type=int, default=1600, help="GAN steps of the pretrained dense generator")
    p.add_argument("--variants", nargs="+", default=["in:below_cut:scale", "none:all:offset"],
                   help="CoroNet-from-pretrained rows: SALIENCY:SHRINK:FIT, e.g. in:below_cut:scale")  # fmt: skip
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrained_quality.json"))
    args = p.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = run(args)
    summary = summarize(rows)
    print(f"\n{'method':<28}{'target':>7}{'ratio':>7}{'L1 mean [min, max]':>26}{'PSNR':>9}{'after search':>14}"
          f"{'wall s':>8}")  # fmt: skip
    for e in summary:
        after = f"{e['after_search_l1_mean']:.4f}" if "after_search_l1_mean" in e else "-"
        spread = f"[{e['l1_min']:.4f}, {e['l1_max']:.4f}]"
        print(f"{e['method']:<28}{e['target']:>7}{e['ratio_mean']:>7.3f}{e['l1_mean']:>10.4f} {spread}"
              f"{e['psnr_mean']:>8.2f}{after:>14}{e['wall_s_mean']:>8.1f}")  # fmt: skip
    _write(Path(args.out), args, rows, t0, done=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
