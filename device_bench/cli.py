"""`device-bench`: latency of exported bundles on the lab's phones (over ADB) or on this host.

device-bench devices --device 192.168.1.20:5555
device-bench run --device host --bundle runs/demo/export --runtime tflite --threads 2
device-bench run --device 127.0.0.1:5555 --bundle DIR --runtime onnx --delegate cpu --binaries CACHE
device-bench report --store bench.db --out site/
device-bench calibrate --config configs/demo.toml --device host --runtime tflite --threads 2 --out lat.json

The lab (one service, one agent per host with phones, nightly runs from cron):
device-bench serve --store lab.db --host 0.0.0.0 --token-file ~/.config/coronet/token
device-bench agent --server http://LAB:8750 --token-file TOKEN --device host --device 192.168.1.20:5555
device-bench submit --server http://LAB:8750 --token-file TOKEN --bundle runs/demo/export --device 192.168.1.20:5555
device-bench nightly --plan configs/lab.toml
device-bench calibrate --server http://LAB:8750 --token-file TOKEN --device 192.168.1.20:5555 --out lat.json
On one machine, --store DB instead of --server URL: the agent and submit use the store directly.
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
    r.add_argument("--runtime", choices=("tflite", "onnx", "executorch"), default="tflite",
                   help="phones: benchmark_model, onnxruntime_perf_test, executor_runner from --binaries")  # fmt: skip
    r.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="which of the bundle's files of that runtime (export --precision)")  # fmt: skip
    r.add_argument("--delegate", default=None, help="tflite: xnnpack|cpu|gpu|nnapi|external:PATH; onnx: cpu|nnapi|qnn")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--cluster", choices=("little", "big", "prime"), default="big")
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--runs", type=int, default=20)
    r.add_argument("--binaries", default="bench-binaries", help="folder with the arm64-v8a tools to push")
    r.add_argument("--store", default="bench.db", help="SQLite results store (default bench.db)")
    r.add_argument("--profile", action="store_true",
                   help="also record each op's time (phones: the tool's op profiler, whose cost the timed runs then "
                   "carry; host: ONNX Runtime's profiler, LiteRT ops timed alone, after the timed runs); the report's "
                   "ops page lays them per layer")  # fmt: skip

    def queue_args(q: argparse.ArgumentParser, plan: bool = False) -> None:
        where = q.add_mutually_exclusive_group(required=not plan)
        where.add_argument("--server", help="URL of `device-bench serve` (e.g. http://lab:8750)")
        where.add_argument("--store", help="a local results store instead of a service (one machine)")
        q.add_argument("--token-file", help="file holding the service's token (default: $DEVICE_BENCH_TOKEN)")

    sv = sub.add_parser("serve", help="serve the results store and its job queue over HTTP (token auth)")
    sv.add_argument("--store", default="lab.db", help="SQLite results store (default lab.db)")
    sv.add_argument("--data", default=None, help="folder for uploaded bundles (default: STORE's name + -data)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for a lab)")
    sv.add_argument("--port", type=int, default=8750, help="port (default 8750; 0 picks a free one)")
    sv.add_argument("--token-file", help="file with the token (default: $DEVICE_BENCH_TOKEN, else a new one in DATA)")
    sv.add_argument(
        "--agents",
        help="TOML of agent accounts (name, token, devices): each agent is who its token "
        "says and leases only its own devices' jobs (see device_bench/lab.py load_agents)",
    )
    sv.add_argument("--verbose", action="store_true", help="log every request")
    a = sub.add_parser("agent", help="lease queued jobs for this host's devices and run them")
    queue_args(a)
    a.add_argument("--device", action="append", required=True, help="'host' or a phone this host owns (repeatable)")
    a.add_argument("--name", default=None, help="agent name (default HOSTNAME-PID)")
    a.add_argument("--lease-s", type=float, default=120.0, help="lease length; renewed every third of it")
    a.add_argument("--poll-s", type=float, default=5.0, help="wait between polls of an empty queue")
    a.add_argument("--binaries", default="bench-binaries", help="folder with the arm64-v8a tools to push")
    a.add_argument("--cache", default=None, help="where downloaded bundles are kept (default ~/.cache/coronet/bundles)")
    a.add_argument("--once", action="store_true", help="exit when no job is queued for these devices")
    a.add_argument("--external-delegate", action="append", default=[], metavar="NAME=PATH",
                   help="allow jobs to ask for delegate external:NAME, the library at PATH on this host's phones "
                   "(repeatable; jobs name delegates, never paths)")  # fmt: skip
    su = sub.add_parser("submit", help="queue one bundle on devices × runtimes")
    queue_args(su)
    su.add_argument("--bundle", required=True, help="an export bundle folder (uploaded to the service)")
    su.add_argument("--device", action="append", required=True, help="device to run on (repeatable)")
    su.add_argument("--runtime", action="append", default=None, help="tflite[/DELEGATE] or onnx[/EP] (repeatable)")
    su.add_argument("--threads", type=int, default=1)
    su.add_argument("--runs", type=int, default=20)
    su.add_argument("--tag", default="", help="a label for the jobs (nightly uses 'nightly YYYY-MM-DD')")
    su.add_argument("--profile", action="store_true", help="also record each op's time (see run --profile)")
    n = sub.add_parser("nightly", help="queue tonight's matrix of a lab plan (run it from cron)")
    queue_args(n, plan=True)
    n.add_argument("--plan", required=True, help="the lab plan (see configs/lab.toml)")
    n.add_argument("--date", default=None, help="the night to queue (default today, UTC); queued once per night")
    ca = sub.add_parser("calibrate", help="measure a latency model of a generator on one device and runtime",
                        description="Time the dense plan and random pruned plans of the config's generator on the "
                        "device (each exported and run as an ordinary bench job), fit a latency model and write it: "
                        "search.latency_model / --latency-model then drive the search by milliseconds.")  # fmt: skip
    ca.add_argument("--config", default=None, help="the run config whose [model] (and image size) to calibrate for "
                    "(default: the built-in defaults)")  # fmt: skip
    ca.add_argument("--device", default="host", help="'host' or a phone (HOST:PORT, SERIAL)")
    ca.add_argument("--runtime", choices=("tflite", "onnx", "executorch"), default="tflite")
    ca.add_argument("--delegate", default="", help="default: the runtime's (xnnpack for tflite, cpu for onnx)")
    ca.add_argument("--threads", type=int, default=1)
    ca.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    ca.add_argument("--image-size", type=int, default=None, help="default: the config's export/data image size")
    ca.add_argument("--plans", type=int, default=24, help="random plans to fit on (plus the dense one)")
    ca.add_argument("--held-out", type=int, default=8, help="further random plans to report the error on")
    ca.add_argument("--runs", type=int, default=10, help="timed runs per plan, at least")
    ca.add_argument("--min-seconds", type=float, default=2.0, help="each timing runs at least this long: more "
                    "runs of a fast plan, as the search's checks time them (ten runs of a 20 ms plan are the "
                    "noisiest timings of a calibration); 0: --runs only")  # fmt: skip
    ca.add_argument("--repeats", type=int, default=2, help="passes over all plans, alternating their order; "
                    "a plan's latency is the median of its passes (a shared machine drifts in minutes); a plan "
                    "whose passes differ by more than 5 %% is timed once more")  # fmt: skip
    ca.add_argument("--reference-every", type=int, default=4, help="time the dense plan and a small one (about "
                    "1/16 of its MACs) again after every N plans and divide each plan's time by the machine's speed "
                    "then, read from the two by the plan's latency (a phone heats, a shared host has neighbours, "
                    "and neither slows every plan alike); 0: off")  # fmt: skip
    ca.add_argument("--seed", type=int, default=0)
    ca.add_argument("--binaries", default="bench-binaries", help="folder with the arm64-v8a tools to push")
    ca.add_argument("--out", required=True, help="the latency model file to write (JSON)")
    lab = ca.add_argument_group("through the lab's queue (a nightly refresh from cron): each plan a job that the "
                                "agent serving --device runs; nothing connects to the phone from here")  # fmt: skip
    where = lab.add_mutually_exclusive_group()
    where.add_argument("--server", help="URL of `device-bench serve` (bundles uploaded, results awaited)")
    where.add_argument("--store", help="a local results store whose queue an agent on this machine serves")
    lab.add_argument("--token-file", help="file holding the service's token (default: $DEVICE_BENCH_TOKEN)")
    ai = sub.add_parser("import-aihub", help="store a Qualcomm AI Hub profile beside the lab's results",
                        description="Store a downloaded AI Hub profile (ProfileJob.download_profile(), saved as "
                        "JSON) as results of the bundle's file on a device named after the profiled phone and its "
                        "chipset, per-op rows included, so the report shows them beside the lab's phones.")  # fmt: skip
    ai.add_argument("profile", help="the profile JSON")
    ai.add_argument("--bundle", required=True, help="the export bundle whose file AI Hub compiled and profiled")
    ai.add_argument("--device", default="Samsung Galaxy S22 (Family)", help="AI Hub's name of the profiled device")
    ai.add_argument("--chipset", help="its chipset, e.g. SM8450 (known for AI Hub's Snapdragon phones)")
    ai.add_argument("--runtime", choices=("tflite", "onnx"), default="tflite", help="which of the bundle's files")
    ai.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    ai.add_argument("--store", default="bench.db", help="SQLite results store (default bench.db)")
    rep = sub.add_parser("report", help="render the results store as a static HTML report")
    rep.add_argument("--store", default="bench.db", help="SQLite results store (default bench.db)")
    rep.add_argument("--out", default="site", help="folder to write (replaced whole); open OUT/index.html")
    rep.add_argument("--bundle", action="append", default=[], help="bundle folders to show (default: all in the store)")
    return p


def _report(args) -> int:
    from coronet.errors import ConfigError
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


def _import_aihub(args) -> int:
    from coronet.bundle import Bundle, file_key
    from device_bench.aihub import device_name, read_profile, to_result
    from device_bench.records import BenchJob
    from device_bench.store import ResultStore

    profile = read_profile(args.profile)
    bundle = Bundle.open(str(Path(args.bundle).resolve()))
    key = file_key(args.runtime, args.precision)
    bundle.file(key)  # one line when the bundle has no such file
    device, chipset = device_name(args.device, args.chipset)
    result = to_result(profile, bundle, key, device, chipset, args.device)
    with ResultStore(args.store) as store:
        job_id = store.add_job(BenchJob(str(bundle.path), device, args.runtime, precision=args.precision, runs=1))
        store.finish(job_id, result)
    units = ", ".join(f"{u} {n}" for u, n in profile.compute_units.items()) or "no per-op rows"
    print(f"{device} {key}: median {result.stats.median_ms:.2f} ms over {result.stats.n} inferences ({units}); "
          f"stored as job {job_id} in {args.store}")  # fmt: skip
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


def _calibrate(args) -> int:
    from coronet.errors import ConfigError
    from device_bench.calibrate import calibrate_device
    from device_bench.lab import Submitter

    if (args.plans < 4 or min(args.held_out, args.reference_every, args.min_seconds) < 0
            or min(args.runs, args.threads, args.repeats) < 1):  # fmt: skip
        raise ConfigError("--plans must be >= 4, --held-out, --reference-every and --min-seconds >= 0, --runs, "
                          "--threads and --repeats >= 1")  # fmt: skip
    if not Path(args.out).resolve().parent.is_dir():  # said now, not after the calibration's minutes
        raise ConfigError(f"--out {args.out}: its folder does not exist; create it or pick another path")
    queue = Submitter(args.server, args.store, args.token_file) if args.server or args.store else None
    model = calibrate_device(args.config, args.device, args.runtime, args.threads, Path(args.out), args.precision,
                             args.delegate, args.image_size, args.plans, args.held_out, args.runs,
                             binaries=Path(args.binaries), seed=args.seed, repeats=args.repeats,
                             reference_every=args.reference_every, queue=queue, min_s=args.min_seconds)  # fmt: skip
    fit, test = model.calibration["fit_error"], model.calibration.get("held_out_error") or {}
    held = f"; held-out plans: median {test['median']:.1%}, max {test['max']:.1%}" if test else ""
    print(f"{args.out}: {model.key.describe()}, dense {model.dense_ms:.3g} ms, {model.layout.describe()} (a "
          f"search rounds widths to {model.round_to}); fit error median "
          f"{fit['median']:.1%}, max {fit['max']:.1%}{held}")  # fmt: skip
    return 0


def _run(args) -> int:
    from coronet.bundle import Bundle
    from device_bench.records import BenchJob
    from device_bench.run import execute
    from device_bench.store import ResultStore

    bundle = str(Path(args.bundle).resolve())  # the store outlives this working directory
    Bundle.open(bundle)  # a clear error for an incomplete bundle, before anything is stored
    job = BenchJob(bundle, args.device, args.runtime, args.delegate or "", args.threads, args.cluster, args.warmup,
                   args.runs, precision=args.precision, profile=args.profile)  # fmt: skip
    with ResultStore(args.store) as store:
        job_id = store.add_job(job)
        try:
            if job.device == "host":
                result = execute(job)
            else:
                from device_bench.adb import AdbTransport

                with AdbTransport(job.device) as t:
                    result = execute(job, t, Path(args.binaries))
        except BaseException as exc:
            store.fail(job_id, str(exc) or type(exc).__name__)
            raise
        store.finish(job_id, result)
    s = result.stats
    p95 = f"{s.p95_ms:.2f}" if s.p95_ms is not None else "n/a"
    flags = f"  flags: {', '.join(result.flags)}" if result.flags else ""
    check = result.output_check
    output = f", output checked (PSNR {check['psnr_db']:.1f} dB against fp32)" if check else ""
    ops = result.device_state.get("op_profile")
    output += f", {len(ops)} ops profiled" if ops else ""
    print(f"{result.device} {result.runtime}/{result.delegate} x{result.threads}: median {s.median_ms:.2f} ms, "
          f"p95 {p95} ms, min {s.min_ms:.2f} ms, n={s.n}{output}{flags}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from coronet.errors import CoronetError

    try:
        from device_bench import lab

        commands = {"devices": _devices, "run": _run, "report": _report, "import-aihub": _import_aihub,
                    "calibrate": _calibrate,
                    "serve": lab.serve_command,
                    "agent": lab.agent_command, "submit": lab.submit_command,
                    "nightly": lab.nightly_command}  # fmt: skip
        return commands[args.command](args)
    except CoronetError as exc:
        print(f"device-bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("device-bench: interrupted; the job is stored as failed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
