"""The lab under faults and hostile clients, on loopback only: `device-bench serve` (a child
process), one `device-bench agent` per loopback phone (child processes), N jobs queued over
HTTP, and at the same time

- phone faults at random: a push dropped mid-way, shell commands stalled, corrupt checksums,
  a phone unplugged (and plugged back), a phone "restarted" mid-job (its job's processes
  killed, unplugged, back), an agent killed with SIGKILL (and started again);
- hostile clients: a 1 GiB declared body without the token (again and again), 1000 idle
  connections (topped up whenever the service closes some), a client that sends its request
  head one byte a second, and one with the token that sends its body one byte a second;
- an honest client listing the jobs every 0.5 s (its latency is measured).

At the end every job must be done or failed with a reason: none lost, none run twice, none
still running. Every job's status is watched (4 times a second), so each failed job is laid
beside the faults: a failure with no fault on its phone (or its agent) while it ran is one
that an *earlier* fault caused (a transport that never healed). The longest a job ran is
compared with its budget. The service's memory (VmRSS) and threads are sampled throughout.

    python benchmarks/lab_soak.py [--jobs 100] [--seed 0] [--limit-s 900]
Writes benchmarks/results/lab_soak.json.
"""

from __future__ import annotations

import argparse
import collections
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


def _proc_status(pid: int) -> tuple[float, int]:
    """VmRSS in MiB and the thread count of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


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
    service_threads: list[int] = []
    seen: dict[int, list[tuple[float, str]]] = collections.defaultdict(list)  # job -> (t, status) changes

    def log(kind: str, **fields) -> dict:
        event = {"t": round(time.monotonic() - t0, 2), "kind": kind, **fields}
        events.append(event)
        return event

    def inject() -> None:
        while not stop.wait(rng.uniform(2.0, 5.0)):
            persona = rng.choice(list(phones))
            phone, f = phones[persona], faults[persona]
            kind = rng.choice(["drop-push", "stall", "corrupt", "unplug", "restart", "kill-agent"])
            event = log(kind, phone=persona)
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
            if kind != "drop-push":  # that one waits for the next push: open until the phone's next fault
                event["until"] = round(time.monotonic() - t0, 2)

    def watch_jobs() -> None:
        while not stop.wait(0.25):
            with ResultStore(work / "lab.db") as store:
                for job in store.jobs():
                    changes = seen[job["id"]]
                    if not changes or changes[-1][1] != job["status"]:
                        changes.append((time.monotonic() - t0, job["status"]))

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
    idle_counts = collections.Counter()

    def hostile_idle() -> None:
        while not stop.is_set():  # keep args.idle connections open: the service closes idle ones
            for s in [s for s in idle if _closed_by_peer(s)]:
                idle.remove(s)
                s.close()
                idle_counts["closed_by_the_service"] += 1
            while len(idle) < args.idle and not stop.is_set():
                try:
                    idle.append(socket.create_connection((host, int(port)), timeout=5))
                    idle_counts["opened"] += 1
                except OSError:
                    idle_counts["refused"] += 1
                    break
            stop.wait(2.0)

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

    def hostile_slow_body() -> None:
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Content-Length: 100000\r\n\r\n").encode()  # fmt: skip
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=60) as s:
                    s.sendall(head)
                    while not stop.wait(1.0):
                        s.sendall(b" ")
            except OSError:
                idle_counts["slow_bodies_cut_off"] += 1

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
            mib, threads = _proc_status(serve.pid)
            rss.append(mib)
            service_threads.append(threads)

    t0 = time.monotonic()
    workers = (inject, watch_jobs, hostile_big_bodies, hostile_idle, hostile_slow, hostile_slow_body, honest, memory)
    threads = [threading.Thread(target=f, daemon=True) for f in workers]
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
    persona_of = {serial: persona for persona, serial in serials.items()}
    for n, event in enumerate(events):
        later = [e["t"] for e in events[n + 1 :] if e["phone"] == event["phone"]]
        event.setdefault("until", later[0] if later else elapsed)
    failures = []
    for i in (i for i in ids if jobs[i]["status"] == "failed"):
        ran_from, ended = _last_run(seen[i])
        during = [e["kind"] for e in events if e["phone"] == persona_of.get(jobs[i]["device"])
                  and e["t"] <= ended + 0.5 and e["until"] >= ran_from - 0.5]  # fmt: skip
        failures.append({"job": i, "ran_s": [round(ran_from, 1), round(ended, 1)], "faults_while_it_ran": during,
                         "reason": (jobs[i]["reason"] or "")[:160]})  # fmt: skip
    runs = [end - start for i in ids for start, end in _runs(seen[i])]
    lat = sorted(latencies)
    record = {
        "jobs": args.jobs,
        "seed": args.seed,
        "elapsed_s": round(elapsed, 1),
        "status": dict(statuses),
        "lost": sum(1 for i in ids if jobs[i]["status"] in ("queued", "running")),
        "duplicated": sum(1 for n in results.values() if n > 1),
        "failed_reasons": dict(reasons),
        "failed_jobs": failures,
        "failed_from_an_earlier_fault": sum(1 for f in failures if not f["faults_while_it_ran"]),
        "longest_run_s": round(max(runs), 1) if runs else None,
        "job_budget_s": 5 + 600,  # BenchJob.budget_s: max_wait_s + 600
        "faults": dict(collections.Counter(e["kind"] for e in events)),
        "service_rss_mib_max": round(max(rss), 1) if rss else None,
        "honest_requests": len(lat),
        "honest_latency_s": {"median": lat[len(lat) // 2], "max": lat[-1]} if lat else None,
        "honest_errors": honest_errors[:20],
        "hostile_connections": dict(idle_counts),
        "service_threads_max": max(service_threads) if service_threads else None,
        "how": "loopback only; service and agents are child processes; faults and hostile clients "
        "run concurrently with the jobs; one run",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


def _runs(changes: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """The (start, end) of each time a job ran, from its watched status changes."""
    runs, started = [], None
    for t, status in changes:
        if status == "running":
            started = t
        elif started is not None:
            runs.append((started, t))
            started = None
    return runs


def _last_run(changes: list[tuple[float, str]]) -> tuple[float, float]:
    runs = _runs(changes)
    return runs[-1] if runs else (changes[0][0], changes[-1][0])


if __name__ == "__main__":
    sys.exit(main())
