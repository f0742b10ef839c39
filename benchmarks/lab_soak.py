"""The lab under faults and hostile clients, on loopback only: `device-bench serve` (a child
process), one `device-bench agent` per loopback phone (child processes), N jobs queued over
HTTP, and at the same time

- phone faults at random: a push dropped mid-way, shell commands stalled, corrupt checksums,
  a phone unplugged (and plugged back), a phone "restarted" mid-job (its job's processes
  killed, unplugged, back), an agent killed with SIGKILL (and started again);
- hostile clients: a 1 GiB declared body without the token (again and again), 1000 idle
  connections, a client that sends one byte a second;
- an honest client listing the jobs every 0.5 s (its latency is measured).

At the end every job must be done or failed with a reason: none lost, none run twice, none
still running, and the reasons are listed so that a failure caused by an *earlier* fault (a
transport that never healed) shows. The service's memory (VmRSS) is sampled throughout.

    python benchmarks/lab_soak.py [--jobs 100] [--seed 0] [--limit-s 900]
Writes benchmarks/results/lab_soak.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import torch

import compress
import export
from device_bench.service import ServiceClient
from device_bench.store import ResultStore
from tests.loopback_device.adb_device import Faults, LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries

BIN = Path(sys.executable).parent


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Agents:
    """One `device-bench agent` child per phone, restartable."""

    def __init__(self, url: str, token_file: Path, binaries: Path, work: Path) -> None:
        self.url, self.token_file, self.binaries, self.work = url, token_file, binaries, work
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "HOME": str(work / "home")}

    def start(self, serial: str) -> None:
        name = "agent-" + serial.replace(":", "-").replace(".", "-")
        log = open(self.work / f"{name}.log", "a")  # noqa: SIM115 - the child holds it
        self.procs[serial] = subprocess.Popen(
            [str(BIN / "device-bench"), "agent", "--server", self.url, "--token-file", str(self.token_file),
             "--device", serial, "--name", name, "--binaries", str(self.binaries), "--poll-s", "0.5",
             "--lease-s", "15", "--cache", str(self.work / f"cache-{name}")],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )  # fmt: skip

    def kill(self, serial: str) -> None:
        self.procs[serial].send_signal(signal.SIGKILL)
        self.procs[serial].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-s", type=float, default=900.0)
    p.add_argument("--idle", type=int, default=1000, help="idle connections held open by a hostile client")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "lab_soak.json"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="lab-soak-"))
    torch.manual_seed(0)
    plan = compress.full_plan("resnet", ngf=4, n_blocks=1)
    bundle = export.export_bundle(compress.build_generator("resnet", plan).eval(), work / "bundle", image_size=32)
    binaries = write_binaries(work / "bin")
    token = "soak-token-0123456789"
    (work / "token").write_text(token + "\n")

    serve = subprocess.Popen(
        [str(BIN / "device-bench"), "serve", "--store", str(work / "lab.db"), "--port", "0",
         "--token-file", str(work / "token")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    first = serve.stdout.readline()
    url = first.split()[1]
    host, port = url.removeprefix("http://").split(":")
    threading.Thread(target=lambda: [None for _ in serve.stdout], daemon=True).start()  # drain its log
    client = ServiceClient(url, token, cache_dir=work / "client-cache", timeout_s=30)

    phones, faults = {}, {}
    for persona in ("sm8450", "mt6893"):
        faults[persona] = Faults()
        phone = LoopbackDevice(work / persona, build_sandbox(work / persona, persona), faults=faults[persona])
        phone.__enter__()
        phones[persona] = phone
    serials = {persona: phone.serial for persona, phone in phones.items()}
    agents = Agents(url, work / "token", binaries, work)
    for serial in serials.values():
        agents.start(serial)

    bid = client.upload_bundle(bundle.path)
    ids = []
    for i in range(args.jobs):
        persona = ("sm8450", "mt6893")[i % 2]
        runtime = ("tflite", "onnx")[(i // 2) % 2]
        ids.append(client.submit({"bundle": bid, "device": serials[persona], "runtime": runtime, "runs": 3,
                                  "warmup": 1, "max_wait_s": 5, "unreachable_s": 10, "poll_s": 0.3}))  # fmt: skip

    stop = threading.Event()
    events: list[dict] = []
    latencies: list[float] = []
    honest_errors: list[str] = []
    rss: list[float] = []

    def log(kind: str, **fields) -> None:
        events.append({"t": round(time.monotonic() - t0, 2), "kind": kind, **fields})

    def inject() -> None:
        while not stop.wait(rng.uniform(2.0, 5.0)):
            persona = rng.choice(list(phones))
            phone, f = phones[persona], faults[persona]
            kind = rng.choice(["drop-push", "stall", "corrupt", "unplug", "restart", "kill-agent"])
            log(kind, phone=persona)
            if kind == "drop-push":
                f.drop_after_sync_bytes = 4096  # the next push dies a little way in (once)
            elif kind == "stall":
                f.stall_s = 12.0  # past the transport's read timeout
                time.sleep(3.0)
                f.stall_s = 0.0
            elif kind == "corrupt":
                f.corrupt_checksum = True
                time.sleep(1.0)
                f.corrupt_checksum = False
            elif kind == "unplug":
                phone.unplug()
                time.sleep(rng.uniform(1.0, 6.0))
                f.offline = False
            elif kind == "restart":
                phone.unplug()
                subprocess.run(["pkill", "-9", "-f", str(phone.root / "data/local/tmp/coronet")], check=False)
                time.sleep(3.0)
                f.offline = False
            else:
                agents.kill(serials[persona])
                time.sleep(2.0)
                agents.start(serials[persona])

    def hostile_big_bodies() -> None:
        head = (f"PUT /v1/bundles/{'0' * 32}/model.onnx HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 1073741824\r\n\r\n").encode()  # fmt: skip
        while not stop.wait(1.0):
            try:
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    s.sendall(head)
                    s.recv(4096)
            except OSError:
                pass

    idle: list[socket.socket] = []

    def hostile_idle() -> None:
        for _ in range(args.idle):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection((host, int(port)), timeout=5))

    def hostile_slow() -> None:
        request = f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=60) as s:
                    for byte in request:
                        if stop.wait(1.0):
                            return
                        s.sendall(bytes([byte]))
            except OSError:
                pass

    def honest() -> None:
        while not stop.wait(0.5):
            start = time.perf_counter()
            try:
                request = urllib.request.Request(f"{url}/v1/jobs?status=running")
                request.add_header("Authorization", f"Bearer {token}")
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                latencies.append(time.perf_counter() - start)
            except OSError as exc:
                honest_errors.append(f"{time.monotonic() - t0:.1f}s: {exc}")

    def memory() -> None:
        while not stop.wait(1.0):
            rss.append(_rss_mib(serve.pid))

    t0 = time.monotonic()
    threads = [threading.Thread(target=f, daemon=True) for f in (inject, hostile_big_bodies, hostile_idle,
                                                                  hostile_slow, honest, memory)]  # fmt: skip
    for thread in threads:
        thread.start()
    while time.monotonic() - t0 < args.limit_s:
        with ResultStore(work / "lab.db") as store:
            open_jobs = [j for j in store.jobs() if j["status"] in ("queued", "running")]
        print(f"{time.monotonic() - t0:6.0f} s: {len(open_jobs)} jobs open, {len(events)} faults, "
              f"rss {rss[-1] if rss else 0:.0f} MiB", flush=True)  # fmt: skip
        if not open_jobs:
            break
        time.sleep(5.0)
    elapsed = time.monotonic() - t0
    stop.set()
    for s in idle:
        s.close()
    agents.stop()
    with ResultStore(work / "lab.db") as store:
        jobs = {j["id"]: j for j in store.jobs()}
        results = collections.Counter(int(r) for (r,) in store.db.execute("SELECT job_id FROM results"))
    serve.send_signal(signal.SIGINT)
    serve.wait(timeout=30)
    for phone in phones.values():
        phone.__exit__(None, None, None)

    statuses = collections.Counter(jobs[i]["status"] for i in ids)
    reasons = collections.Counter((jobs[i]["reason"] or "")[:120] for i in ids if jobs[i]["status"] == "failed")
    healing = [r for r in reasons if "NoneType" in r or "has no attribute" in r]
    lat = sorted(latencies)
    record = {
        "jobs": args.jobs,
        "seed": args.seed,
        "elapsed_s": round(elapsed, 1),
        "status": dict(statuses),
        "lost": sum(1 for i in ids if jobs[i]["status"] in ("queued", "running")),
        "duplicated": sum(1 for n in results.values() if n > 1),
        "failed_reasons": dict(reasons),
        "failed_from_an_earlier_fault": len(healing),
        "faults": dict(collections.Counter(e["kind"] for e in events)),
        "service_rss_mib_max": round(max(rss), 1) if rss else None,
        "honest_requests": len(lat),
        "honest_latency_s": {"median": lat[len(lat) // 2], "max": lat[-1]} if lat else None,
        "honest_errors": honest_errors[:20],
        "idle_connections_opened": len(idle),
        "how": "loopback only; service and agents are child processes; faults and hostile clients "
        "run concurrently with the jobs; one run",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
