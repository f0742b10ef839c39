"""Render a `ReportData` to a static site: index.html, a page per model and per device, PNG plots
and a CSV of every table. Every link and image is relative, so the folder works from file://
with no server and no external assets. The site is built in a temp folder and swapped in."""

from __future__ import annotations

import html
import json
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from coronet.errors import ReportError
from reports.model import (
    ReportData,
    device_comparison,
    latency_pivot,
    latency_predictions,
    op_tables,
    summary_table,
)
from reports.trends import SERIES, TrendRule, trend_table

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; } nav a { margin-right: 1em; }
input.filter { display: block; margin: 1em 0 0 0; padding: 0.2em 0.4em; width: 20em; }
th[data-sorted=ascending]::after { content: " \\25B2"; } th[data-sorted=descending]::after { content: " \\25BC"; }
table.samples td { padding: 2px; } table.samples td, table.samples th { text-align: center; }
table.samples img { width: 8em; margin: 0; image-rendering: pixelated; }
table.samples th { font-size: 0.85em; font-weight: normal; } caption { text-align: left; margin: 0.3em 0; }
"""


MODEL_COLUMNS = {
    "macs_g": "GMACs", "true_macs_g": "true GMACs", "params_m": "M params", "l1": "L1", "psnr": "PSNR dB",
    "fid": "FID", "kid": "KID", "parity_onnx": "ONNX max |Δ|", "parity_tflite": "TFLite max |Δ|",
    "mb_onnx": "ONNX MB", "mb_tflite": "TFLite MB", "input": "input",
}  # fmt: skip


LATENCY_HEADERS = {"median_ms": "median ms", "p90_ms": "p90 ms", "min_ms": "min ms", "n": "runs",
                   "init_ms": "init ms"}  # fmt: skip


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def _page(title: str, body: str, nav: str = "") -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            f"<nav>{nav}</nav>\n<h1>{html.escape(title)}</h1>\n{body}\n"
            f'<script src="tables.js"></script>\n</body></html>\n')  # fmt: skip


def _table(frame: pd.DataFrame, table_id: str, index: bool = True) -> str:
    if frame.empty:
        return f'<p class="note" id="{table_id}">none</p>'
    if index and not isinstance(frame.index, pd.MultiIndex):  # its name would be a header row of its own
        frame = frame.rename_axis(index=None, columns=None)
    return frame.to_html(table_id=table_id, index=index, float_format=lambda v: f"{v:.4g}", na_rep="—",
                         escape=True, border=0)  # fmt: skip


def _img(src: str, alt: str) -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'


def _column_label(key: str) -> str:
    runtime, _, precision = key.partition("-")
    return f"{runtime} {precision}" if precision else f"{runtime} fp32"


def sample_grid(data: ReportData, model: str, out: Path) -> str:
    """The model's sample grid: one row per held-out image; its input, the dense model's output,
    the true output, then the model's output from each exported file run in its own runtime.
    The PNGs are copied into the site (samples/<model>/), so the site stands alone."""
    own = data.samples.get(model)
    if not own:
        return ""
    columns: list[tuple[str, list[Path]]] = [("input", own["input"])] if "input" in own else []
    dense = data.samples.get("dense")
    if dense and model != "dense":
        reference = next((k for k in ("onnx", "tflite", "executorch") if k in dense), None)
        if reference is not None:
            columns.append((f"dense ({_column_label(reference)})", dense[reference]))
    if "truth" in own:
        columns.append(("ground truth", own["truth"]))
    columns += [(f"{model}: {_column_label(k)}", files) for k, files in own.items() if k not in ("input", "truth")]
    count = min(len(files) for _, files in columns)
    folder = out / "samples" / slug(model)
    folder.mkdir(parents=True, exist_ok=True)
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in columns)
    rows = []
    for i in range(count):
        cells = []
        for label, files in columns:
            name = f"{slug(label)}-{i}.png"
            shutil.copyfile(files[i], folder / name)
            alt = html.escape(f"{label}, image {i + 1}")
            cells.append(f'<td><img loading="lazy" src="samples/{slug(model)}/{name}" alt="{alt}" title="{alt}"></td>')
        rows.append(f"<tr><th>{i + 1}</th>{''.join(cells)}</tr>")
    caption = (f"{count} held-out images: each exported file's output computed by its own runtime on this "
               "host, at the export's input size")  # fmt: skip
    grid = (f'<table class="samples" id="samples-{slug(model)}"><caption class="note">{html.escape(caption)}'
            f"</caption><thead><tr><th>#</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")  # fmt: skip
    return grid + _device_outputs(data, model, columns, folder)


def _device_outputs(data: ReportData, model: str, columns: list[tuple[str, list[Path]]], folder: Path) -> str:
    """Image 1 (the bundle's check input) as the devices computed it, beside this host's files."""
    found = data.device_outputs.get(model)
    if not found:
        return ""
    cells, head = [], []
    shown = [label for label, _ in columns if label == "input"]
    shown += [label for label, _ in columns if label.startswith(f"{model}: ") and label.endswith("fp32")][:1]
    for label in shown:
        head.append(html.escape(label))
        cells.append(f'<img loading="lazy" src="samples/{folder.name}/{slug(label)}-0.png" alt="{html.escape(label)}">')
    for i, (label, (png, psnr)) in enumerate(found.items()):
        name = f"device-{i}.png"
        (folder / name).write_bytes(png)
        head.append(f"{html.escape(label)}<br>PSNR {psnr:.1f} dB")
        cells.append(f'<img loading="lazy" src="samples/{folder.name}/{name}" alt="{html.escape(label)}">')
    row = "".join(f"<td>{c}</td>" for c in cells)
    return (
        f'<table class="samples" id="device-samples-{folder.name}"><caption class="note">Image 1 as each '
        "device computed it in its on-device output check (PSNR against this host's fp32 file)</caption>"
        f"<thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody><tr>{row}</tr></tbody></table>"
    )


# --- plots ---------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return True


def plot_latency(data: ReportData, path: Path, device: str | None = None) -> bool:
    table = latency_pivot(data)
    p90 = latency_pivot(data, "p90_ms")
    if device is not None and not table.empty:
        keep = [c for c in table.columns if c.startswith(f"{device} ")]
        table, p90 = table[keep], p90[keep]
    if table.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(table.columns) + 2), 3.6))
    width = 0.8 / len(table.index)
    for i, model in enumerate(table.index):
        xs = [j + i * width for j in range(len(table.columns))]
        medians = table.loc[model].to_numpy(dtype=float)
        upper = (p90.loc[model].to_numpy(dtype=float) - medians).clip(min=0)
        upper = [u if u == u else 0 for u in upper]  # no p90 (benchmark_model): no whisker
        ax.bar(xs, medians, width, yerr=[[0] * len(xs), upper], capsize=3, label=model)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(table.columns))], table.columns, rotation=15, ha="right")
    ax.set_ylabel("median latency, ms (whisker: p90)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_layers(per_layer: pd.DataFrame, path: Path) -> bool:
    """Each layer's share of its profile's time, one bar per device and runtime: shares, so a
    phone and the host sit on one axis, and the slow layer of each stands out."""
    layers = per_layer.iloc[:-2]  # without the sum and measured rows
    if layers.empty:
        return False
    shares = layers / layers.sum()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(shares.index) * max(1, len(shares.columns)) ** 0.5 + 1.5))
    height = 0.8 / len(shares.columns)
    for i, label in enumerate(shares.columns):
        ys = [j + i * height for j in range(len(shares.index))]
        ax.barh(ys, shares[label].fillna(0).to_numpy() * 100, height, label=label)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(shares.index))], shares.index, fontsize=7)
    ax.invert_yaxis()  # forward order from the top
    ax.set_xlabel("share of the profiled time, %")
    ax.legend(fontsize=7)
    return _save(fig, path)


def pareto_points(data: ReportData) -> dict[str, pd.DataFrame]:
    """Per device/runtime column: each rated model's (latency ms, quality). A lower precision's
    point sits at its own file's held-out L1 (run in its runtime), not at the PyTorch model's."""
    metric = data.quality_metric
    if metric is None or data.latency.empty:
        return {}
    rated = data.models[data.models[metric].notna()]
    table = latency_pivot(data)
    table = table.loc[[m for m in table.index if m in rated.index]]
    points = {}
    for column in table.columns:
        quality = rated.loc[table.index, metric]
        _, runtime, *precision = column.split("/")[0].split(" ")  # "host tflite int8/xnnpack"
        own = f"l1_{runtime}-{precision[0]}" if precision else None
        if metric == "l1" and own in rated:
            quality = rated.loc[table.index, own].fillna(quality)
        points[column] = pd.DataFrame({"latency_ms": table[column], "quality": quality})
    return points


def plot_pareto(data: ReportData, path: Path) -> bool:
    points = pareto_points(data)
    if not points:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    metric = data.quality_metric
    for column, frame in points.items():
        xs, ys = frame["latency_ms"].to_numpy(dtype=float), frame["quality"].to_numpy(dtype=float)
        ax.plot(xs, ys, "o-", label=column)
        for x, y, name in zip(xs, ys, frame.index, strict=True):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("median latency, ms")
    ax.set_ylabel(f"{'FID' if metric == 'fid' else 'held-out L1 to ground truth'} (lower is better)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_search(data: ReportData, path: Path) -> bool:
    log = data.search_log
    if log is None or log.empty:
        return False
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(log["step"], log["macs_ratio"], label="remaining MACs")
    if data.target_macs is not None:
        left.axhline(data.target_macs, color="gray", linestyle="--", label="target")
    left.set_xlabel("search step")
    left.set_ylabel("MACs ratio")
    left.legend(fontsize=8)
    for column in [c for c in log.columns if c.startswith("width:")]:
        right.plot(log["step"], log[column], label=column.removeprefix("width:"))
    right.set_xlabel("search step")
    right.set_ylabel("channels kept")
    right.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_trends(data: ReportData, trends: pd.DataFrame, path: Path) -> bool:
    """Each series' medians relative to its first run, oldest first; regressions marked."""
    if trends.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ordered = data.latency.sort_values("created", kind="stable")
    flagged = {tuple(r[c] for c in SERIES) for _, r in trends.iterrows() if r["status"] == "regression"}
    for key, runs in ordered.groupby(SERIES, sort=True):
        if len(runs) < 2:
            continue
        medians = runs["median_ms"].to_numpy(dtype=float)
        xs = list(range(1, len(medians) + 1))
        label = f"{key[0]} · {key[1]} {key[2]}/{key[3]}, {key[4]} thread{'s' if key[4] != 1 else ''}"
        ax.plot(xs, medians / medians[0], "o-", markersize=3, label=label)
        if key in flagged:
            ax.plot(xs[-1], medians[-1] / medians[0], "x", color="red", markersize=12, markeredgewidth=2)
    ax.axhline(1.0, color="gray", linewidth=0.5)
    ax.set_xlabel("run of the series (oldest first); red x: regression")
    ax.set_ylabel("median latency / first run's")
    ax.legend(fontsize=7)
    return _save(fig, path)


# --- pages ---------------------------------------------------------------------------------
def _write_csv(frame: pd.DataFrame | None, path: Path, index: bool = False) -> None:
    if frame is not None:
        frame.to_csv(path, index=index)


MARKER = ".coronet-report"  # in every site folder: the folder is ours to replace
SITE_SUFFIXES = (".html", ".png", ".csv", ".css", ".js", ".svg")


def _is_report_folder(folder: Path) -> bool:
    """A folder that `render_site` may replace: empty, marked as ours, or (written before the
    marker existed) holding only the files a report holds, index.html among them."""
    entries = list(folder.iterdir())
    if not entries or (folder / MARKER).is_file():
        return True
    return (folder / "index.html").is_file() and all(
        p.is_file() and not p.is_symlink() and p.suffix in SITE_SUFFIXES for p in entries
    )


def render_site(data: ReportData, out_dir: Path) -> Path:
    """Write the site into `out_dir` (replacing a previous report whole) and return its
    index.html. A folder that holds anything else is refused, never emptied."""
    given, out_dir = Path(out_dir), Path(out_dir).absolute()
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ReportError(f"{out_dir} is not a folder; pass --out a new folder for the report")
    if out_dir.is_dir() and not _is_report_folder(out_dir):
        raise ReportError(
            f"{out_dir} holds files that are not a report (no {MARKER} in it); pass --out a new or empty folder"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _render_into(data, tmp)
        (tmp / MARKER).write_text("written by CoroNet's report; the next report replaces this folder whole\n")
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared report
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return given / "index.html"


def _render_into(data: ReportData, out: Path) -> None:
    devices = sorted(data.latency["device"].unique()) if not data.latency.empty else []
    models = list(data.models.index)
    rule = TrendRule()
    trends = trend_table(data.latency, rule)
    nav = (
        '<a href="index.html">index</a>'
        + ('<a href="devices.html">devices side by side</a>' if devices else "")
        + ('<a href="trends.html">trends</a>' if not trends.empty else "")
        + "".join(f'<a href="ops-{slug(m)}.html">ops: {html.escape(m)}</a>' for m in models if m in data.op_profiles)
        + "".join(f'<a href="model-{slug(m)}.html">{html.escape(m)}</a>' for m in models)
        + "".join(f'<a href="device-{slug(d)}.html">{html.escape(d)}</a>' for d in devices)
    )

    shutil.copyfile(Path(__file__).with_name("tables.js"), out / "tables.js")  # sorting and filtering
    _write_csv(data.models, out / "models.csv", index=True)
    _write_csv(data.latency, out / "latency.csv")
    _write_csv(data.failures, out / "failures.csv")
    _write_csv(data.search_log, out / "search_log.csv")
    _write_csv(trends, out / "trends.csv")
    summary = summary_table(data)
    _write_csv(summary, out / "summary.csv", index=True)

    body = ["<h2>Dense vs compressed</h2>", _table(summary, "summary")]
    predictions = latency_predictions(data)
    if not predictions.empty:
        _write_csv(predictions, out / "predictions.csv", index=True)
        misses = int(predictions["verdict"].str.startswith("misses").sum())
        body += ["<h2>Predicted against measured latency</h2>",
                 '<p class="note">The latency model the search was driven by predicted each exported plan\'s median '
                 "on the device, runtime and threads it was calibrated on; the bench measured it there. Error: "
                 "measured over predicted, minus one.</p>",
                 _table(predictions, "predictions")]  # fmt: skip
        if misses:
            body.append(f'<p class="note" id="prediction-misses"><strong>{misses} model{"s" if misses > 1 else ""} '
                        "measured slower than the target.</strong></p>")  # fmt: skip
    shown = [m for m in models if m in data.samples and m != "dense"] or [m for m in models if m in data.samples]
    for model in shown:
        body += [f"<h2>Samples: {html.escape(model)}</h2>", sample_grid(data, model, out)]
    if not trends.empty:
        flagged = int((trends["status"] == "regression").sum())
        body.insert(0, f'<p id="trend-summary"><a href="trends.html">Trends</a>: {len(trends)} series run more '
                       f"than once, {flagged} regression{'s' if flagged != 1 else ''} flagged.</p>")  # fmt: skip
    detail = [c for c in MODEL_COLUMNS if c in data.models]
    body += ["<h3>Cost, quality and export checks</h3>",
             _table(data.models[detail].rename(columns=MODEL_COLUMNS), "models")]  # fmt: skip
    notes = [f"{m}: {r['quality_note']}" for m, r in data.models.iterrows()
             if isinstance(r.get("quality_note"), str) and r.get("quality_note")]  # fmt: skip
    fid_notes = {
        r["fid_note"] for _, r in data.models.iterrows() if isinstance(r.get("fid_note"), str) and r["fid_note"]
    }
    notes += [f"FID/KID unavailable: {n}" for n in sorted(fid_notes)]
    body += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    csvs = {"summary": "summary.csv", "models": "models.csv", "latency": "latency.csv", "failures": "failures.csv"}
    if not trends.empty:
        csvs["trends"] = "trends.csv"
    if data.search_log is not None:
        csvs["search log"] = "search_log.csv"
    links = ", ".join(f'<a href="{file}">{label}</a>' for label, file in csvs.items())
    body += [f'<p class="note">Every table is also a CSV: {links}.</p>']
    if plot_latency(data, out / "latency.png"):
        body += ["<h2>Latency per device and runtime</h2>", _img("latency.png", "latency per device and runtime")]
    if plot_pareto(data, out / "pareto.png"):
        body += ["<h2>Quality against latency</h2>", _img("pareto.png", "quality against latency")]
    columns = ["model", "device", "runtime", "delegate", "threads", "median_ms", "p90_ms", "n", "thermal", "fallback"]
    every = data.latency[columns].rename(columns=LATENCY_HEADERS)
    body += ["<h2>Every result</h2>", _table(every, "latency", index=False)]
    if plot_search(data, out / "search.png"):
        body += ["<h2>Search</h2>", _img("search.png", "MACs ratio and widths over the search")]
    body += ["<h2>Failed jobs</h2>", _table(data.failures, "failures", index=False)]
    (out / "index.html").write_text(_page(data.title, "\n".join(body), nav))

    if not trends.empty:
        _render_trends(trends, rule, data, out, nav)
    if devices:
        _render_devices(data, out, nav)

    for model in models:
        row = data.models.loc[[model]].T
        rows = data.latency[data.latency["model"] == model]
        page = ["<h2>Model</h2>", _table(row, "model"), "<h2>Latency</h2>",
                _table(rows[columns].rename(columns=LATENCY_HEADERS), "latency", index=False)]  # fmt: skip
        if model in data.samples:
            page += ["<h2>Samples</h2>", sample_grid(data, model, out)]
        if model in data.op_profiles:
            _render_ops(data, model, out, nav)
            page.append(f'<p><a href="ops-{slug(model)}.html">Per-op profiles, per layer</a></p>')
        (out / f"model-{slug(model)}.html").write_text(_page(f"Model {model}", "\n".join(page), nav))
    for device in devices:
        rows = data.latency[data.latency["device"] == device]
        page = ["<h2>Latency</h2>", _table(rows[columns].rename(columns=LATENCY_HEADERS), "latency", index=False)]
        name = f"latency-{slug(device)}.png"
        if plot_latency(data, out / name, device=device):
            page.append(_img(name, f"latency on {device}"))
        state = data.device_states.get(device, {})
        if state:
            page += ["<h2>Device state and tools (latest result)</h2>",
                     f"<pre>{html.escape(json.dumps(state, indent=2, default=str))}</pre>"]  # fmt: skip
        (out / f"device-{slug(device)}.html").write_text(_page(f"Device {device}", "\n".join(page), nav))


def _render_ops(data: ReportData, model: str, out: Path, nav: str) -> None:
    layers, types, unmatched = op_tables(data, model)
    name = slug(model)
    page = [
        '<p class="note">Each profiled op\'s mean time per inference, in ms, from the newest profiled run on each '
        "device and runtime: phones from their tool's op profiler (benchmark_model --enable_op_profiling, "
        "onnxruntime_perf_test -p; the profiler's own cost is in those runs), the host from ONNX Runtime's profiler "
        "and, for LiteRT, each op timed alone (LiteRT's Python API has no profiler), Qualcomm AI Hub from its "
        "profile. A layer is its convolution plus every op on its output up to the next convolution (norm, "
        "activation, the next pad, layout reorders): what shrinks with that channel group.</p>",
    ]  # fmt: skip
    if not layers.empty:
        page += ["<h2>Per layer, ms</h2>", _table(layers, "ops-layers")]
        if plot_layers(layers, out / f"ops-{name}.png"):
            page.append(_img(f"ops-{name}.png", f"share of time per layer of {model}"))
        layers.to_csv(out / f"ops-{name}-layers.csv")
    if unmatched and not data.layers.get(model):
        page.append('<p class="note" id="ops-unmatched">This bundle\'s manifest lists no layers (exported before '
                    "they were recorded): export it again to see its profiles per layer.</p>")  # fmt: skip
    elif unmatched:
        page.append(f'<p class="note" id="ops-unmatched">Not laid against the layers (their convolution ops are not '
                    f"one per layer of the plan): {html.escape(', '.join(unmatched))}.</p>")  # fmt: skip
    page += ["<h2>Per op type, ms</h2>", _table(types, "ops-types")]
    types.to_csv(out / f"ops-{name}-types.csv")
    (out / f"ops-{name}.html").write_text(_page(f"Per-op profiles: {model}", "\n".join(page), nav))


def _render_devices(data: ReportData, out: Path, nav: str) -> None:
    medians, speedup = device_comparison(data)
    medians.to_csv(out / "devices.csv")
    chips = {d: s.get("state", {}).get("soc") for d, s in data.device_states.items()}
    label = {d: f"{d} ({chips[d]})" if chips.get(d) and chips[d] not in d else d for d in medians.columns}
    medians, speedup = medians.rename(columns=label), speedup.rename(columns=label)
    page = [
        '<p class="note">The newest result of each model file on each device: median latency in ms, one '
        "column per device (phones by their ADB serial, AI Hub devices by chipset and phone).</p>",
        "<h2>Median latency, ms</h2>", _table(medians, "devices"),
    ]  # fmt: skip
    if not speedup.empty:
        page += [
            "<h2>Speedup over the dense model</h2>",
            '<p class="note">The dense model\'s median over this model\'s, on the same device with the same runtime '
            "and delegate (a lower precision against the dense model's file of that precision, else its fp32 "
            "file): above 1 is faster.</p>",
            _table(speedup, "speedup"),
        ]  # fmt: skip
    page.append('<p class="note">Also as CSV: <a href="devices.csv">devices.csv</a>.</p>')
    (out / "devices.html").write_text(_page("Devices side by side", "\n".join(page), nav))


TREND_HEADERS = {"latest_ms": "latest ms", "baseline_ms": "earlier mean ms", "bound_ms": "bound ms",
                 "change": "change", "p_value": "p", "created": "latest run"}  # fmt: skip


def _render_trends(trends: pd.DataFrame, rule: TrendRule, data: ReportData, out: Path, nav: str) -> None:
    order = {"regression": 0, "faster": 1}
    table = trends.sort_values("status", key=lambda s: s.map(lambda v: order.get(v, 2)), kind="stable")
    page = [
        f'<p class="note">The newest run of each series (one model file on one device, runtime, delegate and '
        f"thread count) against its last {rule.window} earlier runs: a regression is slower than the one-sided "
        f"{rule.confidence:.0%} prediction bound of those runs and slower by at least {rule.min_slowdown:.0%}. "
        f"A series needs {rule.min_history} earlier runs to be judged.</p>",
        _table(table.rename(columns=TREND_HEADERS), "trends", index=False),
    ]
    if plot_trends(data, trends, out / "trends.png"):
        page.append(_img("trends.png", "latency of each series over its runs"))
    (out / "trends.html").write_text(_page("Latency trends", "\n".join(page), nav))
