"""Qualcomm AI Hub profiles imported beside the lab's results: the file is written from the field
names AI Hub documents (execution_summary, execution_detail), imported with the real CLI, and
the report shown in headless Chromium."""

import json
import os
import subprocess
import sys

import pytest
import torch

import compress
import export
from device_bench.store import ResultStore
from tests.test_report import CHROMIUM_ARGS
from tests.tools import require

PROFILE = {
    "execution_summary": {
        "estimated_inference_time": 4210,  # µs
        "estimated_inference_peak_memory": 12_582_912,
        "first_load_time": 1_350_000,
        "warm_load_time": 180_000,
        "all_inference_times": [4310, 4210, 4190, 4250, 4205, 4400],
    },
    "execution_detail": [
        {"name": "conv_in", "type": "Conv2d", "compute_unit": "NPU", "execution_time": 820},
        {"name": "norm_in", "type": "InstanceNorm", "compute_unit": "NPU", "execution_time": 310},
        {"name": "up_1", "type": "TransposeConv2d", "compute_unit": "NPU", "execution_time": 1490},
        {"name": "out_tanh", "type": "Tanh", "compute_unit": "CPU", "execution_time": 95},
    ],
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = compress.build_generator("resnet", compress.full_plan("resnet", ngf=4, n_blocks=1)).eval()
    return export.export_bundle(model, tmp_path_factory.mktemp("bundle"), ("tflite",), image_size=32)


def _cli(*args, home):
    return subprocess.run([sys.executable, "-m", "device_bench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(home)}, timeout=300)  # fmt: skip


def test_an_aihub_profile_is_stored_and_reported_beside_the_lab(tmp_path, bundle):
    chromium = require("chromium")
    from playwright.sync_api import sync_playwright

    (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
    store = tmp_path / "bench.db"
    proc = _cli("import-aihub", str(tmp_path / "profile.json"), "--bundle", str(bundle.path), "--store", str(store),
                home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("aihub:SM8450:Samsung_Galaxy_S22_Family tflite: median 4.23 ms over 6")
    with ResultStore(store) as s:
        (result,) = s.results()
    assert result.device == "aihub:SM8450:Samsung_Galaxy_S22_Family" and result.delegate == "npu+cpu"
    assert result.stats.min_ms == pytest.approx(4.19) and result.init_ms == pytest.approx(180.0)
    assert result.model_sha256 == bundle.manifest["files"]["tflite"]["sha256"] and "aihub" in result.flags
    ops = result.device_state["op_profile"]
    assert [op["name"] for op in ops] == ["conv_in", "norm_in", "up_1", "out_tanh"]
    assert ops[2] == {"name": "up_1", "type": "TransposeConv2d", "compute_unit": "NPU", "time_ms": 1.49}
    assert result.device_state["soc"] == "SM8450" and result.device_state["compute_units"] == {"NPU": 3, "CPU": 1}
    proc = _cli("run", "--device", "host", "--bundle", str(bundle.path), "--runs", "3", "--store", str(store),
                "--profile", home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ops profiled" in proc.stdout
    proc = _cli("report", "--store", str(store), "--out", str(tmp_path / "site"), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((tmp_path / "site" / "index.html").as_uri())
        cells = "cells => cells.map(c => c.textContent)"
        devices = page.eval_on_selector_all("#latency tbody tr td:nth-child(2)", cells)
        assert sorted(devices) == ["aihub:SM8450:Samsung_Galaxy_S22_Family", "host"]
        page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
        # the per-op page: AI Hub's rows by type beside the host's LiteRT profile; its 2 convs are
        # not the plan's 8 layers, so only the host's is laid per layer
        page.click("text=ops: ")
        heads = page.eval_on_selector_all("#ops-types thead th", cells)
        assert "aihub:SM8450:Samsung_Galaxy_S22_Family tflite/npu+cpu" in heads and "host tflite/xnnpack" in heads
        rows = page.eval_on_selector_all("#ops-types tbody th", cells)
        assert {"TransposeConv2d", "InstanceNorm", "CONV_2D", "sum of ops", "measured median"} <= set(rows)
        column = heads.index("aihub:SM8450:Samsung_Galaxy_S22_Family tflite/npu+cpu")
        conv = page.eval_on_selector_all(f"#ops-types tbody tr:has(th:text-is('Conv2d')) td:nth-child({column + 1})",
                                         cells)  # fmt: skip
        assert conv == ["0.82"]
        assert "aihub" in page.text_content("#ops-unmatched")
        layer_rows = page.eval_on_selector_all("#ops-layers tbody th", cells)
        assert len(layer_rows) == len(bundle.manifest["layers"]) + 3  # input, 8 layers, sum, measured
        page.screenshot(path=str(tmp_path / "ops.png"), full_page=True)
        browser.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        (json.dumps({"execution_summary": {}}), "no execution_summary.estimated_inference_time"),
        (json.dumps({"execution_summary": {"estimated_inference_time": -3}}), "must be a non-negative number"),
    ],
)
def test_a_file_that_is_not_a_profile_is_one_line(tmp_path, bundle, content, message):
    (tmp_path / "p.json").write_text(content)
    proc = _cli("import-aihub", str(tmp_path / "p.json"), "--bundle", str(bundle.path), "--store",
                str(tmp_path / "b.db"), home=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("import-aihub", str(tmp_path / "p.json"), "--bundle", str(bundle.path), "--device", "Pixel 8",
                home=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    proc = _cli("import-aihub", str(tmp_path), "--bundle", str(bundle.path), home=tmp_path)  # a folder
    assert proc.returncode == 1 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
