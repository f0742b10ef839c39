"""`device-bench`: latency of exported bundles on the lab's phones (over ADB) or on this host.

device-bench devices --device 192.168.1.20:5555
device-bench run --device host --bundle runs/demo/export --runtime tflite --threads 2
device-bench run --device 127.0.0.1:5555 --bundle DIR --runtime onnx --delegate cpu --binaries CACHE
device-bench report --store bench.db --out site/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="device-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("devices", help="connect to devices and print their profiles")
    d.add_argument(
        "--device",
        action="append",
        default=[],
        help="HOST:PORT or SERIAL of a phone (repeatable); USB phones are found",
    )
    d.add_argument("--store", default="bench.db", help="results store; its known devices are listed too")
    r = sub.add_parser("run", help="benchmark one bundle on one device and store the result")
    r.add_argument(
        "--device", default="host", help="'host' (this CPU), HOST:PORT (adb over TCP) or SERIAL (USB) of a phone"
    )
    r.add_argument("--bundle", required=True, help="an export bundle folder (with manifest.json)")
    r.add_argument("--runtime", choices=("tflite", "onnx"), default="tflite")
    r.add_argument("--delegate", default=None, help="tflite: xnnpack|cpu|gpu|nnapi|external:PATH; onnx: cpu|nnapi|qnn")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--cluster", choices=("little", "big", "prime"), default="big")
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--runs", type=int, default=20)
    r.add_argument("--binaries", default="bench-binaries", help="folder with the arm64-v8a tools to push")
    r.add_argument("--store", default="bench.db", help="SQLite results store (default bench.db)")
    rep = sub.add_parser("report", help="render the results store as a static HTML report")
    rep.add_argument("--store", default="bench.db", help="SQLite results store (default bench.db)")
    rep.add_argument("--out", default="site", help="folder to write (replaced whole); open OUT/index.html")
    rep.add_argument("--bundle", action="append", default=[], help="bundle folders to show (default: all in the store)")
    return p


def _report(args) -> int:
    from compress.errors import ConfigError
    from reports import build_report, render_site

    if not Path(args.store).is_file():
        raise ConfigError(f"results store {args.store} does not exist; run `device-bench run` first or pass --store")
    missing = [b for b in args.bundle if not (Path(b) / "manifest.json").is_file()]
    if missing:
        raise ConfigError(f"{missing[0]} is not an export bundle (no manifest.json)")
    data = build_report(Path(args.store), [Path(b) for b in args.bundle], title=f"CoroNet results: {args.store}")
    index = render_site(data, Path(args.out))
    print(f"{len(data.models)} models, {len(data.latency)} results, {len(data.failures)} failed jobs: {index}")
    return 0


def _devices(args) -> int:
    from device_bench.adb import AdbTransport, DeviceError, list_usb_devices
    from device_bench.run import detect_profile
    from device_bench.store import ResultStore

    try:
        attached = list_usb_devices()
        print("usb: " + (", ".join(attached) if attached else "no phones attached"))
    except DeviceError as exc:  # USB discovery is a convenience: TCP phones still work
        attached = []
        print(f"usb: not available ({exc.reason})")
    for serial in dict.fromkeys([*args.device, *attached]):
        with AdbTransport(serial) as t:
            profile = detect_profile(t)
        clusters = ", ".join(f"cpus {c.mask} @ {c.max_khz / 1e6:.2f} GHz" for c in profile.clusters)
        known = "known" if profile.known else "unknown chip"
        print(f"{serial}  {profile.model}  {profile.soc} ({known})  {clusters}")
    if Path(args.store).is_file():
        with ResultStore(args.store) as store:
            seen = sorted({r.device for r in store.results()})
        print("in the store: " + (", ".join(seen) if seen else "no results yet"))
    return 0


def _run(args) -> int:
    from device_bench.store import ResultStore
    from export.bundle import Bundle

    delegate = args.delegate or ("xnnpack" if args.runtime == "tflite" else "cpu")
    args.bundle = str(Path(args.bundle).resolve())  # the store outlives this working directory
    Bundle.open(args.bundle)  # a clear error for an incomplete bundle, before anything is queued
    with ResultStore(args.store) as store:
        job_id = store.add_job({**vars(args), "delegate": delegate})
        try:
            if args.device == "host":
                from device_bench.host import run_host_benchmark

                result = run_host_benchmark(Bundle.open(args.bundle), args.runtime, args.threads, args.runs)
            else:
                from device_bench.adb import AdbTransport
                from device_bench.run import BenchJob, run_job

                job = BenchJob(Path(args.bundle), args.device, args.runtime, delegate, args.threads, args.cluster,
                               args.warmup, args.runs)  # fmt: skip
                with AdbTransport(args.device) as t:
                    result = run_job(job, t, Path(args.binaries))
        except BaseException as exc:
            store.fail(job_id, str(exc) or type(exc).__name__)
            raise
        store.finish(job_id, result)
    s = result.stats
    p95 = f"{s.p95_ms:.2f}" if s.p95_ms is not None else "n/a"
    flags = f"  flags: {', '.join(result.flags)}" if result.flags else ""
    print(f"{result.device} {result.runtime}/{result.delegate} x{result.threads}: median {s.median_ms:.2f} ms, "
          f"p95 {p95} ms, min {s.min_ms:.2f} ms, n={s.n}{flags}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from compress.errors import CoronetError

    try:
        commands = {"devices": _devices, "run": _run, "report": _report}
        return commands[args.command](args)
    except CoronetError as exc:
        print(f"device-bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("device-bench: interrupted; the job is stored as failed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
