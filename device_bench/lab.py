"""The lab commands: `serve`, `agent`, `submit` and `nightly` (thin layers over the store, the
service and the agent), and the nightly plan they read."""

from __future__ import annotations

import argparse
import os
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coronet.errors import ConfigError
from device_bench.records import EXTERNAL, BenchJob, BenchResult, JobError, default_delegate
from device_bench.service import AgentAccount

TOKEN_ENV = "DEVICE_BENCH_TOKEN"
PLAN_KEYS = {"lab": {"server", "store", "token_file", "runs", "warmup", "warmup_s", "cluster"},
             "model": {"bundle"}, "device": {"serial", "runtimes", "threads"}}  # fmt: skip


def read_token(token_file: str | None) -> str:
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"token file {path} does not exist; copy it from the service's host")
        token = path.read_text().strip()
        if not token:
            raise ConfigError(f"token file {path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"no token: pass --token-file or set {TOKEN_ENV}")
    return token


def split_runtime(text: str) -> tuple[str, str]:
    """'tflite/gpu' -> ('tflite', 'gpu'); a bare runtime gets its default delegate."""
    runtime, _, delegate = text.partition("/")
    if runtime not in ("tflite", "onnx"):
        raise ConfigError(f"runtime {text!r}: expected tflite[/DELEGATE] or onnx[/EP]")
    return runtime, delegate or default_delegate(runtime)


class Submitter:
    """Queues jobs in a service (uploading bundles) or in a local store (bundles by path)."""

    def __init__(self, server: str | None, store: str | None, token_file: str | None) -> None:
        if not server and not store:
            raise ConfigError("say where to queue: --server URL or --store DB (or lab.server in the plan)")
        self.server, self.store = server, store
        if server:
            from device_bench.service import ServiceClient

            self.client = ServiceClient(server, read_token(token_file))
        self._refs: dict[Path, str] = {}

    def bundle_ref(self, path: str | Path) -> str:
        from coronet.bundle import Bundle

        folder = Path(path).expanduser().resolve()
        if folder not in self._refs:
            if self.server:
                self._refs[folder] = self.client.upload_bundle(folder)  # opened and verified there
            else:
                self._refs[folder] = str(Bundle.open(folder).path)  # a clear error for an incomplete bundle
        return self._refs[folder]

    def submit(self, job: BenchJob, tag: str) -> int:
        if self.server:
            return self.client.submit({**job.to_dict(), "tag": tag})
        from device_bench.store import ResultStore

        with ResultStore(self.store) as store:
            return store.enqueue(job, tag=tag)

    def job_result(self, job_id: int) -> tuple[dict[str, Any], BenchResult | None]:
        """The job (status, a failed one's reason) and its result once it is done."""
        if self.server:
            return self.client.job_result(job_id)
        from device_bench.store import ResultStore

        with ResultStore(self.store) as store:
            job = store.job(job_id)
            if job is None:
                raise ConfigError(f"no job {job_id} in {self.store}")
            return job, store.result_of(job_id)

    def wait(self, job_id: int, poll_s: float = 1.0, timeout_s: float = 3600.0) -> BenchResult:
        """The result of a queued job, once an agent has run it; a failed job is an error."""
        deadline = time.monotonic() + timeout_s
        while True:
            job, result = self.job_result(job_id)
            if job["status"] == "failed":
                raise JobError(f"job {job_id} on {job['device']} failed: {job.get('reason')}")
            if job["status"] == "done" and result is not None:
                return result
            if time.monotonic() > deadline:
                raise JobError(f"job {job_id} on {job['device']} is still {job['status']} after {timeout_s:g} s: "
                               "is an agent serving that device? (device-bench agent --device ...)")  # fmt: skip
            time.sleep(poll_s)

    def jobs(self, tag: str) -> list[dict[str, Any]]:
        if self.server:
            return self.client.jobs(tag=tag)
        from device_bench.store import ResultStore

        with ResultStore(self.store) as store:
            return store.jobs(tag=tag)


def load_agents(path: str | Path, lab_token: str) -> tuple[AgentAccount, ...]:
    """The agent accounts of `device-bench serve --agents FILE`: TOML tables

    [[agent]]
    name = "bench-host-1"
    token = "a long random string"      # that agent's --token-file holds it
    devices = ["host", "10.0.0.5:5555"]
    """
    path = Path(path)
    try:
        entries = tomllib.loads(path.read_text()).get("agent", [])
    except FileNotFoundError:
        raise ConfigError(f"agents file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"agents file {path} is not valid TOML: {exc}") from None
    accounts = []
    for i, entry in enumerate(entries if isinstance(entries, list) else [None]):
        where = f"{path}: [[agent]] #{i + 1}"
        if not isinstance(entry, dict) or set(entry) != {"name", "token", "devices"}:
            raise ConfigError(f"{where} needs exactly name, token and devices")
        name, token, devices = entry["name"], entry["token"], entry["devices"]
        if not isinstance(name, str) or not name or not isinstance(token, str) or len(token) < 16:
            raise ConfigError(f"{where}: name must be a string and token at least 16 characters")
        if not isinstance(devices, list) or not devices or not all(isinstance(d, str) and d for d in devices):
            raise ConfigError(f"{where}: devices must be a non-empty list of device names")
        accounts.append(AgentAccount(name, token, tuple(devices)))
    tokens = [a.token for a in accounts] + [lab_token]
    if len({a.name for a in accounts}) != len(accounts) or len(set(tokens)) != len(tokens):
        raise ConfigError(f"{path}: every agent needs its own name and its own token (not the lab's)")
    if not accounts:
        raise ConfigError(f"{path} defines no [[agent]]")
    return tuple(accounts)


# --- the nightly plan ------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanDevice:
    serial: str
    runtimes: tuple[tuple[str, str], ...]
    threads: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class NightlyPlan:
    models: tuple[str, ...]
    devices: tuple[PlanDevice, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # runs, warmup, warmup_s, cluster
    server: str | None = None
    store: str | None = None
    token_file: str | None = None

    def jobs(self) -> list[tuple[str, str, str, str, int]]:
        """(bundle, device, runtime, delegate, threads) for every cell of the matrix."""
        return [(m, d.serial, r, g, t) for m in self.models for d in self.devices for r, g in d.runtimes
                for t in d.threads]  # fmt: skip


def load_plan(path: str | Path) -> NightlyPlan:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"plan {path} does not exist; start from configs/lab.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"plan {path} is not valid TOML: {exc}") from None
    unknown = set(raw) - set(PLAN_KEYS)
    if unknown:
        raise ConfigError(f"plan {path}: unknown section {sorted(unknown)[0]!r}; sections are lab, model, device")
    lab = raw.get("lab", {})
    models, devices = raw.get("model", []), raw.get("device", [])
    for section, entries in (("lab", [lab]), ("model", models), ("device", devices)):
        for entry in entries:
            extra = set(entry) - PLAN_KEYS[section]
            if extra:
                raise ConfigError(f"plan {path}: unknown key {sorted(extra)[0]!r} in [{section}]; "
                                  f"allowed: {', '.join(sorted(PLAN_KEYS[section]))}")  # fmt: skip
    if not models or not devices:
        raise ConfigError(f"plan {path} needs at least one [[model]] and one [[device]]")
    try:
        plan_devices = tuple(
            PlanDevice(
                str(d["serial"]),
                tuple(split_runtime(r) for r in d.get("runtimes", ["tflite"])),
                tuple(int(t) for t in d.get("threads", [1])),
            )
            for d in devices
        )
        bundles = tuple(str(m["bundle"]) for m in models)
    except KeyError as exc:
        raise ConfigError(f"plan {path}: every [[model]] needs bundle and every [[device]] serial ({exc})") from None
    settings = {k: lab[k] for k in ("runs", "warmup", "warmup_s", "cluster") if k in lab}
    return NightlyPlan(bundles, plan_devices, settings, lab.get("server"), lab.get("store"), lab.get("token_file"))


def queue_nightly(plan: NightlyPlan, submitter: Submitter, night: str) -> tuple[list[int], int]:
    """Queue the plan's matrix for `night` once: (new job ids, cells already queued that night)."""
    tag = f"nightly {night}"
    seen = {(j["spec"].get("bundle"), j["device"], j["spec"].get("runtime"), j["spec"].get("delegate"),
             int(j["spec"].get("threads", 1))) for j in submitter.jobs(tag)}  # fmt: skip
    new, skipped = [], 0
    for bundle, device, runtime, delegate, threads in plan.jobs():
        ref = submitter.bundle_ref(bundle)
        if (ref, device, runtime, delegate, threads) in seen:
            skipped += 1
            continue
        job = BenchJob.from_dict({"bundle": ref, "device": device, "runtime": runtime, "delegate": delegate,
                                  "threads": threads, **plan.settings})  # fmt: skip
        new.append(submitter.submit(job, tag))
    return new, skipped


# --- commands --------------------------------------------------------------------------------
def serve_command(args: argparse.Namespace) -> int:
    from device_bench.service import ServiceConfig, make_server

    store = Path(args.store)
    data = Path(args.data) if args.data else store.with_name(f"{store.stem}-data")
    if args.token_file or os.environ.get(TOKEN_ENV):
        token, where = read_token(args.token_file), args.token_file or f"${TOKEN_ENV}"
    else:
        token_path = data / "token"
        if not token_path.is_file():
            data.mkdir(parents=True, exist_ok=True)
            # created 0600, never readable by others, not even between a write and a chmod
            fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        token, where = token_path.read_text().strip(), str(token_path)
    agents = load_agents(args.agents, token) if args.agents else ()
    server = make_server(ServiceConfig(store, data, token, agents=agents), args.host, args.port, args.verbose)
    host, port = server.server_address[:2]
    print(f"serving http://{host}:{port} (store {store}, bundles in {data / 'bundles'}; token in {where})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("device-bench serve: stopped")
    finally:
        server.server_close()
    return 0


def agent_command(args: argparse.Namespace) -> int:
    from device_bench.agent import Agent, StoreQueue, default_agent_name

    if args.server:
        from device_bench.service import ServiceClient

        cache = Path(args.cache) if args.cache else None
        queue: Any = ServiceClient(args.server, read_token(args.token_file), cache_dir=cache)
    else:
        queue = StoreQueue(args.store)
    devices = list(dict.fromkeys(args.device))
    allowed = {}
    for item in args.external_delegate:
        name, _, path = item.partition("=")
        if not EXTERNAL.match(f"external:{name}") or not path.startswith("/"):
            raise ConfigError(f"--external-delegate {item!r}: expected NAME=/absolute/path/on/the/phone.so")
        allowed[name] = path
    agent = Agent(queue, devices, args.name or default_agent_name(), args.lease_s, args.poll_s, Path(args.binaries),
                  log=lambda line: print(line, flush=True), external_delegates=allowed)  # fmt: skip
    print(f"agent {agent.name}: serving {', '.join(devices)} from {args.server or args.store}", flush=True)
    try:
        finished = agent.run(once=args.once, stop=threading.Event())
    except KeyboardInterrupt:
        print("device-bench agent: stopped; a running job went back to the queue")
        return 130
    print(f"agent {agent.name}: {finished} jobs finished")
    return 0


def submit_command(args: argparse.Namespace) -> int:
    submitter = Submitter(args.server, args.store, args.token_file)
    ref = submitter.bundle_ref(args.bundle)
    ids = []
    for device in dict.fromkeys(args.device):
        for runtime, delegate in (split_runtime(r) for r in (args.runtime or ["tflite"])):
            job = BenchJob(ref, device, runtime, delegate, threads=args.threads, runs=args.runs, profile=args.profile)
            ids.append(submitter.submit(job, args.tag))
    print(f"queued jobs {', '.join(map(str, ids))} (bundle {ref})")
    return 0


def nightly_command(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    server = args.server or (None if args.store else plan.server)
    store = args.store or (None if args.server else plan.store)
    submitter = Submitter(server, store, args.token_file or plan.token_file)
    night = args.date or datetime.now(UTC).date().isoformat()
    new, skipped = queue_nightly(plan, submitter, night)
    print(f"nightly {night}: queued {len(new)} jobs" + (f", {skipped} already queued tonight" if skipped else ""))
    return 0
