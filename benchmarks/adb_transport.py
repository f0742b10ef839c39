"""Push throughput of our transport (adb-shell) and of Debian's `adb push` to the same loopback
device, and the per-job overhead (connect + push + run + parse) beside the runner's own time.

    python benchmarks/adb_transport.py [--mb 32] [--repeats 3]
The loopback device runs in this process; numbers are for loopback TCP on this machine, so they
bound the transport's own cost, not a phone's USB or Wi-Fi link.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import compress
import export
from device_bench.adb import AdbTransport, Timeouts
from device_bench.run import BenchJob, run_job
from tests.loopback_device.adb_device import LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "adb_transport.json"))
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    payload = tmp / "payload.bin"
    payload.write_bytes(os.urandom(args.mb * 1024 * 1024))
    root = tmp / "phone"
    rows: dict[str, list[float]] = {"adb-shell push MB/s": [], "adb push MB/s": [], "job total s": [],
                                    "job tool time s": []}  # fmt: skip
    timeouts = Timeouts(read_s=120, command_s=600)
    with LoopbackDevice(root, build_sandbox(root, "sm8450")) as phone:
        with AdbTransport(phone.serial, tmp / "adbkey", timeouts) as t:
            for i in range(args.repeats):
                t0 = time.perf_counter()
                t.push(payload, f"/data/local/tmp/p{i}.bin", skip_if_same=False)
                rows["adb-shell push MB/s"].append(args.mb / (time.perf_counter() - t0))
        adb = shutil.which("adb")
        if adb:
            env = {**os.environ, "ADB_SERVER_SOCKET": "tcp:localhost:15999", "HOME": str(tmp)}
            subprocess.run([adb, "connect", phone.serial], env=env, capture_output=True, check=True)
            for i in range(args.repeats):
                t0 = time.perf_counter()
                subprocess.run([adb, "-s", phone.serial, "push", str(payload), f"/data/local/tmp/a{i}.bin"], env=env,
                               capture_output=True, check=True)  # fmt: skip
                rows["adb push MB/s"].append(args.mb / (time.perf_counter() - t0))
            subprocess.run([adb, "kill-server"], env=env, capture_output=True)
        torch.manual_seed(0)
        model = compress.build_generator("resnet", compress.full_plan("resnet", ngf=16, n_blocks=3)).eval()
        bundle = export.export_bundle(model, tmp / "bundle", ("tflite",), image_size=64)
        binaries = write_binaries(tmp / "bin")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with AdbTransport(phone.serial, tmp / "adbkey", timeouts) as t:
                job = BenchJob(bundle.path, phone.serial, "tflite", warmup=2, runs=10, max_wait_s=0)
                result = run_job(job, t, binaries)
            rows["job total s"].append(time.perf_counter() - t0)
            # the tool's own time: init + warm-up + runs, from its output
            rows["job tool time s"].append((result.init_ms + result.stats.mean_ms * (10 + 2)) / 1e3)
    summary = {k: statistics.median(v) for k, v in rows.items() if v}
    print(f"{'measure':<24}{'median':>10}   ({args.repeats} repeats, {args.mb} MB payload, loopback TCP)")
    for k, v in summary.items():
        print(f"{k:<24}{v:>10.3f}")
    if "job total s" in summary:
        print(f"{'job overhead s':<24}{summary['job total s'] - summary['job tool time s']:>10.3f}"
              "   (connect + pushes + profile + runner + parse, beyond the tool's own time)")  # fmt: skip
    Path(args.out).write_text(json.dumps({"mb": args.mb, "repeats": args.repeats, "samples": rows,
                                          "median": summary}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
