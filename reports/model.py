"""The report model: pandas tables built from the results store and the export manifests, kept
apart from rendering so that the same tables feed the HTML pages, the CSV files and the
pipeline's summary table."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from device_bench.op_profile import OpTime, by_type, layer_shape, per_layer
from device_bench.store import ResultStore

LATENCY_COLUMNS = ["model", "device", "runtime", "delegate", "threads", "median_ms", "p90_ms", "min_ms", "n",
                   "init_ms", "thermal", "fallback", "flags", "created"]  # fmt: skip
FAILURE_COLUMNS = ["job", "created", "device", "runtime", "model", "reason"]
PREDICTION_KEY = ("device", "runtime", "delegate", "threads", "precision")  # what a latency model predicts for


@dataclass
class ReportData:
    title: str
    models: pd.DataFrame  # one row per model, indexed by name
    latency: pd.DataFrame  # one row per stored result of a known model
    failures: pd.DataFrame  # failed jobs, with their reasons
    search_log: pd.DataFrame | None = None  # step, macs_ratio, width:<group>...
    target_macs: float | None = None
    device_states: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> last state/tools
    # model -> column ("input", "truth", a file key) -> its sample PNGs, one per held-out image
    samples: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    # model -> "device runtime/delegate" -> the newest output checked on that device: PNG bytes and PSNR
    device_outputs: dict[str, dict[str, tuple[bytes, float]]] = field(default_factory=dict)
    # model -> "device runtime/delegate" -> the newest per-op profile there and that run's median ms
    op_profiles: dict[str, dict[str, tuple[list[OpTime], float]]] = field(default_factory=dict)
    layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model -> its convs (manifest)

    @property
    def quality_metric(self) -> str | None:
        """The quality column the Pareto plot uses: FID when measured, else paired L1."""
        for column in ("fid", "l1"):
            if column in self.models and self.models[column].notna().any():
                return column
        return None


def _model_row(bundle_dir: Path, qualities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    name = manifest["model"].get("name") or bundle_dir.name
    cost, plan = manifest["cost"], manifest["model"]["plan"]
    row: dict[str, Any] = {
        "name": name,
        "arch": manifest["model"]["arch"],
        "input": "x".join(str(d) for d in manifest["input"]["shape"]),
        "macs_g": cost["macs"] / 1e9,
        "true_macs_g": cost["true_macs"] / 1e9,
        "params_m": cost["params"] / 1e6,
        "widths": " ".join(f"{g}:{w}" for g, w in plan["widths"].items()),
        "bundle": str(bundle_dir),
    }
    for runtime, check in manifest.get("parity", {}).items():
        row[f"parity_{runtime}"] = check.get("max_abs")
    for runtime, entry in manifest["files"].items():
        row[f"sha_{runtime}"] = entry["sha256"]
        row[f"mb_{runtime}"] = entry["bytes"] / 1e6
    for key, measured in manifest.get("quality", {}).get("files", {}).items():
        if "psnr_loss_db" in measured:  # a lower precision's loss on the task, run in its own runtime
            row[f"psnr_loss_db_{key}"] = measured["psnr_loss_db"]
        if "l1" in measured:  # each file's own held-out L1, for the quality-latency plot
            row[f"l1_{key}"] = measured["l1"]
    prediction = manifest.get("latency_prediction")
    if isinstance(prediction, dict) and isinstance(prediction.get("predicted_ms"), int | float):
        row["predicted_ms"] = float(prediction["predicted_ms"])
        row["target_ms"] = prediction.get("target_ms")
        row["predicted_on"] = json.dumps({k: prediction.get(k) for k in PREDICTION_KEY})
    quality = qualities.get(name) or {}
    paired = quality.get("paired") or {}
    fid = quality.get("fid") or {}
    row.update(l1=paired.get("l1"), psnr=paired.get("psnr"), fid=fid.get("fid"), kid=fid.get("kid"))
    row["fid_note"] = fid.get("reason") or ("" if fid.get("fid") is not None else "not measured")
    if quality.get("untrained"):
        row["quality_note"] = "untrained reference: latency and cost only"
    return row


def _unique_names(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A store shared by many runs holds several models named "compressed": tell them apart by
    their run folder, then by their file hash."""
    for key in (lambda r: Path(r["bundle"]).parent.name, lambda r: r.get("sha_tflite") or r.get("sha_onnx") or ""):
        names = [r["name"] for r in rows]
        for row in rows:
            if names.count(row["name"]) > 1:
                row["name"] = f"{row['name']} ({str(key(row))[:12]})"
    return rows


def _runtime_label(runtime: str, precision: str) -> str:
    """A runtime as tables and plots show it: "tflite", or "tflite int8" for a lower precision."""
    return runtime if precision == "fp32" else f"{runtime} {precision}"


def _flag_kind(flags: list[str], words: tuple[str, ...]) -> str:
    return ", ".join(f for f in flags if any(w in f for w in words))


def build_report(
    store_path: Path | None,
    bundles: list[Path] = (),
    quality: dict[str, dict[str, Any]] | None = None,
    search_log: Path | None = None,
    target_macs: float | None = None,
    title: str = "CoroNet report",
) -> ReportData:
    """Tables from the store and the bundles. `bundles` default to every bundle the store's
    results name that still exists; `quality` maps a model name to its quality record."""
    results, failed = [], []
    if store_path is not None and Path(store_path).is_file():
        with ResultStore(store_path) as store:
            results = store.results()
            failed = store.jobs("failed")
    if not bundles:
        bundles = sorted({Path(r.bundle) for r in results if (Path(r.bundle) / "manifest.json").is_file()})
    rows = _unique_names([_model_row(Path(b), quality or {}) for b in bundles])
    models = pd.DataFrame(rows).set_index("name") if rows else pd.DataFrame(columns=["name"]).set_index("name")
    for column in ("l1", "psnr", "fid", "kid"):  # None (not measured) -> NaN, so tables show a dash
        if column in models:
            models[column] = pd.to_numeric(models[column], errors="coerce")

    by_sha = {}
    for name, row in models.iterrows():
        for column in row.index:
            if column.startswith("sha_") and isinstance(row[column], str):
                by_sha[row[column]] = name
    latency_rows, states = [], {}
    outputs: dict[str, dict[str, tuple[str, bytes, float]]] = {}
    profiles: dict[str, dict[str, tuple[str, list[OpTime], float]]] = {}
    for r in results:
        name = by_sha.get(r.model_sha256)
        if name is None:
            continue  # a model file no longer exported: kept in the store, not in this report
        ops = r.device_state.get("op_profile")
        if isinstance(ops, list) and ops:
            label = f"{r.device} {_runtime_label(r.runtime, r.precision)}/{r.delegate}"
            seen = profiles.get(name, {}).get(label)
            if seen is None or seen[0] <= r.created:
                try:  # an agent's record is checked for numbers, not this list's insides
                    ops = [OpTime.from_dict(op) for op in ops if isinstance(op, dict)]
                except (TypeError, ValueError):
                    ops = []
                ops = [op for op in ops if math.isfinite(op.time_ms) and op.time_ms >= 0]
                if ops:
                    profiles.setdefault(name, {})[label] = (r.created, ops, r.stats.median_ms)
        if "op-profiled" in r.flags:
            continue  # timed with the profiler running: its ops page shows it, no latency table does
        image = (r.output_check or {}).get("image_png")
        if isinstance(image, str):
            label = f"{r.device} {_runtime_label(r.runtime, r.precision)}/{r.delegate}"
            seen = outputs.setdefault(name, {}).get(label)
            if seen is None or seen[0] <= r.created:
                outputs[name][label] = (r.created, base64.b64decode(image), float(r.output_check["psnr_db"]))
        latency_rows.append({
            "model": name, "device": r.device, "runtime": _runtime_label(r.runtime, r.precision),
            "delegate": r.delegate, "threads": r.threads, "median_ms": r.stats.median_ms, "p90_ms": r.stats.p90_ms,
            "min_ms": r.stats.min_ms, "n": r.stats.n, "init_ms": r.init_ms,
            "thermal": _flag_kind(r.flags, ("therm", "hot", "throttl")),
            "fallback": _flag_kind(r.flags, ("fallback",)), "flags": ", ".join(r.flags), "created": r.created,
        })  # fmt: skip
        states[r.device] = {"state": r.device_state, "tools": r.tool_versions, "updated": r.created}
    latency = pd.DataFrame(latency_rows, columns=LATENCY_COLUMNS)
    failures = pd.DataFrame(
        [{"job": j["id"], "created": j["created"], "device": j["spec"].get("device", "?"),
          "runtime": _runtime_label(j["spec"].get("runtime", "?"), j["spec"].get("precision", "fp32")),
          "model": Path(str(j["spec"].get("bundle", "?"))).name,
          "reason": j["reason"] or ""} for j in failed],
        columns=FAILURE_COLUMNS,
    )  # fmt: skip
    log = _search_log(search_log) if search_log is not None else None
    samples = {row["name"]: _samples(Path(row["bundle"])) for row in rows}
    device_outputs = {name: {label: (png, psnr) for label, (_, png, psnr) in sorted(found.items())}
                      for name, found in outputs.items()}  # fmt: skip
    op_profiles = {name: {label: (ops, ms) for label, (_, ops, ms) in sorted(found.items())}
                   for name, found in profiles.items()}  # fmt: skip
    layers = {row["name"]: _layers(Path(row["bundle"])) for row in rows}
    return ReportData(title, models, latency, failures, log, target_macs, states,
                      {name: s for name, s in samples.items() if s}, device_outputs, op_profiles, layers)  # fmt: skip


def _layers(bundle_dir: Path) -> list[dict[str, Any]]:
    layers = json.loads((bundle_dir / "manifest.json").read_text()).get("layers") or []
    keys = {"name", "group", "in", "out", "kernel", "stride"}
    return [layer for layer in layers if isinstance(layer, dict) and keys <= set(layer)]


def op_tables(data: ReportData, model: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The model's per-op profiles side by side: ms per layer of the plan (rows: the layers in
    forward order; columns: device runtime/delegate; each layer its conv plus the ops on its
    output, op_profile.per_layer), ms per op type, and the profiles whose convs could not be laid
    against the layers (shown by type only). Both tables end with the sum of the profiled ops and
    the run's measured median."""
    layers = data.layers.get(model) or []
    first = "input (before the first conv)"
    order = [first] + [f"{layer['name']} · {layer['group']} · {layer_shape(layer)}" for layer in layers]
    per_layer_columns, type_columns, unmatched = {}, {}, []
    medians = {}
    for label, (ops, median_ms) in data.op_profiles.get(model, {}).items():
        medians[label] = median_ms
        type_columns[label] = pd.Series(by_type(ops))
        rows = per_layer(layers, ops)
        if rows is None:
            unmatched.append(label)
            continue
        index = [f"{r.layer} · {r.group} · {r.shape}" if r.group else first for r in rows]
        per_layer_columns[label] = pd.Series([r.total_ms for r in rows], index=index).reindex(order)
    totals = {"sum of ops": {k: float(v.sum()) for k, v in type_columns.items()}, "measured median": medians}

    def with_totals(columns: dict[str, pd.Series]) -> pd.DataFrame:
        if not columns:
            return pd.DataFrame()
        frame = pd.DataFrame(columns).dropna(how="all")
        tail = pd.DataFrame({name: {k: v for k, v in values.items() if k in columns}
                             for name, values in totals.items()}).T  # fmt: skip
        return pd.concat([frame, tail[frame.columns]])

    by_type_frame = with_totals(type_columns)
    if not by_type_frame.empty:  # the types costing most first (over every profile)
        body = by_type_frame.iloc[:-2]
        order = body.fillna(0).sum(axis=1).sort_values(ascending=False).index
        by_type_frame = pd.concat([body.loc[order], by_type_frame.iloc[-2:]])
    return with_totals(per_layer_columns), by_type_frame, unmatched


def _samples(bundle_dir: Path) -> dict[str, list[Path]]:
    """The sample PNGs the export wrote (samples/ in the bundle), those that exist, by column."""
    from coronet.bundle import inside
    from coronet.errors import IncompleteBundleError

    record = json.loads((bundle_dir / "manifest.json").read_text()).get("samples") or {}
    columns = {}
    for name, paths in (record.get("columns") or {}).items():
        if not isinstance(paths, list):
            continue
        try:  # names inside the bundle only: a hostile manifest copies nothing else into the site
            files = [inside(bundle_dir, p) for p in paths]
        except IncompleteBundleError:
            continue
        if files and all(f.is_file() for f in files):
            columns[str(name)] = files
    return columns


def _search_log(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return None
    rows = [{"step": r["step"], "macs_ratio": r["macs_ratio"], **{f"width:{g}": w for g, w in r["widths"].items()},
             **{f"loss:{k}": v for k, v in r.get("losses", {}).items()}} for r in records]  # fmt: skip
    return pd.DataFrame(rows)


def latency_pivot(data: ReportData, statistic: str = "median_ms") -> pd.DataFrame:
    """Model × (device, runtime/delegate): the newest result of each, for the summary tables."""
    if data.latency.empty:
        return pd.DataFrame()
    latest = data.latency.sort_values("created").groupby(["model", "device", "runtime", "delegate"]).last()
    table = latest[statistic].unstack(["device", "runtime", "delegate"])
    table.columns = [f"{d} {r}/{g}" for d, r, g in table.columns]
    return table


def summary_table(data: ReportData) -> pd.DataFrame:
    """The dense vs compressed table: cost, quality and host/phone median latency per model."""
    columns = {"macs_g": "GMACs", "params_m": "M params", "l1": "L1", "psnr": "PSNR dB", "fid": "FID"}
    table = data.models[[c for c in columns if c in data.models]].rename(columns=columns)
    table = table.dropna(axis=1, how="all")
    if "dense" in data.models.index and "macs_g" in data.models:
        table.insert(1, "MACs vs dense", data.models["macs_g"] / data.models.loc["dense", "macs_g"])
    latency = latency_pivot(data)
    if not latency.empty:
        latency.columns = [f"{c} ms" for c in latency.columns]
        table = table.join(latency)
    return table


def latency_predictions(data: ReportData) -> pd.DataFrame:
    """Each model whose export recorded a predicted latency (a latency-targeted search): the
    prediction beside the newest median measured where the latency model was calibrated (same
    device, runtime, delegate, threads and precision), the error, and whether the measurement
    meets the search's target."""
    if "predicted_ms" not in data.models:
        return pd.DataFrame()
    rows = []
    for name, model in data.models.iterrows():
        if not isinstance(model.get("predicted_on"), str):
            continue
        key = json.loads(model["predicted_on"])
        label = _runtime_label(key["runtime"], key["precision"])
        where = f"{key['device']} {label}/{key['delegate']} x{key['threads']}"
        runs = data.latency[(data.latency["model"] == name) & (data.latency["device"] == key["device"])
                            & (data.latency["runtime"] == label) & (data.latency["delegate"] == key["delegate"])
                            & (data.latency["threads"] == key["threads"])]  # fmt: skip
        measured = float(runs.sort_values("created")["median_ms"].iloc[-1]) if not runs.empty else float("nan")
        target = model.get("target_ms")
        target = float(target) if isinstance(target, int | float) and target == target else float("nan")
        if measured != measured:
            verdict = "not measured there yet"
        elif target != target:
            verdict = ""
        else:
            verdict = "meets its target" if measured <= target else f"misses its target by {measured / target - 1:.0%}"
        rows.append({"model": name, "predicted on": where, "predicted ms": model["predicted_ms"],
                     "measured ms": measured, "error %": (measured / model["predicted_ms"] - 1) * 100,
                     "target ms": target, "verdict": verdict})  # fmt: skip
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def device_comparison(data: ReportData, reference: str = "dense") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each model × runtime (and precision) × delegate across devices: the newest median in ms,
    and the speedup over the `reference` model's file of the same runtime, delegate and device
    on that device (reference ms / model ms; empty without a reference model). A lower precision
    is compared with the reference's file of its precision, else its fp32 one (what one would
    otherwise ship)."""
    if data.latency.empty:
        return pd.DataFrame(), pd.DataFrame()
    latest = data.latency.sort_values("created").groupby(["model", "runtime", "delegate", "device"]).last()
    medians = latest["median_ms"].unstack("device")
    medians.columns.name = None
    if reference not in medians.index.get_level_values("model"):
        return medians, pd.DataFrame()
    base = medians.xs(reference, level="model")

    def over_reference(row: pd.Series) -> pd.Series:
        _, runtime, delegate = row.name
        for key in ((runtime, delegate), (runtime.split()[0], delegate)):
            if key in base.index:
                return base.loc[key] / row
        return row * float("nan")

    return medians, medians.drop(index=reference, level="model").apply(over_reference, axis=1)
