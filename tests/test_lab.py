"""The lab: the HTTP service (token, bundle uploads, queue), agents leasing jobs over it for the
host and for a loopback phone, the nightly plan, the commands end to end, and a latency model
calibrated through the queue."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from device_bench.agent import Agent, StoreQueue
from device_bench.lab import Submitter, load_plan, queue_nightly
from device_bench.service import ServiceClient, ServiceConfig, ServiceError, bundle_id, make_server
from device_bench.store import LeaseLost, ResultStore
from reports import build_report
from tests.loopback_device.adb_device import LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries
from tests.pipeline import ROOT, interruptible

TOKEN = "lab-token-for-tests"


@pytest.fixture
def service(tmp_path):
    config = ServiceConfig(tmp_path / "lab.db", tmp_path / "lab-data", TOKEN)
    server = make_server(config, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", config
    server.shutdown()
    server.server_close()


@pytest.fixture
def bundles(pipeline_run):
    folder, _ = pipeline_run
    return folder / "run" / "export", folder / "run" / "export_dense"


def _client(url, tmp_path, token=TOKEN):
    return ServiceClient(url, token, cache_dir=tmp_path / "agent-cache")


def _quiet_agent(queue, devices, **kw):
    lines = []
    return Agent(queue, devices, log=lines.append, **kw), lines


def test_the_service_refuses_requests_without_the_token(service, tmp_path):
    url, _ = service
    for token in ("", "wrong"):
        with pytest.raises(ServiceError, match=r"refused \(401\): missing or wrong token"):
            _client(url, tmp_path, token).jobs()
    assert _client(url, tmp_path).jobs() == []
    with pytest.raises(ServiceError, match="cannot reach the service"):
        ServiceClient("http://127.0.0.1:9", TOKEN, timeout_s=2).jobs()


def test_bundle_uploads_are_checked_and_complete_bundles_immutable(service, bundles, tmp_path):
    url, config = service
    client = _client(url, tmp_path)
    export = bundles[0]
    manifest = (export / "manifest.json").read_bytes()
    bid = bundle_id(manifest)
    with pytest.raises(ServiceError, match="upload the model files first"):  # manifest before the files
        client._call("PUT", f"/v1/bundles/{bid}/manifest.json", raw=manifest)
    client._call("PUT", f"/v1/bundles/{bid}/model.onnx", raw=b"not the model")
    client._call("PUT", f"/v1/bundles/{bid}/model.tflite", raw=(export / "model.tflite").read_bytes())
    with pytest.raises(ServiceError, match=r"model\.onnx is missing or differs"):
        client._call("PUT", f"/v1/bundles/{bid}/manifest.json", raw=manifest)
    with pytest.raises(ServiceError, match="not the SHA-256 of this manifest"):
        client._call("PUT", f"/v1/bundles/{'0' * 32}/manifest.json", raw=manifest)
    for name in ("..%2Fescape", ".hidden", "a%00b"):  # no route (the / is a path) or not a plain name
        with pytest.raises(ServiceError, match=r"refused \((400|404)\)"):
            client._call("PUT", f"/v1/bundles/{bid}/{name}", raw=b"x")
    assert not (config.bundle_dir(bid).parent / "escape").exists()
    with pytest.raises(ServiceError, match="no complete bundle"):
        client.submit({"bundle": bid, "device": "host", "runtime": "onnx"})
    assert client.upload_bundle(export) == bid  # the right bytes replace the wrong ones
    assert (config.bundle_dir(bid) / "model.onnx").read_bytes() == (export / "model.onnx").read_bytes()
    with pytest.raises(ServiceError, match=r"refused \(409\): bundle .* is complete"):
        client._call("PUT", f"/v1/bundles/{bid}/model.onnx", raw=b"other bytes")
    assert client.upload_bundle(export) == bid  # uploading it again is harmless
    with pytest.raises(ServiceError, match="runtime must be one of tflite, onnx, executorch, got 'gpu'"):
        client.submit({"bundle": bid, "device": "host", "runtime": "gpu"})
    assert not list(config.bundle_dir(bid).glob(".*"))  # no temp files left behind


def test_an_agent_runs_queued_jobs_over_http_and_the_report_reads_the_service_store(service, bundles, tmp_path):
    url, config = service
    client = _client(url, tmp_path)
    ids = []
    for bundle in bundles:
        bid = client.upload_bundle(bundle)
        for runtime in ("onnx", "tflite"):
            ids.append(client.submit({"bundle": bid, "device": "host", "runtime": runtime, "runs": 3, "tag": "t"}))
    client.submit({"bundle": bid, "device": "10.9.9.9:5555", "runtime": "tflite"})  # not this agent's
    agent, lines = _quiet_agent(client, ["host"], name="agent-1", lease_s=30)
    assert agent.run(once=True) == 4
    assert len(lines) == 4 and all(" median " in line for line in lines)
    jobs = {j["id"]: j for j in client.jobs()}
    assert [jobs[i]["status"] for i in ids] == ["done"] * 4 and all(jobs[i]["agent"] == "agent-1" for i in ids)
    assert jobs[max(jobs)]["status"] == "queued"  # the phone's job waits for its agent
    with ResultStore(config.store) as store:
        results = [store.result_of(i) for i in ids]
    assert [r.stats.n for r in results] == [3] * 4
    assert {r.model_sha256 for r in results[:2]} == {e["sha256"] for e in _manifest(bundles[0])["files"].values()}
    data = build_report(config.store)  # bundles found where the service keeps them
    assert sorted(data.models.index) == ["compressed", "dense"] and len(data.latency) == 4
    cached = list((tmp_path / "agent-cache").iterdir())
    assert len(cached) == 2 and all((c / "manifest.json").is_file() for c in cached)


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_a_late_agent_is_refused_over_http(service, bundles, tmp_path):
    url, _ = service
    client = _client(url, tmp_path)
    job_id = client.submit({"bundle": client.upload_bundle(bundles[0]), "device": "host", "runtime": "onnx"})
    assert client.lease("slow", ["host"], lease_s=0.2)["id"] == job_id
    time.sleep(0.3)
    assert client.lease("fast", ["host"], lease_s=60)["id"] == job_id
    with pytest.raises(LeaseLost, match="no longer leased to slow"):
        client.fail(job_id, "slow", "too late")
    client.release(job_id, "fast")
    assert client.jobs()[0]["status"] == "queued"


def test_an_agent_runs_a_job_on_its_loopback_phone(service, bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("ADB_VENDOR_KEYS_HOME", str(tmp_path / "android"))
    url, config = service
    client = _client(url, tmp_path)
    root = tmp_path / "phone"
    with LoopbackDevice(root, build_sandbox(root, "sm8450")) as phone:
        bid = client.upload_bundle(bundles[0])
        job_id = client.submit({"bundle": bid, "device": phone.serial, "runtime": "tflite", "delegate": "xnnpack",
                                "runs": 3, "warmup": 1})  # fmt: skip
        agent, lines = _quiet_agent(client, [phone.serial], binaries=write_binaries(tmp_path / "bin"))
        assert agent.run(once=True) == 1, lines
    with ResultStore(config.store) as store:
        result = store.result_of(job_id)
    assert result.device == phone.serial and result.device_state["soc"] == "SM8450" and result.stats.n == 3
    assert result.model_sha256 == _manifest(bundles[0])["files"]["tflite"]["sha256"]


def test_a_failing_job_is_stored_with_its_reason_and_the_agent_goes_on(bundles, tmp_path):
    store_path = tmp_path / "one-machine.db"
    with ResultStore(store_path) as store:
        bad = store.enqueue({"bundle": str(tmp_path / "gone"), "runtime": "onnx"}, "host")
        # a job queued by an older version, or written into the store by hand: the agent checks it too
        spec = json.dumps({"bundle": str(bundles[0]), "device": "host", "warmup_s": 1e9})
        with store.db:
            broken = store.db.execute("INSERT INTO jobs (created, spec, status, device) VALUES ('now', ?, 'queued', "
                                      "'host')", (spec,)).lastrowid  # fmt: skip
        good = store.enqueue({"bundle": str(bundles[0]), "runtime": "onnx", "runs": 2}, "host")
    agent, lines = _quiet_agent(StoreQueue(store_path), ["host"])
    assert agent.run(once=True) == 1
    with ResultStore(store_path) as store:
        assert store.job(bad)["status"] == "failed" and "has no manifest.json" in store.job(bad)["reason"]
        assert store.job(broken)["status"] == "failed"
        assert store.job(broken)["reason"] == "bench job: warmup_s must be in [0, 600], got 1000000000.0"
        assert store.job(good)["status"] == "done" and store.result_of(good).stats.n == 2
    assert lines[0].startswith(f"job {bad} failed: ")


PHONE = """
[[device]]
serial = "10.0.0.7:5555"
runtimes = ["tflite/gpu"]
threads = [1, 4]
"""


def _plan(tmp_path, bundles, extra=PHONE):
    path = tmp_path / "lab.toml"
    path.write_text(f"""
[lab]
store = "{tmp_path / "nightly.db"}"
runs = 2
[[model]]
bundle = "{bundles[0]}"
[[model]]
bundle = "{bundles[1]}"
[[device]]
serial = "host"
runtimes = ["tflite", "onnx/cpu"]
{extra}""")
    return path


def test_the_nightly_plan_is_queued_once_per_night(bundles, tmp_path):
    plan = load_plan(_plan(tmp_path, bundles))
    assert len(plan.jobs()) == 2 * (2 + 2)
    submitter = Submitter(None, plan.store, None)
    new, skipped = queue_nightly(plan, submitter, "2026-11-26")
    assert len(new) == 8 and skipped == 0
    assert queue_nightly(plan, submitter, "2026-11-26") == ([], 8)
    assert len(queue_nightly(plan, submitter, "2026-11-27")[0]) == 8
    with ResultStore(plan.store) as store:
        tonight = store.jobs(tag="nightly 2026-11-26")
    gpu = [j for j in tonight if j["device"] == "10.0.0.7:5555"]
    assert sorted((j["spec"]["delegate"], j["spec"]["threads"]) for j in gpu) == [("gpu", 1), ("gpu", 1), ("gpu", 4),
                                                                                 ("gpu", 4)]  # fmt: skip
    assert all(j["spec"]["runs"] == 2 for j in tonight)


def _cli(*args, cwd, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "device_bench.cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize(("extra", "message"), [
    ("[[gpu]]\nx = 1", "unknown section 'gpu'"),
    ("[[model]]\nbundel = 'x'", "unknown key 'bundel' in [model]; allowed: bundle"),
    ("[[model]]\nbundle = 'no/such/bundle'", "no/such/bundle has no manifest.json"),
    ("[[device]]\nserial = 'x'\nruntimes = ['coreml']", "runtime 'coreml': expected tflite"),
])  # fmt: skip
def test_a_bad_plan_is_one_clear_line(bundles, tmp_path, extra, message):
    proc = _cli("nightly", "--plan", _plan(tmp_path, bundles, PHONE + extra), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_serve_nightly_agent_and_report_commands(bundles, tmp_path):
    serve = subprocess.Popen([sys.executable, "-m", "device_bench.cli", "serve", "--store", "lab.db", "--port", "0"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=interruptible)  # fmt: skip
    try:
        first = serve.stdout.readline()
        assert first.startswith("serving http://127.0.0.1:"), serve.stderr.read() if serve.poll() else first
        url = first.split()[1]
        token = tmp_path / "lab-data" / "token"
        assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
        plan = _plan(tmp_path, bundles, extra="")  # the host only
        queued = _cli("nightly", "--plan", plan, "--server", url, "--token-file", token, cwd=tmp_path)
        assert queued.returncode == 0, queued.stderr
        assert queued.stdout.startswith("nightly ") and "queued 4 jobs" in queued.stdout
        denied = _cli("agent", "--server", url, "--device", "host", "--once", cwd=tmp_path,
                      env={"DEVICE_BENCH_TOKEN": "guess"})  # fmt: skip
        assert denied.returncode == 1 and "refused (401)" in denied.stderr and "Traceback" not in denied.stderr
        ran = _cli("agent", "--server", url, "--token-file", token, "--device", "host", "--once", "--cache", "cache",
                   cwd=tmp_path)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.count(" median ") == 4 and ran.stdout.rstrip().endswith("4 jobs finished")
        report = _cli("report", "--store", "lab.db", "--out", "site", cwd=tmp_path)
        assert report.returncode == 0 and "2 models, 4 results, 0 failed jobs" in report.stdout
    finally:
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=30)
    assert serve.returncode == 0 and "stopped" in out and "Traceback" not in err
    assert Path(tmp_path / "site" / "index.html").is_file()


def test_an_agent_waits_out_a_service_restart_but_not_a_wrong_token(bundles, tmp_path):
    config = ServiceConfig(tmp_path / "lab.db", tmp_path / "lab-data", TOKEN)
    first = make_server(config, port=0)
    port = first.server_address[1]
    threading.Thread(target=first.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    client = _client(url, tmp_path)
    job_id = client.submit({"bundle": client.upload_bundle(bundles[0]), "device": "host", "runtime": "onnx", "runs": 2})
    first.shutdown()
    first.server_close()  # the service is down when the agent starts

    stop = threading.Event()
    lines = []

    def log(line):
        lines.append(line)
        if " median " in line:
            stop.set()

    agent = Agent(client, ["host"], log=log, poll_s=0.2)
    worker = threading.Thread(target=agent.run, kwargs={"stop": stop})
    worker.start()
    time.sleep(0.6)
    second = make_server(config, port=port)
    threading.Thread(target=second.serve_forever, daemon=True).start()
    try:
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert any("cannot reach the service" in line and "trying again" in line for line in lines), lines
        assert client.jobs()[0]["id"] == job_id and client.jobs()[0]["status"] == "done"
        with pytest.raises(ServiceError, match=r"401"):  # a refusal is not waited out
            Agent(_client(url, tmp_path, "wrong"), ["host"], log=lines.append, poll_s=0.2).run()
    finally:
        second.shutdown()
        second.server_close()


def test_the_example_lab_plan_reads():
    plan = load_plan(ROOT / "configs" / "lab.toml")
    assert plan.server and plan.token_file and plan.settings["runs"] == 50
    assert len(plan.jobs()) == 2 * (4 * 2 + 3 * 2 + 2 * 1)  # models x (runtimes x threads per device)
    assert ("runs/demo/export", "192.168.1.20:5555", "tflite", "gpu", 4) in plan.jobs()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("warmup_s", 1e9, "warmup_s must be in [0, 600], got 1000000000.0"),
        ("runs", "many", "runs must be an integer in [1, 100000], got 'many'"),
        ("threads", True, "threads must be an integer in [1, 64], got True"),
        ("delegate", "external:/data/local/tmp/evil.so", "tflite delegate 'external:/data/local/tmp/evil.so' is not"),
        ("cluster", "all", "cluster must be little, big or prime"),
        ("device", "host; rm -rf /", "device 'host; rm -rf /' is not 'host', HOST:PORT or a serial"),
        ("priority", 9, "unknown setting 'priority'"),
    ],
)
def test_a_job_with_a_bad_setting_is_refused_when_it_is_queued(service, bundles, tmp_path, field, value, reason):
    url, _ = service
    client = _client(url, tmp_path)
    bid = client.upload_bundle(bundles[0])
    with pytest.raises(ServiceError, match=r"refused \(400\): bench job: " + re.escape(reason)):
        client.submit({"bundle": bid, "device": "host", "runtime": "tflite", field: value})
    assert client.jobs() == []  # nothing queued


def test_a_result_that_is_not_numbers_is_refused_and_the_report_still_renders(service, bundles, tmp_path):
    """An agent (or anyone with the token) finishing a job with `median_ms: "fast"` used to be
    stored, and then every report crashed."""
    url, config = service
    client = _client(url, tmp_path)
    job_id = client.submit({"bundle": client.upload_bundle(bundles[0]), "device": "host", "runtime": "onnx"})
    assert client.lease("agent-1", ["host"], lease_s=60)["id"] == job_id
    stats = {"n": 3, "median_ms": "fast", "p90_ms": None, "p95_ms": None, "min_ms": 1.0, "mean_ms": 1.0}
    forged = {"device": "host", "runtime": "onnx", "delegate": "cpu", "threads": 1, "bundle": "x",
              "model_sha256": "0" * 64, "samples_ms": [], "stats": stats, "init_ms": 0.0, "warmup_runs": 0}  # fmt: skip
    for bad in (forged, {**forged, "stats": {**stats, "median_ms": float("nan")}}, {**forged, "threads": "1"}):
        with pytest.raises(ServiceError, match=r"refused \(400\): bench result: "):
            client._call("POST", f"/v1/jobs/{job_id}/finish", {"agent": "agent-1", "result": bad})
    with ResultStore(config.store) as store:
        assert store.result_of(job_id) is None and store.job(job_id)["status"] == "running"
    build_report(config.store)


def _raw(url: str, request: bytes, wait_s: float) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return b"".join(chunks) + b"<still open>"
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_a_huge_body_without_the_token_is_never_read(service):
    """A request declaring 1 GiB without the token gets its 401 at once; the body is not awaited."""
    url, _ = service
    head = b"PUT /v1/bundles/" + b"0" * 32 + b"/model.onnx HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"
    started = time.monotonic()
    answer = _raw(url, head, wait_s=5)
    assert answer.startswith(b"HTTP/1.1 401") and answer.endswith(b"}\n")  # and then the connection ends
    assert time.monotonic() - started < 3


def test_an_idle_connection_is_closed(tmp_path):
    config = ServiceConfig(tmp_path / "lab.db", tmp_path / "lab-data", TOKEN, idle_timeout_s=0.5)
    server = make_server(config, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert _raw(url, b"", wait_s=5) == b""  # closed by the service, not by our 5 s
        assert _raw(url, b"GET /v1/jo", wait_s=5) == b""  # a request that stalls half-way: the same
        assert _client(url, tmp_path).jobs() == []  # and the service serves on
    finally:
        server.shutdown()
        server.server_close()


ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


def test_agents_are_who_their_token_says(bundles, tmp_path):
    """With the lab token anyone could finish another agent's job with invented numbers or lease
    another host's phone for a day; with accounts, each agent acts for itself only."""
    from device_bench.lab import load_agents

    (tmp_path / "agents.toml").write_text(
        f'[[agent]]\nname = "alice"\ntoken = "{ALICE}"\ndevices = ["host"]\n'
        f'[[agent]]\nname = "bob"\ntoken = "{BOB}"\ndevices = ["10.0.0.5:5555"]\n'
    )
    agents = load_agents(tmp_path / "agents.toml", TOKEN)
    config = ServiceConfig(tmp_path / "lab.db", tmp_path / "lab-data", TOKEN, agents=agents, max_lease_s=600)
    server = make_server(config, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        lab, alice, bob = (_client(url, tmp_path, token) for token in (TOKEN, ALICE, BOB))
        bid = lab.upload_bundle(bundles[0])
        job_id = lab.submit({"bundle": bid, "device": "host", "runtime": "onnx", "runs": 2})
        with pytest.raises(ServiceError, match=r"\(403\): agent 'bob' does not own host"):
            bob.lease("bob", ["host"], lease_s=60)
        with pytest.raises(ServiceError, match=r"\(403\): this token is agent 'bob', not 'alice'"):
            bob.lease("alice", ["host"], lease_s=60)
        with pytest.raises(ServiceError, match=r"\(403\): agents use their own token"):
            lab.lease("alice", ["host"], lease_s=60)
        with pytest.raises(ServiceError, match=r"\(400\): lease_s must be a number in \(0, 600\]"):
            alice.lease("alice", ["host"], lease_s=86400)
        with pytest.raises(ServiceError, match=r"\(403\): agent 'alice' may lease and report jobs only"):
            alice.submit({"bundle": bid, "device": "host", "runtime": "onnx"})
        assert alice.lease("alice", ["host"], lease_s=60)["id"] == job_id
        with pytest.raises(LeaseLost):  # bob cannot finish (or renew, fail, release) alice's lease
            bob._call("POST", f"/v1/jobs/{job_id}/fail", {"agent": "bob", "reason": "invented"})
        agent, _ = _quiet_agent(alice, ["host"], name="alice")
        with ResultStore(config.store) as store:
            store.release(job_id, "alice")  # back to the queue: the agent below takes it for real
        assert agent.run(once=True) == 1
        with ResultStore(config.store) as store:
            assert store.job(job_id)["status"] == "done" and store.job(job_id)["agent"] == "alice"
    finally:
        server.shutdown()
        server.server_close()


def test_a_latency_model_is_calibrated_through_the_lab_queue(service, tmp_path):
    """`device-bench calibrate --server`: every plan uploaded and queued as a job, run by the agent
    that serves the device (here the host, in a thread), its result fetched from the service."""
    from compress.latency import LatencyKey, LatencyModel

    url, _ = service
    (tmp_path / "token").write_text(TOKEN)
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\narch = "resnet"\nngf = 4\nn_blocks = 1\n[data]\nimage_size = 32\n')
    client = _client(url, tmp_path)
    agent, lines = _quiet_agent(client, ["host"], name="lab-host", poll_s=0.1)
    stop = threading.Event()
    serving = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
    serving.start()
    try:
        proc = _cli("calibrate", "--config", config, "--runtime", "onnx", "--plans", "4", "--held-out", "1",
                    "--runs", "2", "--repeats", "1", "--reference-every", "0", "--server", url, "--token-file",
                    tmp_path / "token", "--out", tmp_path / "lat.json", cwd=tmp_path)  # fmt: skip
    finally:
        stop.set()
        serving.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    model = LatencyModel.load(tmp_path / "lat.json")
    assert model.key == LatencyKey("host", "onnx", "cpu", 1, "fp32") and model.calibration["fitted_plans"] == 5
    assert model.calibration["method"].startswith("per layer")  # the agent's results carry the op profile
    import onnxruntime

    assert model.tools["onnxruntime"] == onnxruntime.__version__  # as the agent's result records it
    jobs = client.jobs()  # each plan's first, profiled job of 2 runs, then at once one of at least 2 s (a fast plan)
    assert len(jobs) == 2 * len(model.calibration["points"]) + model.calibration["timed_again"] == len(lines)
    assert all(j["status"] == "done" and j["agent"] == "lab-host" for j in jobs)
    assert all(j["tag"].startswith("calibration lat.json ") for j in jobs)
    (first, result) = client.job_result(jobs[0]["id"])
    assert first["id"] == jobs[0]["id"] and result.stats.n == 2 and result.device_state["op_profile"]
    _, again = client.job_result(jobs[1]["id"])
    assert again.bundle == result.bundle and again.stats.n > 2 and not again.device_state.get("op_profile")
    with pytest.raises(ServiceError, match=r"refused \(404\): no job 999"):
        client.job_result(999)
