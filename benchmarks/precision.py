"""Latency and task quality per precision × runtime: fp32, fp16 and full-integer int8 files of
one generator, each run in its own runtime (ONNX Runtime, LiteRT with XNNPACK, ExecuTorch with
XNNPACK) on this host. ExecuTorch has no fp16 file (see export.bundle.TARGET_PRECISIONS).

Two parts, both with the dense ResNet and a 10× one (every prunable group scaled uniformly to
0.1 of the dense MACs):

- quality: ResNet ngf 16 / 3 blocks at 64², trained `--train-steps` GAN steps on the built-in
  pix2pix task (dense and 10× each from scratch); each exported file's held-out L1 / PSNR on 32
  pairs, and the PSNR it loses against its runtime's fp32 file. int8 is calibrated on
  `--calibration` training images.
- latency: ResNet ngf 64 / 9 blocks at 256² (untrained weights: timing only; int8 calibrated on
  built-in images at 256²), `--threads` threads; TFLite int8 both full integer (XNNPACK has no int8
  RSQRT: one partition per InstanceNorm) and with `int8_norm="float"` (one partition). Files are
  timed interleaved: every round times `--runs` inferences of each file in turn, so a slow spell
  of this shared machine falls on all of them; the median of all rounds is reported, and int8 / fp32 per runtime.

    python benchmarks/precision.py [--train-steps 800] [--rounds 5] [--runs 10] [--threads 2]
Writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress
import export
from compress.baselines import uniform_plan
from compress.data import builtin_paired, random_batches
from compress.train import GanTrainer, TrainConfig, linear_decay
from coronet.bundle import tool_versions

TARGET = 0.1
TARGETS = ("onnx", "tflite", "executorch")


def _plans(sizes: dict, size: int) -> dict[str, compress.ChannelPlan]:
    full = compress.full_plan("resnet", **sizes)
    return {"dense": full, "10x": uniform_plan(full, compress.PlanCost(full, (1, 3, size, size)), TARGET)}


def _images(x: torch.Tensor) -> list[np.ndarray]:
    return [x[i : i + 1].numpy() for i in range(len(x))]


def _train(plan, steps: int, data) -> torch.nn.Module:
    torch.manual_seed(0)
    model = compress.build_generator("resnet", plan)
    config = TrainConfig(setup="pix2pix", lr=1e-3, ndf=32, n_layers_d=2, converge_steps=steps, decay_steps=steps // 2)
    trainer = GanTrainer(model.train(), plan, config, torch.device("cpu"))
    batches = random_batches(*data, 4, 100)
    for step in range(1, steps + 1):
        trainer.set_lr(linear_decay(step, steps, steps // 2, 1e-3))
        trainer.step(next(batches))
    return model.eval()


def quality(args, work: Path) -> list[dict]:
    data, held = builtin_paired(256, 64, seed=0), builtin_paired(32, 64, seed=1)
    calibration, held_out = _images(data[0][: args.calibration]), (_images(held[0]), _images(held[1]))
    rows = []
    for name, plan in _plans({"ngf": 16, "n_blocks": 3}, 64).items():
        t0 = time.perf_counter()
        model = _train(plan, args.train_steps, data)
        print(f"quality: trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
        for precision in ("fp16", "int8"):
            bundle = export.export_bundle(model, work / f"q-{name}-{precision}", TARGETS, image_size=64,
                                          precision=precision, calibration=calibration, held_out=held_out)  # fmt: skip
            for key, q in bundle.manifest["quality"]["files"].items():
                if precision == "int8" or not key.endswith("int8"):
                    entry = bundle.manifest["files"][key]
                    rows.append({"model": name, "file": key, "precision": q["precision"], "l1": q["l1"],
                                 "psnr": q["psnr"], "psnr_loss_db": q.get("psnr_loss_db"),
                                 "fully_integer": entry.get("integer", {}).get("fully_integer")})  # fmt: skip
    unique = {(r["model"], r["file"]): r for r in rows}  # fp32 files appear in both bundles
    return list(unique.values())


def latency(args, work: Path) -> list[dict]:
    calibration = _images(builtin_paired(args.calibration, 256, seed=2)[0])
    files = []
    for name, plan in _plans({"ngf": 64, "n_blocks": 9}, 256).items():
        torch.manual_seed(0)
        model = compress.build_generator("resnet", plan).eval()
        for precision in ("fp16", "int8"):
            t0 = time.perf_counter()
            bundle = export.export_bundle(model, work / f"l-{name}-{precision}", TARGETS, image_size=256,
                                          precision=precision, calibration=calibration)  # fmt: skip
            print(f"latency: exported {name} {precision} in {time.perf_counter() - t0:.0f} s", flush=True)
            for key, entry in bundle.manifest["files"].items():
                if entry["precision"] != "fp32" or precision == "fp16":
                    files.append({"model": name, "file": key, "precision": entry["precision"],
                                  "runtime": entry["runtime"], "bundle": bundle,
                                  "xnnpack_partitions": entry.get("xnnpack_partitions"),
                                  "fully_integer": entry.get("integer", {}).get("fully_integer")})  # fmt: skip
        # int8 with InstanceNorm's 1/sqrt in float: XNNPACK's one partition against full integer
        bundle = export.export_bundle(model, work / f"l-{name}-int8-float-norm", ("tflite",), image_size=256,
                                      precision="int8", calibration=calibration, int8_norm="float")  # fmt: skip
        entry = bundle.manifest["files"]["tflite-int8"]
        files.append({"model": name, "file": "tflite-int8", "label": "tflite-int8 (float norm)", "precision": "int8",
                      "runtime": "tflite", "bundle": bundle, "xnnpack_partitions": entry["xnnpack_partitions"],
                      "fully_integer": entry["integer"]["fully_integer"]})  # fmt: skip
    runners = [f["bundle"].runner(f["file"], threads=args.threads) for f in files]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)
    samples: list[list[float]] = [[] for _ in files]
    for runner in runners:  # warm-up
        runner(x)
    for r in range(args.rounds):
        for i, runner in enumerate(runners):
            for _ in range(args.runs):
                t = time.perf_counter()
                runner(x)
                samples[i].append((time.perf_counter() - t) * 1e3)
        print(f"latency: round {r + 1}/{args.rounds}", flush=True)
    rows = []
    for f, s in zip(files, samples, strict=True):
        rows.append({k: v for k, v in f.items() if k != "bundle"} | {"median_ms": statistics.median(s), "n": len(s)})
    fp32 = {(r["model"], r["runtime"]): r["median_ms"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        r["vs_fp32"] = r["median_ms"] / fp32[(r["model"], r["runtime"])]
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-steps", type=int, default=800)
    p.add_argument("--calibration", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="precision-") as tmp:
        work = Path(tmp)
        lat = latency(args, work)
        qual = [] if args.skip_quality else quality(args, work)
    print(f"\n{'model':6} {'file':12} {'median ms':>10} {'x fp32':>7} {'XNNPACK':>8} {'integer':>8}")
    for r in lat:
        integer = "" if r["fully_integer"] is None else str(r["fully_integer"])
        print(f"{r['model']:6} {r.get('label', r['file']):12} {r['median_ms']:10.2f} {r['vs_fp32']:7.2f} "
              f"{r['xnnpack_partitions'] or '':>8} {integer:>8}")  # fmt: skip
    print(f"\n{'model':6} {'file':12} {'L1':>7} {'PSNR':>7} {'loss dB':>8}")
    for r in qual:
        loss = f"{r['psnr_loss_db']:+.3f}" if r["psnr_loss_db"] is not None else ""
        print(f"{r['model']:6} {r['file']:12} {r['l1']:7.4f} {r['psnr']:7.2f} {loss:>8}")
    record = {
        "latency": lat, "quality": qual, "args": vars(args), "elapsed_s": round(time.time() - started),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "tools": tool_versions(),
        "how": "host CPU; latency: interleaved rounds, median of all rounds; quality: built-in pix2pix task, "
        "32 held-out pairs, each file in its own runtime; one run",
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
