"""The pipeline command on a tiny config, and its one-line errors (run as a real subprocess)."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import compress
from device_bench.store import ResultStore
from reports.render import slug
from tests.loopback_device.adb_device import LoopbackDevice
from tests.loopback_device.personas import build_sandbox
from tests.loopback_device.standins import write_binaries
from tests.pipeline import ROOT, TINY_PIPELINE, interruptible, run_pipeline

STAGES = ("dense", "search", "slim", "converge", "export", "bench", "report")


def _run(*args, cwd):
    return run_pipeline(*args, cwd=cwd)


def _files(run: Path) -> dict[str, float]:
    """Every file of a run directory with its modification time."""
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def _copy(pipeline_run, tmp_path) -> Path:
    folder, _ = pipeline_run
    shutil.copytree(folder, tmp_path / "copy", symlinks=True)
    return tmp_path / "copy"


def test_every_stage_runs_and_writes_its_artifacts(pipeline_run):
    folder, proc = pipeline_run
    run = folder / "run"
    for stage in STAGES:
        assert f"[{stage}] " in proc.stdout and f"[{stage}] up to date" not in proc.stdout
        assert (run / "stages" / f"{stage}.json").is_file()
    search = json.loads((run / "search.json").read_text())
    assert search["reached"] and 0.48 <= search["ratio"] <= 0.5
    slim = compress.load_checkpoint(run / "slim.pt")
    assert slim.kind == "generator" and slim.plan.to_dict() == search["plan"]
    assert json.loads((run / "slim.json").read_text())["max_abs_diff_vs_hyper"] < 1e-5
    assert "channel plan (kept/full)" in proc.stdout and "trunk" in proc.stdout
    assert len((run / "search_log.jsonl").read_text().splitlines()) == search["steps"]
    converged = json.loads((run / "converge.json").read_text())
    assert converged["steps"] == 4 and 0 < converged["paired"]["l1"] < 2
    assert converged["quality"]["fid"]["fid"] is None and "not found" in converged["quality"]["fid"]["reason"]
    assert compress.load_checkpoint(run / "converged.pt").plan == slim.plan
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["model"]["plan"] == search["plan"] and manifest["input"]["shape"] == [1, 3, 32, 32]
    assert manifest["model"]["name"] == "compressed" and "XNNPACK partitions 1" in proc.stdout
    dense = json.loads((run / "export_dense" / "manifest.json").read_text())
    assert dense["model"]["name"] == "dense" and dense["cost"]["macs"] > manifest["cost"]["macs"]
    assert json.loads((run / "dense.json").read_text())["trained"] is True
    with ResultStore(run / "results.sqlite") as store:
        results = store.results()
    assert sorted((r.runtime, r.model_sha256) for r in results) == sorted(
        (rt, m["files"][rt]["sha256"]) for m in (manifest, dense) for rt in ("onnx", "tflite")
    )
    assert all(r.device == "host" and r.stats.n == 3 for r in results)
    assert (run / "site" / "index.html").is_file()
    # the summary table: both models, their cost, and the host latency of each runtime
    summary = proc.stdout.split("summary (latency: median ms):")[1]
    assert "compressed" in summary and "dense" in summary and "host tflite/xnnpack ms" in summary
    assert f"report: {(run / 'site' / 'index.html').resolve()}" in proc.stdout


def test_second_run_does_no_work(pipeline_run):
    folder, _ = pipeline_run
    before = _files(folder / "run")
    proc = _run("tiny.toml", "--run-dir", "run", "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    for stage in STAGES:
        assert f"[{stage}] up to date: " in proc.stdout
    assert _files(folder / "run") == before  # nothing rewritten, nothing added


def test_changing_the_target_reruns_from_search(pipeline_run, tmp_path):
    folder = _copy(pipeline_run, tmp_path)
    old_plan = json.loads((folder / "run" / "search.json").read_text())["plan"]
    proc = _run("tiny.toml", "--run-dir", "run", "--quiet", "--target-macs", "0.3", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    # the dense reference does not depend on the target: trained once per run directory
    assert proc.stdout.count("up to date") == 1 and "[dense] up to date" in proc.stdout
    search = json.loads((folder / "run" / "search.json").read_text())
    assert 0.28 <= search["ratio"] <= 0.3 and search["plan"] != old_plan
    manifest = json.loads((folder / "run" / "export" / "manifest.json").read_text())
    assert manifest["model"]["plan"] == search["plan"]


def test_from_export_reuses_the_checkpoint(pipeline_run, tmp_path):
    folder = _copy(pipeline_run, tmp_path)
    run = folder / "run"
    kept = {name: (run / name).stat().st_mtime_ns for name in ("converged.pt", "slim.pt", "checkpoints/hyper.pt")}
    dense_sha = compress_sha(run / "dense.pt")
    proc = _run("tiny.toml", "--run-dir", "run", "--quiet", "--from", "export", "--precision", "int8", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "[search]" not in proc.stdout and "[converge]" not in proc.stdout
    assert "[export] wrote" in proc.stdout and "[bench] " in proc.stdout and "[report] wrote" in proc.stdout
    assert {name: (run / name).stat().st_mtime_ns for name in kept} == kept
    assert "[dense]" not in proc.stdout and compress_sha(run / "dense.pt") == dense_sha  # trained once, kept
    dense_manifest = json.loads((run / "export_dense" / "manifest.json").read_text())
    assert (
        dense_manifest["source"]["sha256"] == dense_sha
        and dense_manifest["files"]["tflite-int8"]["precision"] == "int8"
    )
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert list(manifest["files"]) == ["onnx", "onnx-int8", "tflite", "tflite-int8"]
    assert all(manifest["files"][k]["integer"]["fully_integer"] for k in ("onnx-int8", "tflite-int8"))
    quality = manifest["quality"]["files"]  # calibrated on the run's images, judged on its held-out pairs
    assert quality["tflite-int8"]["psnr_loss_db"] <= manifest["quality"]["budget_db"], quality
    assert "tflite-int8 parity" in proc.stdout and "dB PSNR lost" in proc.stdout
    assert manifest["source"]["sha256"] == compress_sha(run / "converged.pt")
    with ResultStore(run / "results.sqlite") as store:
        results = store.results()
    # every result is kept: the first run's 4 fp32 ones, then 2 bundles x (2 fp32 + 2 int8)
    assert len(results) == 12 and sum(r.precision == "int8" for r in results) == 4
    page = (run / "site" / "index.html").read_text()
    assert "tflite int8" in page and "onnx int8" in page


def _official_generator(folder: Path) -> Path:
    """A tiny generator in the official pytorch-CycleGAN-and-pix2pix layout, as a user's .pth."""
    import torch

    from tests.official_layouts import OfficialResnet, randomize

    path = folder / "latest_net_G_A.pth"
    torch.save(randomize(OfficialResnet(8, 1)).state_dict(), path)
    return path


def test_init_from_an_official_file_runs_every_stage(tmp_path):
    _official_generator(tmp_path)
    config = TINY_PIPELINE.split("[data]")[0].split("[model]")[0] + "[data]" + TINY_PIPELINE.split("[data]")[1]
    (tmp_path / "mine.toml").write_text(config)  # no [model]: it comes from the file
    proc = _run("mine.toml", "--init-from", "latest_net_G_A.pth", "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[model] resnet (ngf 8, n_blocks 1, input_nc 3, output_nc 3), read from latest_net_G_A.pth" in proc.stdout
    for stage in STAGES:
        assert f"[{stage}] " in proc.stdout
    dense = json.loads((tmp_path / "run" / "dense.json").read_text())
    assert "pytorch-CycleGAN-and-pix2pix resnet_1blocks" in dense["source"] and dense["trained"]
    search = json.loads((tmp_path / "run" / "search.json").read_text())
    assert search["reached"] and 0.48 <= search["ratio"] <= 0.5
    # a config whose [model] contradicts the file is refused in one line
    (tmp_path / "other.toml").write_text(TINY_PIPELINE.replace("ngf = 8", "ngf = 16"))
    proc = _run("other.toml", "--init-from", "latest_net_G_A.pth", "--run-dir", "run2", cwd=tmp_path)
    assert proc.returncode == 1 and "ngf = 8, but ngf = 16" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_init_from_with_from_export_times_the_file_without_training(tmp_path):
    _official_generator(tmp_path)
    (tmp_path / "bench.toml").write_text("[data]\nimage_size = 32\n[bench]\nruns = 3\nwarmup_s = 0.05\n")
    args = ("bench.toml", "--init-from", "latest_net_G_A.pth", "--from", "export", "--run-dir", "run", "--quiet")
    proc = _run(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert "[dense] latest_net_G_A.pth: resnet" in proc.stdout and "no compressed model yet" in proc.stdout
    for stage in ("search", "slim", "converge"):
        assert f"[{stage}]" not in proc.stdout
    assert not (run / "search_log.jsonl").exists() and not (run / "converged.pt").exists()
    manifest = json.loads((run / "export_dense" / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 3, 32, 32] and not (run / "export").exists()
    with ResultStore(run / "results.sqlite") as store:
        results = store.results()
    assert sorted(r.runtime for r in results) == ["onnx", "tflite"]
    assert {r.model_sha256 for r in results} == {f["sha256"] for f in manifest["files"].values()}
    assert "the resnet generator as it is" in (run / "site" / "index.html").read_text()
    again = _run(*args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("up to date") == 4


def compress_sha(path: Path) -> str:
    from compress.runstate import sha256_file

    return sha256_file(path)


def test_unreachable_device_is_one_line_and_keeps_finished_stages(pipeline_run, tmp_path):
    folder = _copy(pipeline_run, tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run("tiny.toml", "--run-dir", "run", "--quiet", "--devices", f"127.0.0.1:{port}", cwd=folder)
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}: connect failed" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    for stage in ("search", "slim", "converge", "export"):
        assert f"[{stage}] up to date" in proc.stdout
    with ResultStore(folder / "run" / "results.sqlite") as store:
        failed = store.jobs("failed")
    assert len(failed) == 1 and f"127.0.0.1:{port}" in failed[0]["reason"]
    again = _run("tiny.toml", "--run-dir", "run", "--quiet", cwd=folder)  # back to the host: all done
    assert again.returncode == 0 and again.stdout.count("up to date") == len(STAGES)


def test_missing_data_folder_is_one_line_and_keeps_finished_stages(pipeline_run, tmp_path):
    folder = _copy(pipeline_run, tmp_path)
    config = (
        (folder / "tiny.toml")
        .read_text()
        .replace("image_size = 32", "image_size = 32\nkind = 'aligned'\nroot = 'nope'")
    )
    (folder / "other.toml").write_text(config)
    proc = _run("other.toml", "--run-dir", "run", "--quiet", cwd=folder)
    assert proc.returncode == 1
    assert "aligned pairs (train) folder nope/train does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    again = _run("tiny.toml", "--run-dir", "run", "--quiet", cwd=folder)
    assert again.returncode == 0 and again.stdout.count("up to date") == len(STAGES)


@pytest.mark.parametrize(("config", "message"), [
    ("[search]\ntarget_mac = 0.5\n", "unknown key 'target_mac' in [search]; allowed: target_macs"),
    ("[model]\narch = 'vgg'\n", "unknown generator architecture 'vgg'"),
    ("[model]\narch = 'resnet'\nblocks = 3\n", "unknown key 'blocks' in [model] for arch 'resnet'"),
    ("[search]\nlam = 'big'\n", "search.lam must be a finite number, got 'big'"),
    ("[search\n", "is not valid TOML"),
])  # fmt: skip
def test_bad_config_is_one_line_and_exit_1(tmp_path, config, message):
    (tmp_path / "bad.toml").write_text(config)
    proc = _run("bad.toml", "--run-dir", "run", cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_missing_and_corrupt_inputs_are_one_line(tmp_path):
    proc = _run("missing.toml", cwd=tmp_path)
    assert proc.returncode == 1 and "config file missing.toml does not exist" in proc.stderr
    proc = _run("--from", "slim", "--run-dir", "empty", cwd=tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "hyper.pt").write_bytes(b"\x00" * 100)
    proc = _run("--from", "slim", "--run-dir", "run", cwd=tmp_path)
    assert proc.returncode == 1 and "corrupt or truncated" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_help_explains_the_command():
    proc = _run("--help", cwd=ROOT)
    assert proc.returncode == 0
    assert "--target-macs" in proc.stdout and "configs/demo.toml" in proc.stdout


@pytest.mark.parametrize("name", ["demo", "cyclegan_horse2zebra", "pix2pix_edges2shoes"])
def test_shipped_configs_parse(name):
    from compress.config import load_config

    config = load_config(ROOT / "configs" / f"{name}.toml")
    assert config.search.target_macs < 1 and config.train.setup in ("pix2pix", "cyclegan")


def test_a_lost_results_store_is_benchmarked_again(pipeline_run, tmp_path):
    folder = _copy(pipeline_run, tmp_path)
    for leftover in (folder / "run").glob("results.sqlite*"):
        leftover.unlink()
    proc = _run("tiny.toml", "--run-dir", "run", "--quiet", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "[export] up to date" in proc.stdout and "[bench] 4 results on host" in proc.stdout
    with ResultStore(folder / "run" / "results.sqlite") as store:
        assert len(store.results()) == 4


def test_bench_on_a_loopback_phone_lands_in_the_report(pipeline_run, tmp_path):
    folder = _copy(pipeline_run, tmp_path)
    root = tmp_path / "phone"
    with LoopbackDevice(root, build_sandbox(root, "mt6893")) as phone:
        binaries = write_binaries(tmp_path / "bin")
        proc = run_pipeline("tiny.toml", "--run-dir", "run", "--quiet", "--from", "bench", "--runtimes", "tflite",
                            "--devices", f"host,{phone.serial}", "--binaries", str(binaries), cwd=folder,
                            home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"[bench] 4 results on host, {phone.serial}" in proc.stdout
    with ResultStore(folder / "run" / "results.sqlite") as store:
        on_phone = [r for r in store.results() if r.device == phone.serial]
    assert len(on_phone) == 2 and all(r.runtime == "tflite" and r.stats.n == 3 for r in on_phone)
    latency = pd.read_csv(folder / "run" / "site" / "latency.csv")
    assert set(latency["device"]) == {"host", phone.serial}  # the earlier host results are kept too
    assert (folder / "run" / "site" / f"device-{slug(phone.serial)}.html").is_file()
    summary = proc.stdout.split("summary (latency: median ms):")[1]
    assert f"{phone.serial} tflite/xnnpack ms" in summary


def test_ctrl_c_leaves_the_run_resumable(tmp_path):
    """SIGINT during the search: exit 130 with one line; the next run continues the step count."""
    config = TINY_PIPELINE.replace("lam = 50.0", "lam = 4.0\ncheckpoint_every = 5").replace(
        "max_steps = 300", "max_steps = 3000"
    )
    (tmp_path / "slow.toml").write_text(config)
    args = [
        sys.executable,
        str(ROOT / "compress_and_ship.py"),
        "slow.toml",
        "--run-dir",
        "run",
        "--quiet",
        "--to",
        "search",
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)  # fmt: skip
    state = tmp_path / "run" / "checkpoints" / "search_state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "compress-and-ship: interrupted; finished stages are kept in the run directory"
    interrupted_at = len((tmp_path / "run" / "search_log.jsonl").read_text().splitlines())
    assert state.exists() and interrupted_at >= 5 and "[search]" not in out
    again = _run("slow.toml", "--run-dir", "run", "--quiet", "--to", "search", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    search = json.loads((tmp_path / "run" / "search.json").read_text())
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "search_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, search["steps"] + 1)) and search["steps"] > interrupted_at and search["reached"]
