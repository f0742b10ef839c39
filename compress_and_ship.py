"""`compress-and-ship`: the pipeline command. It parses, builds a config, and runs one library
function per stage over the run directory; the work lives in those functions.

Stages: dense → search → slim → converge → export → bench → report. A stage whose inputs (its config
keys and the files it reads) are unchanged since it last finished, and whose outputs are still
the files it wrote, is skipped (`compress/runstate.py`); `--force` runs the selected stages
anyway. Ctrl-C leaves the run directory resumable: finished stages stay finished and an
interrupted search or converge continues from its last saved state.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

STAGES = ("dense", "search", "slim", "converge", "export", "bench", "report")
EXPORT_DIR = Path("export")  # the compressed generator's bundle
DENSE_EXPORT_DIR = Path("export_dense")  # the dense reference's bundle
STORE = Path("results.sqlite")
BENCH_RECORD = Path("bench.json")
REPORT_DIR = Path("site")  # DESIGN §1: the run directory's site/index.html
_KEPT = "finished stages are kept"
OS_ERROR_HINTS = {  # what to do about the disk errors a run meets; the run resumes where it stopped
    errno.ENOSPC: f"free some space and run the same command again ({_KEPT})",
    errno.EDQUOT: f"free some space and run the same command again ({_KEPT})",
    errno.EFBIG: f"the file system or a ulimit caps file sizes ({_KEPT})",
    errno.EROFS: "the run directory is read-only: pick a writable --run-dir",
    errno.EACCES: "you may not write there: pick a --run-dir of your own",
    errno.EPERM: "you may not write there: pick a --run-dir of your own",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compress-and-ship",
        description=(
            "Compress an image-to-image GAN generator with CoroNetGAN and ship it: import (or train)\n"
            "the dense reference, search a pruned channel plan that keeps the requested fraction of\n"
            "MACs while the GAN trains, build the slim generator, fine-tune it, export it (and the\n"
            "dense reference) to checked ONNX and TFLite files, time them on this host and/or phones\n"
            "over ADB, and write a report. Stages that are already complete and up to date are skipped.\n"
            "--init-from reads a generator you trained: a pytorch-CycleGAN-and-pix2pix state_dict\n"
            "(resnet_6blocks/9blocks, unet_128/256), gan-compression's teacher, or our checkpoint."
        ),
        epilog=(
            "Examples:\n"
            "  compress-and-ship configs/demo.toml --run-dir runs/demo\n"
            "  compress-and-ship configs/demo.toml --target-macs 0.1 --devices host,192.168.1.20:5555\n"
            "  compress-and-ship configs/demo.toml --from export --precision fp16\n"
            "  device-bench calibrate --config configs/demo.toml --runtime tflite --out lat.json\n"
            "  compress-and-ship configs/demo.toml --target-latency 1.5 --latency-model lat.json\n"
            "  compress-and-ship --init-from latest_net_G_A.pth --from export   # time your model as it is\n"
            "  compress-and-ship my.toml --init-from latest_net_G_A.pth --target-macs 0.1\n"
            "The report is RUN_DIR/site/index.html (open it in a browser; no server needed)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="TOML config (see configs/demo.toml); default: built-in demo settings")
    p.add_argument("--target-macs", type=float, help="fraction of the dense MACs to keep, e.g. 0.1 keeps 10%%")
    p.add_argument("--target-latency", type=float, metavar="MS",
                   help="a latency target instead: the slim model's median ms on the --latency-model's device, "
                   "runtime and threads (that device must be among --devices), predicted by the model and checked "
                   "by timing the searched plans there (--latency-timings)")  # fmt: skip
    p.add_argument(
        "--latency-model",
        metavar="FILE",
        help="the latency model the target is predicted with (device-bench calibrate --out FILE)",
    )
    p.add_argument("--latency-timings", type=int, metavar="N",
                   help="with --target-latency: time the searched plan on that device up to N times while searching "
                   "and re-aim by the model's error there (default 3; 0 stops on the prediction alone)")  # fmt: skip
    p.add_argument("--latency-margin", type=float, metavar="FRACTION",
                   help="with --target-latency: aim this fraction under the target, so the model's error does not "
                   "take the plan over it (default: the latency model's median error on its held-out plans, "
                   "at most 0.1; 0 aims at the target itself)")  # fmt: skip
    p.add_argument(
        "--init-from",
        metavar="FILE",
        help="your trained generator (official CycleGAN/pix2pix .pth, gan-compression teacher, or ours): the "
        "dense reference and the search's start; fills [model] when the config has none",
    )
    p.add_argument("--max-steps", type=int, help="give up the search after this many steps")
    p.add_argument("--round-to", type=int,
                   help="make every pruned width a multiple of N (8 suits phone CPUs; with --latency-model and no "
                   "--round-to, each group to the model's tile, finer for a group no wider than it)")  # fmt: skip
    p.add_argument("--allow-miss", action="store_true", help="keep the result even if the target is missed")
    p.add_argument("--image-size", type=int, help="export input size (default: the training size)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="a file per runtime in this precision beside the fp32 one: fp16, or int8 (full integer, "
                   "calibrated on training images); default fp32 only")  # fmt: skip
    p.add_argument("--layout", choices=("NCHW", "NHWC"), help="TFLite input/output layout (default NCHW)")
    p.add_argument(
        "--devices",
        help="comma-separated: 'host' (this CPU), phones as HOST:PORT (adb over TCP) or SERIAL (USB); default host",
    )
    p.add_argument("--runtimes", help="comma-separated runtimes to export and time: tflite, onnx, executorch "
                   "(the executorch extra); default tflite,onnx")  # fmt: skip
    p.add_argument("--binaries", help="folder of the arm64-v8a lab tools pushed to phones (default bench-binaries)")
    p.add_argument("--run-dir", default="runs/demo", help="where every stage writes its files (default: runs/demo)")
    p.add_argument("--from", dest="from_stage", choices=STAGES, default=STAGES[0], help="first stage to run")
    p.add_argument("--to", dest="to_stage", choices=STAGES, default=STAGES[-1], help="last stage to run")
    p.add_argument("--force", action="store_true", help="run the selected stages even when up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, dict]:
    sections: dict[str, dict[str, Any]] = {"search": {}, "export": {}, "bench": {}}
    for section, key, value in (
        ("search", "target_macs", args.target_macs),
        ("search", "target_latency_ms", args.target_latency),
        ("search", "latency_model", args.latency_model),
        ("search", "latency_timings", args.latency_timings),
        ("search", "latency_margin", args.latency_margin),
        ("search", "init_from", args.init_from),
        ("search", "max_steps", args.max_steps),
        ("search", "round_to", args.round_to),
        ("search", "allow_miss", True if args.allow_miss else None),
        ("export", "image_size", args.image_size),
        ("export", "precision", args.precision),
        ("export", "layout", args.layout),
        ("bench", "devices", args.devices and [d.strip() for d in args.devices.split(",") if d.strip()]),
        ("bench", "runtimes", args.runtimes and [r.strip() for r in args.runtimes.split(",") if r.strip()]),
        ("bench", "binaries", args.binaries),
    ):
        if value is not None:
            sections[section][key] = value
    return {name: values for name, values in sections.items() if values}


# --- what each stage reads (its fingerprint) ----------------------------------------------------
def _stage_inputs(stage: str, config, run_dir: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    from compress.stages import (
        CONVERGED_CHECKPOINT,
        DENSE_CHECKPOINT,
        GAN_STATE,
        HYPER_CHECKPOINT,
        SLIM_CHECKPOINT,
        converge_inputs,
        dense_inputs,
        search_inputs,
    )

    dense_sources = {k: Path(v) for k, v in (("init_from", config.search.init_from),
                                              ("teacher", config.train.teacher)) if v}  # fmt: skip
    if stage == "dense":
        return dense_inputs(config), dense_sources
    if stage == "search":
        files = {"init_from": Path(config.search.init_from)} if config.search.init_from else {}
        return search_inputs(config), files
    if stage == "slim":
        return {}, {"hyper": run_dir / HYPER_CHECKPOINT}
    if stage == "converge":
        files = {"slim": run_dir / SLIM_CHECKPOINT, "gan": run_dir / GAN_STATE, **dense_sources}
        return converge_inputs(config), files
    if stage == "export":
        files = {"converged": run_dir / CONVERGED_CHECKPOINT, "dense": run_dir / DENSE_CHECKPOINT}
        if config.search.latency_model:  # the predictions it records
            files["latency_model"] = Path(config.search.latency_model).expanduser()
        return {"export": asdict(config.export), "target_latency_ms": config.search.target_latency_ms}, files
    if stage == "bench":
        return {"bench": asdict(config.bench)}, _manifests(run_dir)
    names = ("converge.json", "dense.json", "search_log.jsonl", str(BENCH_RECORD))
    files = {name: run_dir / name for name in names}
    target = {"target": config.search.target_macs, "target_latency_ms": config.search.target_latency_ms}
    return target, {**files, **_manifests(run_dir)}


def _manifests(run_dir: Path) -> dict[str, Path]:
    return {str(d): run_dir / d / "manifest.json" for d in (EXPORT_DIR, DENSE_EXPORT_DIR)}


def _bundle_files(run_dir: Path, folder: Path) -> list[Path]:
    return sorted(p for p in (run_dir / folder).iterdir() if p.is_file() and not p.name.startswith("."))


# --- the stages: each returns (one-line outcome, the files it wrote) ---------------------------------
def _dense(config, run_dir: Path, progress: bool) -> tuple[str, list[Path]]:
    from compress.stages import DENSE_CHECKPOINT, dense_stage

    record = dense_stage(config, run_dir, progress=progress)
    paired = record["quality"]["paired"]
    quality = f"; held-out L1 {paired['l1']:.4f}, PSNR {paired['psnr']:.2f} dB" if paired else ""
    what = record["source"] or "untrained (MACs and latency only)"
    return f"{what}{quality}", [run_dir / DENSE_CHECKPOINT, run_dir / "dense.json"]


def _search(config, run_dir: Path, progress: bool) -> tuple[str, list[Path]]:
    from compress.latency import STALE_SPEED
    from compress.stages import GAN_STATE, HYPER_CHECKPOINT, search_stage

    result = search_stage(config, run_dir, progress=progress)
    line = (f"reached MACs ratio {result.ratio:.4f} (target {config.search.target_macs}, "
            f"tolerance {config.search.tolerance}) in {result.steps} steps")  # fmt: skip
    if result.predicted_ms is not None:
        target = config.search.target_latency_ms
        aimed = f", aimed at {result.aim_ms:.3g}" if result.aim_ms is not None and result.aim_ms < target else ""
        line = (f"reached a predicted {result.predicted_ms:.3g} ms (target {target:g} ms{aimed}) "
                f"in {result.steps} steps, MACs ratio {result.ratio:.4f}")  # fmt: skip
        if result.latency_checks:
            timed = ", ".join(f"{c['raw_ms']:.3g}" for c in result.latency_checks)
            line += f"; timed on the device along the way: {timed} ms"
            speed = result.latency_checks[-1]["speed"]  # the median over all the search's checks
            if abs(speed - 1) > STALE_SPEED:
                line += (f"; the device ran {abs(1 - speed):.0%} {'faster' if speed < 1 else 'slower'} than when the "
                         "latency model was calibrated (its reference plans), and the checks judged the plans at that "
                         "speed: if it lasts, calibrate again (device-bench calibrate)")  # fmt: skip
    if result.widened_floor is not None:
        line += (f"; the stop window widened down to {result.widened_floor:.4f}: every block of channels left cost "
                 "more than the tolerance, and the search took the one landing highest under the target (a smaller "
                 "--round-to lands closer)")  # fmt: skip
    if result.resumed_from:
        line += f", resumed from step {result.resumed_from}"
    outputs = [run_dir / HYPER_CHECKPOINT, run_dir / GAN_STATE, run_dir / "search.json", run_dir / "search_log.jsonl"]
    return line, outputs


def _gmacs(n: int) -> str:
    return f"{n / 1e9:.3f} G"


def _slim(config, run_dir: Path, progress: bool) -> tuple[str, list[Path]]:
    from compress.stages import SLIM_CHECKPOINT, slim_stage

    slim = slim_stage(run_dir)
    print("channel plan (kept/full):")
    print(slim.plan.describe(slim.full_plan))
    print(f"{'':14}{'dense':>12}{'slim':>12}{'ratio':>8}")
    for label, key in (("MACs", "macs"), ("true MACs", "true_macs"), ("params", "params")):
        dense, small = getattr(slim.full_macs, key), getattr(slim.macs, key)
        fmt = _gmacs if key != "params" else (lambda n: f"{n / 1e6:.3f} M")
        print(f"{label:<14}{fmt(dense):>12}{fmt(small):>12}{small / dense:>8.3f}")
    line = (f"wrote {slim.path}: {slim.macs.macs / slim.full_macs.macs:.3f} of the dense MACs; "
            f"max |slim - hyper| = {slim.max_abs_diff:.2e}")  # fmt: skip
    return line, [run_dir / SLIM_CHECKPOINT, run_dir / "slim.json"]


def _converge(config, run_dir: Path, progress: bool) -> tuple[str, list[Path]]:
    from compress.stages import CONVERGED_CHECKPOINT, converge_stage

    done = converge_stage(run_dir, progress=progress, config=config)
    quality = f"; held-out L1 {done.paired['l1']:.4f}, PSNR {done.paired['psnr']:.2f} dB" if done.paired else ""
    outputs = [run_dir / CONVERGED_CHECKPOINT, run_dir / "converge.json", run_dir / "converge_log.jsonl"]
    return f"{done.steps} steps{quality}", outputs


def _export(config, run_dir: Path, progress: bool) -> tuple[str, list[Path]]:
    from compress.errors import CheckpointError
    from compress.stages import (
        CONVERGED_CHECKPOINT,
        DENSE_CHECKPOINT,
        dense_source,
        export_images,
        export_shape,
        latency_budget,
    )
    from export import export_bundle
    from export.bundle import TARGET_PRECISIONS

    e = config.export
    options: dict[str, Any] = {
        "targets": tuple(t for t in TARGET_PRECISIONS if t in e.targets),  # the bundle's own order of files
        "image_size": e.image_size or None,
        "precision": e.precision,
        "layout": e.layout,
        "progress": progress,
        "quality_budget_db": e.quality_budget_db,
        "int8_io": e.int8_io,
        "int8_norm": e.int8_norm,
        "sample_images": e.sample_images,
    }
    options["calibration"], options["held_out"] = export_images(config, export_shape(config))
    budget = latency_budget(config)
    if budget is not None:  # each bundle records its predicted latency, for the report to check
        options["latency_model"] = budget.model
    compressed, dense = run_dir / CONVERGED_CHECKPOINT, run_dir / DENSE_CHECKPOINT
    if not compressed.is_file() and not dense_source(config):
        raise CheckpointError(f"{compressed} does not exist; run the stages before export (--from search)")
    if e.dense_reference and not dense.is_file():
        raise CheckpointError(f"{dense} does not exist; run the dense stage first (--from dense)")
    lines, outputs = [], []
    if compressed.is_file():
        target = {"target_ms": budget.target_ms} if budget is not None else {}
        bundle = export_bundle(compressed, run_dir / EXPORT_DIR, name="compressed", **options, **target)
        outputs += _bundle_files(run_dir, EXPORT_DIR)
        lines.append(f"wrote {bundle.path}/ ({_export_summary(bundle.manifest)})")
    else:
        lines.append("no compressed model yet (the search has not run)")
    if e.dense_reference:
        export_bundle(dense, run_dir / DENSE_EXPORT_DIR, name="dense", **options)
        outputs += _bundle_files(run_dir, DENSE_EXPORT_DIR)
        lines.append(f"the dense reference {run_dir / DENSE_EXPORT_DIR}/")
    return " and ".join(lines), outputs


def _export_summary(manifest: dict[str, Any]) -> str:
    """One clause per file: its parity, and for lower precisions their loss on the task."""
    quality = manifest.get("quality", {}).get("files", {})
    parts = []
    for key, entry in manifest["files"].items():
        parity = manifest["parity"][key]
        text = f"{key} parity {parity[parity.get('judged_by', 'max_abs')]:.1e}"
        if "xnnpack_partitions" in entry:
            text += f", XNNPACK partitions {entry['xnnpack_partitions']}"
        if "integer" in entry and not entry["integer"]["fully_integer"]:
            text += ", not fully integer"
        loss = quality.get(key, {}).get("psnr_loss_db")
        if loss is not None:
            text += f", {loss:+.2f} dB PSNR lost" + (" (over budget)" if quality[key]["over_budget"] else "")
        parts.append(text)
    return "; ".join(parts)


def _bench(config, run_dir: Path, progress: bool) -> tuple[str, list[Path]]:
    from compress.stages import write_json
    from device_bench.suite import SuiteSettings, bench_bundles

    b = config.bench
    settings = SuiteSettings(b.threads, b.runs, b.warmup_s, b.warmup, b.cluster, Path(b.binaries), b.profile)
    bundles = [run_dir / d for d in (EXPORT_DIR, DENSE_EXPORT_DIR) if (run_dir / d).is_dir()]
    from tqdm import tqdm

    from coronet.bundle import Bundle

    files = sum(len(Bundle.open(d, verify=False).precisions(r)) or 1 for d in bundles for r in b.runtimes)
    total = files * len(b.devices)
    with tqdm(total=total, desc="bench", disable=None if progress else True, leave=False) as bar:

        def advance(line: str) -> None:
            bar.set_postfix_str(line)
            bar.update(1)

        done = bench_bundles(bundles, b.devices, b.runtimes, run_dir / STORE, settings, progress=advance)
    keys = ("model_sha256", "device", "runtime", "delegate", "flags")
    record = [{"job": job, **{k: getattr(r, k) for k in keys}, "median_ms": r.stats.median_ms} for job, r in done]
    write_json(run_dir / BENCH_RECORD, {"results": record, "settings": asdict(b)})
    return f"{len(done)} results on {', '.join(b.devices)} in {run_dir / STORE}", [run_dir / BENCH_RECORD]


def _results_kept(run_dir: Path) -> bool:
    """The bench stage's results live in the store, not in files of their own: it is done only
    while the store still holds the results it recorded."""
    import json

    from device_bench.store import ResultStore

    if not (run_dir / STORE).is_file():
        return False
    wanted = {r["job"] for r in json.loads((run_dir / BENCH_RECORD).read_text())["results"]}
    with ResultStore(run_dir / STORE) as store:
        done = {job["id"] for job in store.jobs("done")}
    return wanted <= done


def report_data(config, run_dir: Path):
    """The run's report tables (the report stage's, and the summary table's)."""
    import json

    from reports import build_report

    quality = {}
    for name, file in (("compressed", "converge.json"), ("dense", "dense.json")):
        if (run_dir / file).is_file():
            quality[name] = json.loads((run_dir / file).read_text()).get("quality")
    bundles = [run_dir / d for d in (EXPORT_DIR, DENSE_EXPORT_DIR) if (run_dir / d / "manifest.json").is_file()]
    s = config.search
    title, target = f"CoroNet report: {config.model.arch} at {s.target_macs:.0%} of the dense MACs", s.target_macs
    if s.latency_model:  # the search plot's MACs line has no target then; the predictions table has it
        title, target = f"CoroNet report: {config.model.arch} at a target of {s.target_latency_ms:g} ms", None
    if not (run_dir / EXPORT_DIR / "manifest.json").is_file():  # --from export on a generator as it is
        title = f"CoroNet report: the {config.model.arch} generator as it is (no compressed model yet)"
    return build_report(run_dir / STORE, bundles, quality, run_dir / "search_log.jsonl", target,
                        title=title)  # fmt: skip


def _report(config, run_dir: Path, progress: bool) -> tuple[str, list[Path]]:
    from reports import render_site

    index = render_site(report_data(config, run_dir), run_dir / REPORT_DIR)
    return f"wrote {index}", [index]


RUNNERS: dict[str, Callable[[Any, Path, bool], tuple[str, list[Path]]]] = {
    "dense": _dense, "search": _search, "slim": _slim, "converge": _converge, "export": _export, "bench": _bench,
    "report": _report,
}  # fmt: skip


def _with_needed_stages(selected: tuple[str, ...], config) -> tuple[str, ...]:
    """The export needs the dense reference: when the dense stage is not selected but trains
    nothing (an imported or untrained reference), it runs too (it is skipped when up to date).
    So `--init-from FILE --from export` exports, benches and reports that file, training nothing."""
    from compress.stages import dense_source

    cheap = bool(dense_source(config)) or config.train.dense_steps == 0
    if "export" in selected and "dense" not in selected and config.export.dense_reference and cheap:
        return ("dense", *selected)
    return selected


def _trains(stage: str, config) -> bool:
    """Whether `stage` trains (under torchrun every rank runs it; the others run on rank 0 only)."""
    from compress.stages import dense_source

    if stage == "dense":
        return not dense_source(config) and config.train.dense_steps > 0
    return stage in ("search", "converge")


def _train_on_this_rank(stage: str, config, run_dir: Path) -> None:
    """A training stage as the ranks other than 0 run it: the same training, no files, no output."""
    from compress.stages import converge_stage, dense_stage, search_stage

    if stage == "dense":
        dense_stage(config, run_dir, progress=False)
    elif stage == "search":
        search_stage(config, run_dir, progress=False)
    else:
        converge_stage(run_dir, progress=False, config=config)


def _run_stages(selected: tuple[str, ...], config, run_dir: Path, args: argparse.Namespace) -> None:
    """Run (or skip, when up to date) each selected stage. Under torchrun rank 0 decides what is
    up to date and alone writes stamps and prints; a stage's error on any rank stops every rank
    with that rank's message, after the stage."""
    from compress import distributed
    from compress.errors import CoronetError
    from compress.runstate import fingerprint, up_to_date, write_stamp

    main_rank = distributed.current().is_main
    for stage in selected:
        todo = None
        if main_rank:
            inputs, files = _stage_inputs(stage, config, run_dir)
            print_ = fingerprint(inputs, files)
            stamp = None if args.force else up_to_date(run_dir, stage, print_)
            if stamp is not None and (stage != "bench" or _results_kept(run_dir)):
                print(f"[{stage}] up to date: {stamp.summary}")
            else:
                todo = print_
        todo = distributed.from_main(todo)
        if todo is None:
            continue
        t0, error = time.perf_counter(), None
        try:
            if main_rank:
                line, outputs = RUNNERS[stage](config, run_dir, not args.quiet)
            elif _trains(stage, config):
                _train_on_this_rank(stage, config, run_dir)
        except CoronetError as exc:
            error = str(exc)
        error = distributed.first_error(error)
        if error:
            raise CoronetError(error)
        if main_rank:
            write_stamp(run_dir, stage, todo, outputs, line)
            print(f"[{stage}] {line} ({time.perf_counter() - t0:.1f} s)", flush=True)


def _start_ranks(config) -> None:
    """Under torchrun: join the process group (gloo on CPUs, NCCL on GPUs), and let the first
    Ctrl-C interrupt while later signals wait for the interrupted stage to save its state."""
    from compress import distributed

    if distributed.launched():
        from compress.stages import training_device

        distributed.init_from_env(training_device(config))
        distributed.stop_once_on_signals()
        if not distributed.current().is_main:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 alone prints; closed at exit


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("compress-and-ship: error: compressing needs torch: pip install 'coronetgan[compress]' "
              "(a lab host that only benchmarks needs device-bench alone)", file=sys.stderr)  # fmt: skip
        return 1
    from compress import distributed
    from compress.config import load_config
    from compress.errors import CoronetError

    run_dir = Path(args.run_dir)
    selected = STAGES[STAGES.index(args.from_stage) : STAGES.index(args.to_stage) + 1]
    if not selected:
        print("compress-and-ship: error: --from comes after --to; pick a stage range in order", file=sys.stderr)
        return 2
    if run_dir.exists() and not run_dir.is_dir():
        print(f"compress-and-ship: error: --run-dir {run_dir} is a file; pass a folder", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, _overrides(args))
        from compress.stages import preflight

        preflight(config)
        _start_ranks(config)
        if config.model.read_from:
            sizes = ", ".join(f"{k} {v}" for k, v in config.model.sizes.items())
            print(f"[model] {config.model.arch} ({sizes}), read from {config.model.read_from}")
        selected = _with_needed_stages(selected, config)
        _run_stages(selected, config, run_dir, args)
        if "report" in selected and distributed.current().is_main:
            from reports import summary_table

            table = summary_table(report_data(config, run_dir))
            print("\nsummary (latency: median ms):")
            print(table.rename_axis(None).to_string(float_format=lambda v: f"{v:.4g}", na_rep="-"))
            print(f"\nreport: {(run_dir / REPORT_DIR / 'index.html').resolve()}")
    except CoronetError as exc:
        distributed.report_error(str(exc))
        if distributed.current().is_main:  # under torchrun every rank holds the same message
            print(f"compress-and-ship: error: {exc}", file=sys.stderr)
        distributed.finish()
        return 1
    except OSError as exc:  # the disk or the file system: full, read-only, a folder that is a file
        where = f" ({exc.filename})" if exc.filename else ""
        hint = OS_ERROR_HINTS.get(exc.errno or 0, _KEPT)
        print(f"compress-and-ship: error: {exc.strerror or exc}{where}; {hint}", file=sys.stderr)
        distributed.finish(clean=False)
        return 1
    except KeyboardInterrupt:
        if distributed.current().is_main:
            print("compress-and-ship: interrupted; finished stages are kept in the run directory", file=sys.stderr)
        distributed.finish(clean=False)
        return 130
    except RuntimeError as exc:  # under torchrun: another rank is gone (interrupted, killed, crashed)
        if not distributed.launched() or not _lost_peer(exc):
            raise
        message = (f"rank {distributed.current().rank} lost the other ranks ({_first_line(exc)}); finished stages "
                   "are kept in the run directory; run again to resume")  # fmt: skip
        distributed.report_error(message)
        print(f"compress-and-ship: error: {message}", file=sys.stderr)
        distributed.finish(clean=False)
        return 1
    distributed.finish()
    return 0


def _lost_peer(exc: RuntimeError) -> bool:
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(w in text for w in ("connection", "gloo", "nccl", "peer"))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


if __name__ == "__main__":
    sys.exit(main())
