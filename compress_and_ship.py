"""`compress-and-ship`: the pipeline command. It parses, builds a config, calls one library
function per stage and prints; the work lives in the stage functions.

Stages so far: search → slim → converge → export. The device bench and reports join as they land.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STAGES = ("search", "slim", "converge", "export")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compress-and-ship",
        description=(
            "Compress an image-to-image GAN generator with CoroNetGAN: search a pruned channel "
            "plan that keeps the requested fraction of MACs while the GAN trains, build the slim "
            "generator, fine-tune it, and export it to checked ONNX and TFLite files."
        ),
        epilog="Example: compress-and-ship configs/demo.toml --target-macs 0.25 --run-dir runs/demo",
    )
    p.add_argument("config", nargs="?", help="TOML config (see configs/demo.toml); default: built-in demo settings")
    p.add_argument("--target-macs", type=float, help="fraction of the dense MACs to keep, e.g. 0.1 keeps 10%%")
    p.add_argument("--max-steps", type=int, help="give up the search after this many steps")
    p.add_argument("--round-to", type=int, help="make every pruned width a multiple of N (8 suits phone CPUs)")
    p.add_argument("--image-size", type=int, help="export input size (default: the training size)")
    p.add_argument(
        "--precision", choices=("fp32", "fp16", "int8"), default="fp32", help="TFLite weights (default fp32)"
    )
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW", help="TFLite input/output layout")
    p.add_argument("--allow-miss", action="store_true", help="keep the result even if the target is missed")
    p.add_argument("--run-dir", default="runs/demo", help="where every stage writes its files (default: runs/demo)")
    p.add_argument("--from", dest="from_stage", choices=STAGES, default=STAGES[0], help="first stage to run")
    p.add_argument("--to", dest="to_stage", choices=STAGES, default=STAGES[-1], help="last stage to run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    search = {}
    if args.target_macs is not None:
        search["target_macs"] = args.target_macs
    if args.max_steps is not None:
        search["max_steps"] = args.max_steps
    if args.allow_miss:
        search["allow_miss"] = True
    if args.round_to is not None:
        search["round_to"] = args.round_to
    return {"search": search} if search else {}


def _gmacs(n: int) -> str:
    return f"{n / 1e9:.3f} G"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from compress.config import load_config
    from compress.errors import CoronetError
    from compress.stages import CONVERGED_CHECKPOINT, converge_stage, search_stage, slim_stage

    run_dir = Path(args.run_dir)
    selected = STAGES[STAGES.index(args.from_stage) : STAGES.index(args.to_stage) + 1]
    if not selected:
        print("compress-and-ship: error: --from comes after --to; pick a stage range in order", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, _overrides(args))
        if "search" in selected:
            t0 = time.perf_counter()
            result = search_stage(config, run_dir, progress=not args.quiet)
            print(
                f"[search] reached MACs ratio {result.ratio:.4f} (target {config.search.target_macs}, "
                f"tolerance {config.search.tolerance}) in {result.steps} steps, {time.perf_counter() - t0:.1f} s"
            )
        if "slim" in selected:
            slim = slim_stage(run_dir)
            print(f"[slim]   wrote {slim.path}; max |slim - hyper| = {slim.max_abs_diff:.2e}")
            print("channel plan (kept/full):")
            print(slim.plan.describe(slim.full_plan))
            print(f"{'':14}{'dense':>12}{'slim':>12}{'ratio':>8}")
            for label, key in (("MACs", "macs"), ("true MACs", "true_macs"), ("params", "params")):
                dense, small = getattr(slim.full_macs, key), getattr(slim.macs, key)
                fmt = _gmacs if key != "params" else (lambda n: f"{n / 1e6:.3f} M")
                print(f"{label:<14}{fmt(dense):>12}{fmt(small):>12}{small / dense:>8.3f}")
        if "converge" in selected:
            t0 = time.perf_counter()
            done = converge_stage(run_dir, progress=not args.quiet)
            quality = f"; held-out L1 {done.paired['l1']:.4f}, PSNR {done.paired['psnr']:.2f} dB" if done.paired else ""
            print(f"[converge] {done.steps} steps{quality}, {time.perf_counter() - t0:.1f} s")
        if "export" in selected:
            from export import export_bundle

            t0 = time.perf_counter()
            bundle = export_bundle(
                run_dir / CONVERGED_CHECKPOINT,
                run_dir / "export",
                image_size=args.image_size,
                precision=args.precision,
                layout=args.layout,
                progress=not args.quiet,
            )
            checks = ", ".join(f"{rt} parity {bundle.manifest['parity'][rt]['max_abs']:.1e}" for rt in bundle.runtimes)
            partitions = bundle.manifest["files"]["tflite"]["xnnpack_partitions"]
            print(
                f"[export] wrote {bundle.path}/ ({checks}; XNNPACK partitions {partitions}) "
                f"in {time.perf_counter() - t0:.1f} s"
            )
    except CoronetError as exc:
        print(f"compress-and-ship: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("compress-and-ship: interrupted; finished stages are kept in the run directory", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
