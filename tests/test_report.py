"""The report: its tables from the results store, the static site, and the site in a real browser
(Debian's headless Chromium, driven by Playwright, opening index.html from file://)."""

import json
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from device_bench.store import ResultStore
from reports import build_report, latency_pivot, render_site
from reports.model import device_comparison
from tests.tools import require

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def _images(page) -> list[dict]:
    """Every image of the page, scrolled through first: the sample grids load lazily."""
    page.evaluate("""async () => {
        for (let y = 0; y < document.body.scrollHeight; y += 300) {
            window.scrollTo(0, y); await new Promise(r => setTimeout(r, 20));
        }
        window.scrollTo(0, 0);
    }""")
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=10_000)
    return page.evaluate("[...document.images].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0}))")


def test_report_opens_in_headless_chromium(pipeline_run, tmp_path):
    chromium = require("chromium")
    from playwright.sync_api import sync_playwright

    folder, _ = pipeline_run
    site = tmp_path / "site"
    shutil.copytree(folder / "run" / "site", site)  # the site stands alone: no run directory beside it
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((site / "index.html").as_uri())
        rows = page.eval_on_selector_all("#summary tbody tr th", "cells => cells.map(c => c.textContent)")
        assert sorted(rows) == ["compressed", "dense"]
        assert page.locator("#latency tbody tr").count() == 4  # 2 models x 2 runtimes on the host
        images = _images(page)
        plots = {Path(i["src"]).name for i in images if "/samples/" not in i["src"]}
        assert plots == {"latency.png", "pareto.png", "search.png"}
        assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
        # the sample grid: one row per held-out image; input, dense, truth, then each exported file
        headers = page.eval_on_selector_all("#samples-compressed thead th", "cells => cells.map(c => c.textContent)")
        assert headers == ["#", "input", "dense (onnx fp32)", "ground truth", "compressed: onnx fp32",
                           "compressed: tflite fp32"]  # fmt: skip
        manifest = json.loads((folder / "run" / "export" / "manifest.json").read_text())
        rows = manifest["samples"]["images"]
        assert rows == 8 and page.locator("#samples-compressed tbody tr").count() == rows
        grid = [i for i in images if "/samples/compressed/" in i["src"]]
        assert len(grid) == rows * (len(headers) - 1) and all(i["ok"] for i in grid)
        alts = page.eval_on_selector_all("#samples-compressed img", "imgs => imgs.map(i => i.alt)")
        assert alts[:2] == ["input, image 1", "dense (onnx fp32), image 1"]
        page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
        links = page.eval_on_selector_all("nav a", "links => links.map(a => a.getAttribute('href'))")
        assert {"model-compressed.html", "model-dense.html", "device-host.html"} <= set(links)
        for link in links:
            page.goto((site / link).as_uri())
            assert page.locator("h1").count() == 1 and page.locator("table").count() >= 1, link
            assert all(i["ok"] for i in _images(page)), link
        page.goto((site / "device-host.html").as_uri())
        assert [Path(i["src"]).name for i in _images(page)] == ["latency-host.png"]
        browser.close()
    assert (tmp_path / "index.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_tables_follow_the_store(pipeline_run, tmp_path):
    folder, _ = pipeline_run
    run = folder / "run"
    store_path = tmp_path / "results.sqlite"
    with ResultStore(run / "results.sqlite") as src, ResultStore(store_path) as dst:
        for result in src.results():
            dst.finish(dst.add_job({"bundle": result.bundle, "device": result.device}), result)
        # a result of a model file that is no longer exported, and a failed job
        stale = src.results()[0]
        stale.model_sha256 = "0" * 64
        dst.finish(dst.add_job({"bundle": stale.bundle, "device": stale.device}), stale)
        dst.fail(dst.add_job({"device": "10.0.0.9:5555", "runtime": "tflite", "bundle": "/x/export"}), "unplugged")
    bundles = [run / "export", run / "export_dense"]
    data = build_report(store_path, bundles)
    assert list(data.models.index) == ["compressed", "dense"]
    assert len(data.latency) == 4  # the stale model's result is kept in the store, not shown
    assert data.failures.to_dict("records")[0] | {"created": None} == {
        "job": 6, "created": None, "device": "10.0.0.9:5555", "runtime": "tflite", "model": "export",
        "reason": "unplugged",
    }  # fmt: skip
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert data.models.loc["compressed", "macs_g"] == manifest["cost"]["macs"] / 1e9
    pivot = latency_pivot(data)
    assert set(pivot.columns) == {"host onnx/cpu", "host tflite/xnnpack"}
    newest = data.latency.sort_values("created").groupby(["model", "runtime"]).last()
    assert pivot.loc["dense", "host onnx/cpu"] == newest.loc[("dense", "onnx"), "median_ms"]
    assert data.quality_metric is None  # no quality records given: nothing to plot against latency


def test_device_bench_report_command_and_csv(pipeline_run, tmp_path):
    folder, _ = pipeline_run
    out = tmp_path / "site"
    out.mkdir()  # a report written before reports carried their marker file
    (out / "index.html").write_text("an older report")
    (out / "stale.html").write_text("from an older report")
    proc = subprocess.run(
        [sys.executable, "-m", "device_bench.cli", "report", "--store", str(folder / "run" / "results.sqlite"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "2 models, 4 results, 0 failed jobs" in proc.stdout
    assert not (out / "stale.html").exists()  # the site is replaced whole
    latency = pd.read_csv(out / "latency.csv")
    assert sorted(latency["model"]) == ["compressed", "compressed", "dense", "dense"]
    assert (latency["median_ms"] > 0).all() and (latency["n"] == 3).all()
    missing = subprocess.run(
        [sys.executable, "-m", "device_bench.cli", "report", "--store", str(tmp_path / "nope.sqlite")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_render_replaces_the_site_atomically_on_failure(pipeline_run, tmp_path, monkeypatch):
    folder, _ = pipeline_run
    out = tmp_path / "site"
    data = build_report(folder / "run" / "results.sqlite", [folder / "run" / "export"])
    index = render_site(data, out)
    before = index.read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("reports.render.plot_latency", broken)
    with pytest.raises(RuntimeError, match=r"disk full"):
        render_site(data, out)
    assert index.read_text() == before  # the old site is intact
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no half-written folder left behind


def test_models_of_the_same_name_from_two_runs_stay_apart(pipeline_run, tmp_path):
    folder, _ = pipeline_run
    other = tmp_path / "other-run" / "export"
    shutil.copytree(folder / "run" / "export", other)
    data = build_report(None, [folder / "run" / "export", other, folder / "run" / "export_dense"])
    assert list(data.models.index) == ["compressed (run)", "compressed (other-run)", "dense"]


def test_trends_page_flags_an_injected_slowdown_in_chromium(pipeline_run, tmp_path):
    """Six nights of the run's real host results (±1 % noise), the last with the compressed ONNX
    model 30 % slower: the trends page flags that series and no other."""
    chromium = require("chromium")
    from playwright.sync_api import sync_playwright

    from device_bench.records import LatencyStats
    from reports.trends import trend_table

    folder, _ = pipeline_run
    run = folder / "run"
    store_path = tmp_path / "results.sqlite"
    rng = random.Random(0)
    with ResultStore(run / "results.sqlite") as src, ResultStore(store_path) as dst:
        base = src.results()
        assert len(base) == 4 and all(r.samples_ms for r in base)
        for night in range(6):
            for r in base:
                factor = 1 + rng.uniform(-0.01, 0.01)
                if night == 5 and r.runtime == "onnx" and Path(r.bundle).name == "export":
                    factor *= 1.3
                samples = [s * factor for s in r.samples_ms]
                nightly = replace(r, samples_ms=samples, stats=LatencyStats.from_samples(samples),
                                  created=f"2026-11-{20 + night}T02:00:00+00:00")  # fmt: skip
                dst.finish(dst.add_job({"bundle": r.bundle, "device": r.device, "runtime": r.runtime}), nightly)
    data = build_report(store_path, [run / "export", run / "export_dense"])
    trends = trend_table(data.latency)
    assert len(trends) == 4 and set(trends["runs"]) == {6}
    flagged = trends[trends["status"] == "regression"]
    assert [(r.model, r.runtime) for r in flagged.itertuples()] == [("compressed", "onnx")]
    index = render_site(data, tmp_path / "site")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(index.as_uri())
        assert "4 series run more than once, 1 regression flagged" in page.inner_text("#trend-summary")
        page.click("#trend-summary a")
        assert page.url.endswith("/trends.html")
        rows = page.eval_on_selector_all(
            "#trends tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
        assert len(rows) == 4
        assert rows[0][:3] == ["compressed", "host", "onnx"] and "regression" in rows[0]  # regressions first
        assert not any("regression" in r for r in rows[1:])
        images = _images(page)
        assert [Path(i["src"]).name for i in images] == ["trends.png"] and images[0]["ok"]
        browser.close()
    assert (tmp_path / "site" / "trends.csv").is_file()


@pytest.mark.parametrize("where", ["someone's folder", "the working directory", "a run directory"])
def test_report_out_never_deletes_what_it_did_not_write(pipeline_run, tmp_path, where):
    """`--out` names a folder of other files (or `.`, or a run directory with its checkpoints):
    one line, exit 1, every file kept."""
    folder, _ = pipeline_run
    store = folder / "run" / "results.sqlite"
    target = tmp_path / "target"
    if where == "a run directory":
        shutil.copytree(folder / "run", target, symlinks=True)
    else:
        target.mkdir()
        (target / "thesis.tex").write_text("months of work")
        (target / "index.html").write_text("a page of theirs")
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    out = "." if where == "the working directory" else str(target)
    proc = subprocess.run([sys.executable, "-m", "device_bench.cli", "report", "--store", str(store), "--out", out],
                          cwd=target, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "holds files that are not a report" in proc.stderr
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before
    # a folder the report wrote is its to replace: the second report goes where the first went
    site = tmp_path / "site"
    for _ in range(2):
        again = subprocess.run([sys.executable, "-m", "device_bench.cli", "report", "--store", str(store),
                                "--out", str(site)], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.returncode == 0, again.stderr
    assert (site / ".coronet-report").is_file()


def test_devices_side_by_side_with_two_loopback_phones_and_the_host(pipeline_run, tmp_path):
    """Both phones' results beside the host's: one column per device, the speedup over the dense
    model per device, in headless Chromium."""
    chromium = require("chromium")
    from playwright.sync_api import sync_playwright

    from device_bench.adb import AdbTransport, Timeouts
    from device_bench.run import BenchJob, run_job
    from tests.loopback_device.adb_device import LoopbackDevice
    from tests.loopback_device.personas import build_sandbox
    from tests.loopback_device.standins import write_binaries

    folder, _ = pipeline_run
    run = folder / "run"
    store_path = tmp_path / "results.sqlite"
    shutil.copy(run / "results.sqlite", store_path)
    binaries = write_binaries(tmp_path / "bin")
    serials = []
    with ResultStore(store_path) as store:
        for persona in ("sm8450", "mt6893"):
            root = tmp_path / persona
            with (
                LoopbackDevice(root, build_sandbox(root, persona)) as phone,
                AdbTransport(phone.serial, tmp_path / "adbkey", Timeouts(read_s=10, command_s=20)) as t,
            ):
                serials.append(phone.serial)
                for bundle in (run / "export", run / "export_dense"):
                    job = BenchJob(str(bundle), phone.serial, "tflite", warmup=1, runs=3, poll_s=0.2)
                    store.finish(store.add_job(job), run_job(job, t, binaries))
    data = build_report(store_path, [run / "export", run / "export_dense"])
    render_site(data, tmp_path / "site")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((tmp_path / "site" / "index.html").as_uri())
        page.click("text=devices side by side")
        headers = page.eval_on_selector_all(
            "#devices thead tr:first-child th", "cells => cells.map(c => c.textContent)"
        )
        assert {f"{serials[0]} (SM8450)", f"{serials[1]} (MT6893)", "host"} <= set(headers)
        rows = page.eval_on_selector_all("#speedup tbody tr", "rows => rows.map(r => r.textContent)")
        assert len(rows) == 2 and all("compressed" in r or "tflite" in r or "onnx" in r for r in rows)
        speedups = page.eval_on_selector_all("#speedup tbody td", "cells => cells.map(c => c.textContent)")
        assert all(float(v) > 0 for v in speedups if v not in ("—", "")), speedups
        page.screenshot(path=str(tmp_path / "devices.png"), full_page=True)
        # the index's 8 results: sorted by a click on a header, filtered by typing
        page.goto((tmp_path / "site" / "index.html").as_uri())
        # image 1 as each phone computed it in its output check, beside this host's
        heads = page.eval_on_selector_all("#device-samples-compressed th", "cells => cells.map(c => c.textContent)")
        assert heads[:2] == ["input", "compressed: onnx fp32"] and len(heads) == 4
        assert sorted(h.split(" tflite/xnnpack")[0] for h in heads[2:]) == sorted(serials), heads
        phone_images = [i for i in _images(page) if "/device-" in i["src"]]
        assert len(phone_images) == 2 and all(i["ok"] for i in phone_images)
        median = page.locator("#latency thead th", has_text="median ms")
        column = "cells => cells.map(c => c.textContent)"
        median.click()
        values = [float(v) for v in page.eval_on_selector_all("#latency tbody td:nth-child(6)", column)]
        assert len(values) == 8 and values == sorted(values)
        median.click()
        values = [float(v) for v in page.eval_on_selector_all("#latency tbody td:nth-child(6)", column)]
        assert values == sorted(values, reverse=True)
        page.fill("input.filter", f"{serials[0]} dense")
        shown = page.eval_on_selector_all("#latency tbody tr:not([hidden])", "rows => rows.length")
        assert shown == 1
        browser.close()
    medians, speedup = device_comparison(data)
    row = ("compressed", "tflite", "xnnpack")
    for serial in serials:  # the page's number is the stored medians' ratio
        dense = medians.loc[("dense", "tflite", "xnnpack"), serial]
        assert speedup.loc[row, serial] == pytest.approx(dense / medians.loc[row, serial])


def test_a_lower_precision_sits_at_its_own_quality_in_the_pareto_plot():
    from reports.model import ReportData
    from reports.render import pareto_points

    models = pd.DataFrame([{"name": "compressed", "l1": 0.030, "l1_tflite-int8": 0.034}]).set_index("name")
    rows = [
        {
            "model": "compressed",
            "device": "host",
            "runtime": runtime,
            "delegate": "xnnpack",
            "median_ms": ms,
            "created": "2026-12-02T10:00:00+00:00",
        }
        for runtime, ms in (("tflite", 80.0), ("tflite int8", 60.0))
    ]
    points = pareto_points(ReportData("t", models, pd.DataFrame(rows), pd.DataFrame()))
    assert points["host tflite/xnnpack"].loc["compressed"].to_dict() == {"latency_ms": 80.0, "quality": 0.030}
    assert points["host tflite int8/xnnpack"].loc["compressed"].to_dict() == {"latency_ms": 60.0, "quality": 0.034}


def test_sample_paths_outside_the_bundle_are_not_copied(tmp_path):
    from reports.model import _samples

    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "onnx-0.png").write_bytes(b"\x89PNG")
    (tmp_path / "secret").write_text("x")
    (tmp_path / "samples" / "link-0.png").symlink_to(tmp_path.parent)
    columns = {"onnx": ["samples/onnx-0.png"], "abs": ["/etc/hostname"], "up": ["../secret"],
               "link": ["samples/link-0.png/x"], "odd": "samples/onnx-0.png"}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": {"images": 1, "columns": columns}}))
    assert _samples(tmp_path) == {"onnx": [tmp_path / "samples" / "onnx-0.png"]}
